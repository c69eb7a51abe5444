"""Where byol_tf's train step spends its CPU time, by TensorFlow op type (TF backend).

    python bench/profile_step.py --encoder=tiny_resnet_cifar --steps=5
    python bench/profile_step.py --encoder=resnet18_cifar --precision=mixed_bfloat16 --steps=2

The step of `bench_train_step.py` (the same model, optimizer and batch), warmed up, then
`--steps` steps traced with TensorFlow's profiler. Every op the executor ran is summed by type
over all threads, and the types are grouped: matrix work (convolutions, matmuls and einsums, their
gradients), batch norm, layout and copies (transposes, oneDNN reorders, casts, concatenation,
slicing), and the rest (elementwise chains, reductions, random draws, the optimizer's per-variable
ops). Prints a table of the op types that take the most time and one JSON line (the shares, the
step's wall time, the host) — to stdout and, with --out, to a file.
"""

import collections
import glob
import json
import re
import tempfile
import time

from absl import app, flags

from bench_train_step import build_step, threads

# bench_train_step's flags (--encoder, --batch_size, --image_size, --precision, --augment,
# --warmup, --out; --steps: the traced steps), and:
flags.DEFINE_integer("top", 25, "Op types listed.")
FLAGS = flags.FLAGS

GROUPS = (  # (group, op-type pattern), the first that matches
    ("matrix", r"Conv|MatMul|Einsum|_FusedConv|Matmul"),
    ("batch norm", r"BatchNorm"),
    ("layout and copies", r"Transpose|Reorder|ToTf|Cast|Concat|Slice|Pack|Unpack|Split|Tile|"
                          r"Reshape|Identity|Gather|Pad"),
)
OP_EVENT = re.compile(r"^([^:#]+):(_?[A-Z][A-Za-z0-9_]*)(?:#.*)?$")  # "name:Type#…#"


def group_of(op_type):
    for group, pattern in GROUPS:
        if re.search(pattern, op_type):
            return group
    return "elementwise and other"


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
    total = sum(seconds for seconds, _ in times.values())
    groups = collections.Counter()
    for op_type, (seconds, _) in times.items():
        groups[group_of(op_type)] += seconds
    print(f"{'op type':<40} {'group':<22} {'ms/step':>9} {'share':>6} {'calls/step':>10}")
    for op_type, (seconds, count) in sorted(times.items(), key=lambda kv: -kv[1][0])[:FLAGS.top]:
        print(f"{op_type:<40} {group_of(op_type):<22} {1e3 * seconds / FLAGS.steps:9.2f} "
              f"{seconds / total:6.1%} {count / FLAGS.steps:10.1f}")
    result = dict(
        encoder=FLAGS.encoder, batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        precision=FLAGS.precision, augment=FLAGS.augment, steps=FLAGS.steps,
        step_wall_ms=round(1e3 * wall / FLAGS.steps, 1),
        op_ms_per_step=round(1e3 * total / FLAGS.steps, 1),
        group_shares={g: round(s / total, 3) for g, s in groups.most_common()},
        top_ops={k: round(1e3 * v[0] / FLAGS.steps, 2)
                 for k, v in sorted(times.items(), key=lambda kv: -kv[1][0])[:FLAGS.top]},
        threads=threads(backend), tensorflow=tf.__version__,
        **host(), date=time.strftime("%Y-%m-%d"))
    line = json.dumps(result)
    print(line)
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
