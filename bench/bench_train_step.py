"""Train-step and augmentation throughput on this machine (TF backend; KERAS_BACKEND=jax
times the jitted JAX step instead, with --aug_steps=0).

    python bench/bench_train_step.py --encoder=resnet18_cifar --batch_size=128 --steps=10

Train step: ResNet-18 CIFAR stem, 32 px, batch 128, LARS, augmentation inside the step
(two views, per sample), the full BYOL update (online fwd+bwd on both views, target fwd,
EMA). Images/s counts input images (each makes two views). The first `--warmup` steps
(tracing, compilation) are not timed. Augmentation: `byol_tf.Augmenter` alone on the same batch.
Writes a JSON line to stdout and, with --out, to a file.
"""

import json
import time

from absl import app, flags

from memory import memory_mb

flags.DEFINE_string("encoder", "resnet18_cifar", "Encoder preset.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
flags.DEFINE_integer("steps", 10, "Timed train steps.")
flags.DEFINE_integer("warmup", 2, "Untimed train steps first.")
flags.DEFINE_integer("aug_steps", 20, "Timed augmentation batches (0: skip).")
flags.DEFINE_integer("repeats", 3, "Timed repeats (this VM's speed varies: median reported).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy.")
flags.DEFINE_string("out", None, "Append the JSON result to this file.")
FLAGS = flags.FLAGS


def main(_):
    import byol_tf  # first: it picks TensorFlow's CPU kernels (byol_tf/runtime.py)
    import keras
    import numpy as np
    from byol_tf.records import host

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    size, batch = FLAGS.image_size, FLAGS.batch_size
    images = keras.ops.convert_to_tensor(rng.integers(0, 256, (batch, size, size, 3),
                                                      dtype=np.uint8))

    keras.mixed_precision.set_global_policy(FLAGS.precision)
    model = byol_tf.BYOL(byol_tf.encoders.get(FLAGS.encoder), total_steps=1000, seed=0)
    model.compile(optimizer=byol_tf.LARS(0.2), jit_compile=FLAGS.jit_compile)
    if backend == "jax":  # the step train.py's JAX trainer jits
        import jax

        from byol_tf.steps.jax_step import initial_state

        state = [initial_state(model)]
        jitted, data = jax.jit(model.train_step, donate_argnums=0), images

        def step():
            logs, state[0] = jitted(state[0], data)
            return logs
    else:
        model.make_train_function()
        def step():
            return model.train_function(iter([images]))

    def run(n):
        start = time.perf_counter()
        for _ in range(n):
            logs = step()
        float(logs["loss"])
        return time.perf_counter() - start

    run(FLAGS.warmup)
    train_rates = sorted(FLAGS.steps * batch / run(FLAGS.steps) for _ in range(FLAGS.repeats))

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
        jit_compile=FLAGS.jit_compile, precision=FLAGS.precision,
        train_images_per_s=round(float(np.median(train_rates)), 2),
        train_images_per_s_runs=[round(r, 2) for r in train_rates],
        steps_per_run=FLAGS.steps,
        encoder_parameters=sum(int(np.prod(w.shape)) for w in model.online_encoder.trainable_weights),
        **memory_mb(),
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


def threads(backend):
    """The backend's CPU thread pools (and, for TensorFlow, whether oneDNN runs)."""
    if backend == "tensorflow":
        import byol_tf
        import tensorflow as tf

        return dict(intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                    inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
                    onednn=byol_tf.compat.onednn_enabled())
    return {}


def _version(backend):
    import importlib

    return importlib.import_module(backend).__version__


if __name__ == "__main__":
    app.run(main)
