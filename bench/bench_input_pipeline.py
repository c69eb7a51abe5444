"""CPU and wall seconds of `byol_tf.data.pretrain_dataset` for CIFAR-10 alone: the PNG files
decoded every epoch against the split decoded once and kept in memory (the default).

    .venv/bin/python bench/bench_input_pipeline.py --data_dir=~/.cache/byol_data/tfds

On a 2-core host the train step uses both cores, so the pipeline's CPU seconds are taken
from it. Prints one JSON line (seconds for `--batches` batches of 128 after the first, and
the one-off decode of the in-memory path).
"""

import json
import resource
import time

from absl import app, flags

flags.DEFINE_string("data_dir", "~/.cache/byol_data/tfds", "TFDS data_dir with cifar10.")
flags.DEFINE_integer("batches", 390, "Batches timed (390 = one CIFAR-10 epoch at 128).")
FLAGS = flags.FLAGS


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(_):
    import byol_tf  # noqa: F401  (first: it picks TensorFlow's CPU kernels)
    from byol_tf import data
    from byol_tf.records import host

    result = dict(bench="input_pipeline", dataset="cifar10", batches=FLAGS.batches)
    for in_memory in (False, True):
        started, cpu = time.perf_counter(), cpu_seconds()
        ds, _ = data.pretrain_dataset("cifar10", 128, data_dir=FLAGS.data_dir, seed=0,
                                      repeat=True, in_memory=in_memory)
        batches = iter(ds)
        next(batches)
        name = "in_memory" if in_memory else "files"
        result[f"{name}_setup_seconds"] = round(time.perf_counter() - started, 2)
        started, cpu = time.perf_counter(), cpu_seconds()
        for _ in range(FLAGS.batches):
            next(batches)
        result[f"{name}_wall_seconds"] = round(time.perf_counter() - started, 2)
        result[f"{name}_cpu_seconds"] = round(cpu_seconds() - cpu, 2)
    print(json.dumps({**result, **host(), "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    app.run(main)
