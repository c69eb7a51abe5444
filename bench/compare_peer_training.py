"""A whole short run, byol_tf's `train.py` beside byol-pytorch, on the full CIFAR-10.

    .venv/bin/python bench/compare_peer_training.py --epochs=2 --seeds=0 \
        --out=bench/results/peer_training_cpu_2core.jsonl

For each seed, one after the other: `train.py` (the sample preset's recipe on the full
train set: tiny ResNet, batch 128, `--epochs`, its online probe, checkpoints, the kNN of the
pretrained and of the random-init encoder, saving, SavedModel export), then
`bench/peer_train_cifar10.py` for the same number of steps (its training loop, then
features for the kNN). Wall seconds are whole commands, process start to exit, plus for
the peer the kNN on its features that this driver computes (`knn_seconds`; ours runs inside
train.py; `process_seconds` is the peer's process alone); loop seconds are the training
loops alone. Both encoders are scored by one numpy kNN
(`byol_tf.evaluation.knn_predict`, k = 200, temperature 0.1, all 50,000 train and
10,000 test images). Needs CIFAR-10 prepared in `--data` (scripts/prepare_cifar10.py).
`--our_epochs` gives train.py another number of epochs than the peer's `--epochs` (for a
comparison at equal wall time rather than equal steps).
"""

import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

from byol_tf.records import host
from peer_runs import ROOT, last_json, report, run

flags.DEFINE_string("data", os.environ.get("BYOL_DATA_DIR", "~/.cache/byol_data"),
                    "Folder of scripts/prepare_cifar10.py (cifar10.npz and tfds/).")
flags.DEFINE_integer("epochs", 2, "Epochs of 390 steps (batch 128).")
flags.DEFINE_integer("our_epochs", None, "byol_tf's epochs, if not --epochs: an equal-wall "
                     "comparison gives ours the epochs that fit in the peer's time.")
flags.DEFINE_list("seeds", ["0"], "Seeds; one run of each library per seed.")
flags.DEFINE_string("peer_python", str(ROOT / ".venv-peer/bin/python"),
                    "Python of the environment with byol-pytorch.")
flags.DEFINE_list("train_flags", [], "Extra train.py flags (a recipe to compare).")
flags.DEFINE_list("peer_flags", [], "Extra peer flags, e.g. --lr=1e-3.")
flags.DEFINE_string("label", "", "What this comparison varies (kept in the summary).")
flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
FLAGS = flags.FLAGS
BATCH = 128


def main(_):
    import numpy as np

    from byol_tf.evaluation import knn_predict

    data = pathlib.Path(FLAGS.data).expanduser()
    steps = FLAGS.epochs * (50_000 // BATCH)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in FLAGS.seeds:
            run_dir = pathlib.Path(tmp) / f"ours-{seed}"
            _, wall = run([sys.executable, "train.py", "--dataset=cifar10",
                             f"--data_dir={data / 'tfds'}", "--preset=sample",
                             f"--batch_size={BATCH}",
                             f"--epochs={FLAGS.our_epochs or FLAGS.epochs}",
                             f"--seed={seed}", f"--run_dir={run_dir}", *FLAGS.train_flags])
            metrics = json.loads((run_dir / "metrics.json").read_text())
            knn = metrics["knn"]
            lines.append(dict(library="byol_tf", seed=int(seed), steps=metrics["final_step"],
                              loop_seconds=round(metrics["train_seconds"], 1),
                              run_seconds=round(wall, 1), knn_top1=knn["pretrained"],
                              knn_random_init=knn.get("random_init"),
                              knn_test_examples=knn["test_examples"],
                              last_loss=metrics["history"]["loss"][-1],
                              phase_seconds=metrics["phase_seconds"],
                              config=json.loads((run_dir / "config.json").read_text()
                                                .replace(str(tmp), "TMPDIR")
                                                .replace(str(pathlib.Path.home()), "~"))))
            print(json.dumps(lines[-1]), flush=True)

            features = pathlib.Path(tmp) / f"peer-{seed}.npz"
            out, wall = run([FLAGS.peer_python, "bench/peer_train_cifar10.py",
                               f"--npz={data / 'cifar10.npz'}", f"--steps={steps}",
                               f"--seed={seed}", f"--features={features}", *FLAGS.peer_flags])
            peer = last_json(out)
            knn_start = time.perf_counter()  # the peer's kNN counts in its command, as ours does
            f = np.load(features)
            predicted = knn_predict(f["train"], f["y_train"], f["test"], 10, k=200,
                                    temperature=0.1)
            knn_seconds = time.perf_counter() - knn_start
            peer.update(seed=int(seed), run_seconds=round(wall + knn_seconds, 1),
                        process_seconds=round(wall, 1), knn_seconds=round(knn_seconds, 1),
                        knn_top1=float(np.mean(predicted == f["y_test"])),
                        knn_test_examples=len(f["y_test"]))
            lines.append(peer)
            print(json.dumps(peer), flush=True)
    ours = [x for x in lines if x["library"] == "byol_tf"]
    peers = [x for x in lines if x["library"] == "byol-pytorch"]
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    summary = dict(
        summary=True, label=FLAGS.label, epochs=FLAGS.epochs, steps=steps, batch_size=BATCH,
        our_epochs=FLAGS.our_epochs or FLAGS.epochs,
        train_flags=FLAGS.train_flags, peer_flags=FLAGS.peer_flags,
        byol_tf_run_seconds=med(ours, "run_seconds"), peer_run_seconds=med(peers, "run_seconds"),
        run_ratio=round(med(ours, "run_seconds") / med(peers, "run_seconds"), 3),
        loop_ratio=round(med(ours, "loop_seconds") / med(peers, "loop_seconds"), 3),
        byol_tf_knn=[r["knn_top1"] for r in ours], peer_knn=[r["knn_top1"] for r in peers],
        torch=peers[0]["torch"], **host(), date=time.strftime("%Y-%m-%d %H:%M"))
    report(lines, summary, FLAGS.out)


if __name__ == "__main__":
    app.run(main)
