"""What running both views as one batch of 2B could save on this CPU (TensorFlow backend).

    .venv/bin/python bench/bench_view_batching.py --encoder=tiny_resnet_cifar --out=bench/results/view_batching_cpu_2core.jsonl

BYOL's step runs each network once per view (batch B, batch-norm statistics per view). One
batch of 2B (bigger kernels) with *shared* statistics is the cheapest the same work can be, so
its time bounds from below what per-view statistics on a 2B batch could reach. Timed, each a
`tf.function` with byol_tf's own networks, alternated A B A B:
  target: the two target forwards (encoder + projector, training-mode BN) — per view (what
          `BYOL.targets` runs) against one 2B batch;
  online: online forward + backward (encoder, projector, predictor; the regression loss
          against fixed targets) — view after view (what the step runs) against one 2B batch.
Prints one JSON line with the medians, their ratios, and the host's CPU.
"""

import json
import resource
import time

from absl import app, flags

flags.DEFINE_string("encoder", "tiny_resnet_cifar", "Encoder preset.")
flags.DEFINE_integer("batch_size", 128, "Images per view.")
flags.DEFINE_integer("steps", 8, "Calls per timed run.")
flags.DEFINE_integer("rounds", 4, "A B rounds (the median is reported).")
flags.DEFINE_string("out", None, "Append the JSON result to this file.")
FLAGS = flags.FLAGS


def main(_):
    import byol_tf  # first: it picks TensorFlow's CPU kernels (byol_tf/runtime.py)
    import numpy as np
    import tensorflow as tf
    from byol_tf.losses import regression_loss
    from byol_tf.records import host

    model = byol_tf.BYOL(byol_tf.encoders.get(FLAGS.encoder), total_steps=1000, seed=0)
    rng = np.random.default_rng(0)
    batch = FLAGS.batch_size
    view1, view2 = (tf.constant(rng.random((batch, 32, 32, 3), np.float32)) for _ in range(2))
    fixed = tf.constant(rng.standard_normal((2 * batch, model.projection_dim), np.float32))
    online_vars = (model.online_encoder.trainable_variables +
                   model.online_projector.trainable_variables +
                   model.online_predictor.trainable_variables)

    def target(views):
        h = model.target_encoder(model.converter(views), training=True)
        return model.target_projector(h, training=True)

    def online_grads(views, keys):
        with tf.GradientTape() as tape:
            _, _, q = model.online(views)
            loss = tf.reduce_mean(regression_loss(q, keys))
        return tape.gradient(loss, online_vars)

    @tf.function
    def target_per_view():
        return target(view1), target(view2)

    @tf.function
    def target_joint():
        return target(tf.concat([view1, view2], 0))

    @tf.function
    def online_per_view():
        grads = online_grads(view1, fixed[:batch])
        with tf.control_dependencies(grads):
            grads2 = online_grads(view2, fixed[batch:])
        return [a + b for a, b in zip(grads, grads2)]

    @tf.function
    def online_joint():
        return online_grads(tf.concat([view1, view2], 0), fixed)

    def seconds(fn):
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        return (time.perf_counter() - start) / FLAGS.steps

    pairs = dict(target=(target_per_view, target_joint), online=(online_per_view, online_joint))
    times = {f"{name}_{kind}": [] for name in pairs for kind in ("per_view", "joint")}
    for name, (per_view, joint) in pairs.items():
        per_view(), joint()  # trace
        for _ in range(FLAGS.rounds):
            times[f"{name}_per_view"].append(seconds(per_view))
            times[f"{name}_joint"].append(seconds(joint))
    medians = {k: float(np.median(v)) for k, v in times.items()}
    result = dict(
        encoder=FLAGS.encoder, batch_per_view=batch, steps=FLAGS.steps, rounds=FLAGS.rounds,
        **{f"{k}_ms": round(1000 * v, 1) for k, v in medians.items()},
        **{f"{k}_ms_runs": [round(1000 * t, 1) for t in v] for k, v in times.items()},
        target_joint_over_per_view=round(medians["target_joint"] / medians["target_per_view"], 3),
        online_joint_over_per_view=round(medians["online_joint"] / medians["online_per_view"], 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **host(), tensorflow=tf.__version__, date=time.strftime("%Y-%m-%d"))
    line = json.dumps(result)
    print(line)
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
