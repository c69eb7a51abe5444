"""byol_tf's train step (and its augmentation alone) on this machine's CPU or GPU.

    python bench/bench_train_step.py --encoder=resnet18_cifar --batch_size=128 --steps=10
    KERAS_BACKEND=jax python bench/bench_train_step.py --encoder=resnet50 --image_size=224 \
        --batch_size=256 --precision=mixed_bfloat16 --steps=20 --aug_steps=0   # on a GPU

Train step: LARS, the full BYOL update (online forward + backward on both views, target
forward, EMA), with the paper's two views drawn per sample inside the step (`--noaugment`:
the views given, as a compute-only step). On TensorFlow the Keras train function; on JAX
the step train.py's JAX trainer jits (state donated, data already on the device). Images/s
counts input images (each makes two views); the first `--warmup` steps (tracing,
compilation) are not timed. Augmentation: `byol_tf.Augmenter` alone on the same batch
(TensorFlow only). Writes a JSON line to stdout and, with --out, to a file: rates, peak
memory (host RSS; the accelerator's peak where there is one), host, device and versions.
"""

import json
import time

from absl import app, flags

from load import round_fields, timed_rounds
from memory import memory_mb

flags.DEFINE_string("encoder", "resnet18_cifar", "Encoder preset.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
flags.DEFINE_integer("steps", 10, "Timed train steps.")
flags.DEFINE_integer("warmup", 2, "Untimed train steps first.")
flags.DEFINE_integer("aug_steps", 20, "Timed augmentation batches (0: skip).")
flags.DEFINE_integer("repeats", 3, "Timed repeats (this VM's speed varies: median reported).")
flags.DEFINE_bool("augment", True, "Draw the two views inside the step (else: given).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (TensorFlow).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy.")
flags.DEFINE_string("out", None, "Append the JSON result to this file.")
flags.DEFINE_bool("onednn", True, "TensorFlow's oneDNN CPU kernels (byol_tf_runtime.use_onednn(), "
                  "as the commands); --noonednn: Eigen's, where TensorFlow's default allows.")
FLAGS = flags.FLAGS


def main(_):
    backend, model, run, images = build_step(  # (first: it sets oneDNN before TF loads)
        FLAGS.encoder, FLAGS.batch_size, FLAGS.image_size, FLAGS.precision, FLAGS.augment,
        FLAGS.jit_compile, FLAGS.onednn)
    import byol_tf
    import keras
    import numpy as np
    from byol_tf.records import host

    if FLAGS.aug_steps and backend != "tensorflow":
        raise app.UsageError("the augmentation alone is timed on TensorFlow: use --aug_steps=0")
    size, batch = FLAGS.image_size, FLAGS.batch_size
    run(FLAGS.warmup)  # (a round disturbed by other processes is repeated: bench/load.py)
    kept, rounds = timed_rounds(lambda: run(FLAGS.steps), FLAGS.repeats)

    if FLAGS.aug_steps:
        import tensorflow as tf

        aug_fn = tf.function(byol_tf.Augmenter(size, seed=0), jit_compile=FLAGS.jit_compile)

    def run_augment():
        start = time.perf_counter()
        for _ in range(FLAGS.aug_steps):
            v1, _ = aug_fn(images)
        float(tf.reduce_sum(v1))
        return FLAGS.aug_steps * batch / (time.perf_counter() - start)

    aug_rates = []
    if FLAGS.aug_steps:
        aug_fn(images)
        aug_rates = sorted(run_augment() for _ in range(FLAGS.repeats))

    result = dict(
        encoder=FLAGS.encoder, image_size=size, batch_size=batch,
        augment=FLAGS.augment, jit_compile=FLAGS.jit_compile, precision=FLAGS.precision,
        **round_fields(kept, rounds, FLAGS.steps * batch),
        steps_per_run=FLAGS.steps,
        encoder_parameters=sum(int(np.prod(w.shape)) for w in model.online_encoder.trainable_weights),
        **memory_mb(), **accelerator(backend),
        threads=threads(backend),
        augment_two_views_images_per_s=round(float(np.median(aug_rates)), 1) if aug_rates else None,
        augment_runs=[round(r, 1) for r in aug_rates],
        **host(),
        **{backend: _version(backend)}, keras=keras.__version__, keras_backend=backend,
        date=time.strftime("%Y-%m-%d"),
    )
    line = json.dumps(result)
    print(line)
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


def build_step(encoder, batch, size, precision, augment, jit_compile, onednn=True):
    """(backend, model, run, images): byol_tf's BYOL with LARS on a random uint8 batch
    [batch, size, size, 3]; `run(n)` runs n training steps and waits for the last one (the
    Keras train function on TensorFlow; on JAX the step train.py's JAX trainer jits, state
    donated).
    `augment`: the two views drawn inside the step (else given, a compute-only step)."""
    import os

    import byol_tf_runtime

    if onednn:
        byol_tf_runtime.use_onednn()  # before TensorFlow loads, as the commands do
    else:
        os.environ.setdefault(byol_tf_runtime.ONEDNN, "0")
    import byol_tf
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    images = keras.ops.convert_to_tensor(pixels)
    # The step's input: uint8 images, or (compute only) two given float views in [0, 1].
    views = keras.ops.convert_to_tensor((pixels / 255.0).astype(np.float32))
    data = images if augment else (views, views)

    keras.mixed_precision.set_global_policy(precision)
    model = byol_tf.BYOL(byol_tf.encoders.get(encoder), total_steps=1000, augment=augment,
                         seed=0)
    model.compile(optimizer=byol_tf.LARS(0.2), jit_compile=jit_compile)
    if backend == "jax":  # the step train.py's JAX trainer jits
        import jax

        from byol_tf.steps.jax_step import initial_state

        state = [initial_state(model)]
        jitted = jax.jit(model.train_step, donate_argnums=0)

        def step():
            logs, state[0] = jitted(state[0], data)
            return logs
    else:
        model.make_train_function()

        def step():
            return model.train_function(iter([data]))

    def run(n):
        for _ in range(n):
            logs = step()
        float(logs["loss"])  # (waits for the device)

    return backend, model, run, images


def threads(backend):
    """The backend's CPU thread pools (and, for TensorFlow, whether oneDNN runs)."""
    if backend == "tensorflow":
        import byol_tf
        import tensorflow as tf

        return dict(intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                    inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
                    onednn=byol_tf.compat.onednn_enabled())
    return {}


def accelerator(backend):
    """The device the step ran on and its peak memory (MiB), where it is not the CPU."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return {}
        stats = device.memory_stats() or {}
        return dict(device=device.device_kind,
                    device_peak_mb=round(stats.get("peak_bytes_in_use", 0) / 2**20, 1))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            return {}
        name = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU")
        peak = tf.config.experimental.get_memory_info(gpus[0].name)["peak"]
        return dict(device=name, device_peak_mb=round(peak / 2**20, 1))
    return {}


def _version(backend):
    import importlib

    return importlib.import_module(backend).__version__


if __name__ == "__main__":
    app.run(main)
