"""CPU and wall seconds of `byol_tf.data.pretrain_dataset` for CIFAR-10 alone: the PNG files
decoded every epoch against the split decoded once and kept in memory (the default); and of
decoding CIFAR-10's train and test splits (`decoded_split`) against reading them back from
the on-disk cache of decoded arrays (`$BYOL_TF_CACHE`; here a temporary folder).

    .venv/bin/python bench/bench_input_pipeline.py --data_dir=~/.cache/byol_data/tfds

On a 2-core host the train step uses both cores, so the pipeline's CPU seconds are taken
from it. Prints one JSON line (seconds for `--batches` batches of 128 after the first, and
the one-off decode of the in-memory path).
"""

import json
import os
import resource
import shutil
import tempfile
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
    os.environ[data.CACHE_ENV] = tempfile.mkdtemp(prefix="byol_tf_cache_")
    for name in ("decode", "cached"):  # the first pass decodes and writes, the second reads
        data._DECODED.clear()
        started, cpu = time.perf_counter(), cpu_seconds()
        for split in ("train", "test"):
            data.decoded_split("cifar10", split, FLAGS.data_dir)
        result[f"{name}_train_test_wall_seconds"] = round(time.perf_counter() - started, 2)
        result[f"{name}_train_test_cpu_seconds"] = round(cpu_seconds() - cpu, 2)
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
    shutil.rmtree(os.environ[data.CACHE_ENV])
    print(json.dumps({**result, **host(), "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    app.run(main)
