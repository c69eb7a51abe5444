"""Seconds to a recipe's first train step (tracing, graph optimisation, XLA-compiling the
colour jitter, the first run) and its later steps, as `train.py` builds the model; each
run a fresh process, alternating the settings compared.

    python bench/bench_first_step.py --preset=cifar10_cpu_short --rounds=2 \
        --out=bench/results/first_step_cpu_2core.jsonl

--optimizers: byol_tf (what `byol_tf.optimizers.get` returns) and keras (Keras' own class of
the same name, e.g. keras.optimizers.AdamW), to measure what byol_tf's optimizer saves;
--grappler=default,lean: TensorFlow's graph optimiser with some passes off (an attempt).
One CIFAR-sized batch of random uint8 images and labels, fed as `fit` does (an iterator).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("preset", "cifar10_cpu_short", "Recipe (byol_tf/presets.py).")
flags.DEFINE_list("optimizers", ["byol_tf", "keras"], "Optimizer classes to alternate.")
flags.DEFINE_list("grappler", ["default"], "Grappler settings to alternate: default, and lean "
                  "(its layout, constant-folding, loop, arithmetic, dependency and shape passes "
                  "off; remapping, which makes oneDNN's fused kernels, and pruning kept).")
flags.DEFINE_integer("rounds", 2, "Runs of each setting (fresh processes, alternated).")
flags.DEFINE_integer("steps", 20, "Timed steps after the first (median reported).")
flags.DEFINE_string("child", None, "(internal) 'optimizer,grappler' to run in this process.")
flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
FLAGS = flags.FLAGS


LEAN_GRAPPLER = dict(layout_optimizer=False, constant_folding=False, loop_optimization=False,
                     arithmetic_optimization=False, dependency_optimization=False,
                     shape_optimization=False)


def measure(optimizer_class, grappler):
    started = time.perf_counter()
    import byol_tf  # first: it picks TensorFlow's CPU kernels (byol_tf/runtime.py)
    import keras
    import numpy as np
    import tensorflow as tf
    from byol_tf import methods, presets
    from byol_tf.records import host

    imported = time.perf_counter()
    if grappler == "lean":
        tf.config.optimizer.set_experimental_options(LEAN_GRAPPLER)
    config = dict(presets.PRESETS[FLAGS.preset], image_size=32, seed=0)
    batch, total = config["batch_size"], 780
    if optimizer_class == "keras":  # Keras' class of the same name in place of byol_tf's
        for name in ("AdamW", "LARS"):
            if hasattr(keras.optimizers, name):
                setattr(byol_tf.optimizers, name, getattr(keras.optimizers, name))
    model = methods.build(config, byol_tf.encoders.get(config["encoder"]), 10, total)
    schedule = byol_tf.WarmupCosine(config["base_lr"], batch, total, 0)
    optimizer = byol_tf.optimizers.get(config["optimizer"], schedule, config["weight_decay"])
    model.compile(optimizer=optimizer)
    rng = np.random.default_rng(0)
    data = (tf.constant(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)),
            tf.constant(rng.integers(0, 10, (batch,)), tf.int64))
    model.optimizer.build(model.trainable_variables)  # as `fit` does before its first step
    model.make_train_function()
    built = time.perf_counter()
    float(model.train_function(iter([data]))["loss"])
    first = time.perf_counter() - built
    steps = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        float(model.train_function(iter([data]))["loss"])
        steps.append(time.perf_counter() - start)
    kind = type(optimizer)
    return dict(preset=FLAGS.preset, optimizer=f"{kind.__module__}.{kind.__name__}",
                grappler=grappler,
                import_s=round(imported - started, 2), build_s=round(built - imported, 2),
                first_step_s=round(first, 2), step_ms=round(1000 * float(np.median(steps)), 1),
                **host(), tensorflow=tf.__version__, keras=keras.__version__,
                date=time.strftime("%Y-%m-%d %H:%M"))


def main(_):
    if FLAGS.child:
        print(json.dumps(measure(*FLAGS.child.split(","))))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    settings = [(o, g) for o in FLAGS.optimizers for g in FLAGS.grappler]
    for _ in range(FLAGS.rounds):
        for name, grappler in settings:
            result = subprocess.run([sys.executable, __file__, f"--child={name},{grappler}",
                                     f"--preset={FLAGS.preset}", f"--steps={FLAGS.steps}"],
                                    env=env, capture_output=True, text=True, check=True)
            line = result.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            if FLAGS.out:
                with open(FLAGS.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
