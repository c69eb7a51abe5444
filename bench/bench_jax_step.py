"""BYOL train-step throughput on the JAX backend (the GPU machine's backend).

    KERAS_BACKEND=jax python bench/bench_jax_step.py --out=bench/results/<device>.jsonl
    KERAS_BACKEND=jax python bench/bench_jax_step.py --smoke   # tiny sizes, any machine

For each setting (ResNet-50 at 224 px, batch 256; CIFAR ResNet-18 at 32 px, batch 512) it
times `BYOL.train_step` jit-compiled by `jax.jit` with the state donated, data already on
the device, dtype policy `mixed_bfloat16`, two figures:
  compute: the two views given (no augmentation in the step) — what the peers' compute-only
           BYOL step measures;
  with_augmentation: uint8 images in, the paper's two views drawn per sample in the step.
Images/s counts input images (each makes two views). Run it in the same session as
a PyTorch peer benchmark (byol-pytorch) so that ratios compare like with like (bench/README.md).
"""

import json
import os
import platform
import time

from absl import app, flags

flags.DEFINE_bool("smoke", False, "Tiny encoder and batch: checks the script on a CPU.")
flags.DEFINE_integer("steps", 20, "Timed steps per setting.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
flags.DEFINE_enum("precision", "mixed_bfloat16", ["float32", "mixed_bfloat16"], "Keras dtype policy.")
flags.DEFINE_string("out", None, "Append the JSON result to this file.")
FLAGS = flags.FLAGS

SETTINGS = [("r50_224", "resnet50", 224, 256), ("r18_cifar32", "resnet18_cifar", 32, 512)]
SMOKE = [("tiny_cifar32", "tiny_resnet_cifar", 32, 16)]


def _time_step(model, data, steps, warmup):
    import jax

    from byol_tf.steps.jax_step import initial_state

    state = initial_state(model)
    step = jax.jit(model.train_step, donate_argnums=0)
    for _ in range(warmup):
        logs, state = step(state, data)
    jax.block_until_ready(logs["loss"])
    start = time.perf_counter()
    for _ in range(steps):
        logs, state = step(state, data)
    jax.block_until_ready(logs["loss"])
    return (time.perf_counter() - start) / steps, float(logs["loss"])


def main(_):
    import jax
    import keras
    import numpy as np

    import byol_tf

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    rng = np.random.default_rng(0)
    result = dict(date=time.strftime("%Y-%m-%d"), device=str(jax.devices()[0].device_kind),
                  platform=platform.platform(), jax=jax.__version__, keras=keras.__version__,
                  precision=FLAGS.precision, steps=FLAGS.steps)
    for name, encoder, size, batch in (SMOKE if FLAGS.smoke else SETTINGS):
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        for label, augment in (("compute", False), ("with_augmentation", True)):
            model = byol_tf.BYOL(encoder, total_steps=1000, augment=augment, seed=0)
            model.compile(optimizer=byol_tf.LARS(0.2))
            if augment:
                data = jax.device_put(images)
            else:  # pre-made views, float in [0, 1]
                views = jax.device_put((images / 255.0).astype(np.float32))
                data = (views, views)
            seconds, loss = _time_step(model, data, FLAGS.steps, FLAGS.warmup)
            result[f"{name}/{label}_img_s"] = round(batch / seconds, 1)
            result[f"{name}/{label}_loss"] = round(loss, 4)
            print(f"{name} {label}: {batch / seconds:.1f} images/s", flush=True)
    line = json.dumps(result)
    print("FINAL", line)
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
