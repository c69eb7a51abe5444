"""Where byol_tf's train step spends its CPU time, by TensorFlow op type (TF backend).

    python bench/profile_step.py --encoder=tiny_resnet_cifar --steps=5
    python bench/profile_step.py --encoder=resnet18_cifar --precision=mixed_bfloat16 --steps=2

The step of `bench_train_step.py` (the same model, optimizer and batch), warmed up, then
`--steps` steps traced with TensorFlow's profiler. Every op the executor ran is summed by type
over all threads, and the types are grouped: matrix work (convolutions, matmuls and einsums, their
gradients), batch norm, layout and copies (transposes, oneDNN reorders, casts, concatenation,
slicing), and the rest (elementwise chains, reductions, random draws, the optimizer's per-variable
ops). Prints a table of the op types that take the most time and one JSON line (the shares, the
step's wall time, the host) — to stdout and, with --out, to a file. `--peer_python` then traces
byol-pytorch's step of the same network with torch's profiler (its ops by self time, grouped
alike) and adds it to the line as `peer`:

    python bench/profile_step.py --encoder=tiny_resnet_cifar --steps=5 \
        --peer_python=.venv-peer/bin/python
"""

import collections
import glob
import json
import re
import tempfile
import time

from absl import app, flags

from bench_train_step import build_step, threads
from op_groups import summary
from peer_runs import last_json, run as run_command, step_flags

# bench_train_step's flags (--encoder, --batch_size, --image_size, --precision, --augment,
# --warmup, --out; --steps: the traced steps), and:
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.DEFINE_string("peer_python", None, "Then profile byol-pytorch's step too "
                    "(bench/peer_byol_pytorch.py --profile_steps, channels-last) with this "
                    "Python, e.g. .venv-peer/bin/python: the same network, batch, image size, "
                    "precision, warm-up and steps.")
FLAGS = flags.FLAGS

OP_EVENT = re.compile(r"^([^:#]+):(_?[A-Z][A-Za-z0-9_]*)(?:#.*)?$")  # "name:Type#…#"


def op_times(logdir):
    """{op type: (seconds summed over threads, count)} from the profile in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.defaultdict(lambda: [0.0, 0])
    for path in glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:"):
                continue
            for line in plane.lines:
                for event in line.events:
                    match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                    if match:
                        total = totals[match.group(2)]
                        total[0] += event.duration_ps * 1e-12
                        total[1] += 1
    return {k: tuple(v) for k, v in totals.items()}


def main(_):
    backend, _, run, _ = build_step(FLAGS.encoder, FLAGS.batch_size, FLAGS.image_size,
                                         FLAGS.precision, FLAGS.augment, jit_compile=False,
                                         onednn=FLAGS.onednn)
    if backend != "tensorflow":
        raise app.UsageError("the profile reads TensorFlow's op events: KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    from byol_tf.records import host

    run(FLAGS.warmup)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        run(FLAGS.steps)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        times = op_times(logdir)
    if not times:
        raise SystemExit("the profile holds no op events (TensorFlow's trace format changed?)")
    profile, table = summary(times, FLAGS.steps, wall, "tensorflow", FLAGS.top)
    print(table)
    result = dict(
        encoder=FLAGS.encoder, batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        precision=FLAGS.precision, augment=FLAGS.augment, steps=FLAGS.steps, **profile,
        threads=threads(backend), tensorflow=tf.__version__,
        **host(), date=time.strftime("%Y-%m-%d"))
    if FLAGS.peer_python:
        result["peer"] = peer_profile()
    line = json.dumps(result)
    print(line)
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


def peer_profile():
    """byol-pytorch's step traced (bench/peer_byol_pytorch.py --profile_steps): its op table
    printed, its profile and configuration returned."""
    command = [FLAGS.peer_python, "bench/peer_byol_pytorch.py",
               *step_flags(FLAGS, FLAGS.precision), f"--profile_steps={FLAGS.steps}"]
    stdout, _ = run_command(command)
    print("byol-pytorch:\n" + "\n".join(stdout.strip().splitlines()[:-1]))
    peer = last_json(stdout)
    return dict(peer["profile"], **{k: peer[k] for k in (
        "layout", "train_images_per_s", "threads", "torch", "byol_pytorch")})


if __name__ == "__main__":
    app.run(main)
