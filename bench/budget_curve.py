"""What a time budget buys on a folder of photos: `byol-train --time_budget_minutes=M` on a
labelled folder for each budget and seed, one after the other, each a whole command (start to
exit, timed here), its kNN top-1 beside the same encoder at random init (measured by the run).

    python bench/budget_curve.py --dataset=../shared/data/imagenette-mini/train \
        --eval_dataset=../shared/data/imagenette-mini/val --budgets=5,15,30 --seeds=0 \
        --out=bench/results/budget_curve_imagenette_mini.jsonl
    python bench/budget_curve.py --out=bench/results/budget_curve_imagenette_mini.jsonl \
        --table_only    # the table and plot (docs/images/<--out's name>.png) from the results

A larger labelled folder from CIFAR-10 (`scripts/prepare_cifar10.py`'s `cifar10.npz`): the first
10,000 training images and 2,000 test images as JPEGs (quality 95, 32 × 32 px) in one sub-folder
per class:

    python bench/budget_curve.py --make_cifar10_folder=~/.cache/byol_data/cifar10-folder

Each result is a JSON line (budget, seed, wall seconds, kNN, the run's planned steps and its
measurement, the host's CPU and ISA flags). A (budget, seed) already in `--out` is not run
again; a run killed midway is finished by rerunning (its recorded plan is kept; its wall time
is then not one command's and is left out).
"""

import json
import pathlib
import subprocess
import sys
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_string("dataset", None, "The labelled training folder.")
flags.DEFINE_string("eval_dataset", None, "Its labelled test folder.")
flags.DEFINE_list("budgets", ["5", "15", "30"], "Budgets, minutes.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_enum("method", "byol", ["byol", "simclr", "moco", "multiview"], "The method the "
                  "runs train (byol-train --method; the folder recipe's own is simclr).")
flags.DEFINE_list("train_flags", [], "Extra byol-train flags (e.g. --init_from=NAME).")
flags.DEFINE_string("label", None, "What the runs start from or vary (kept in each result; the "
                    "table's first column); default: '<method>, random init'.")
flags.DEFINE_string("runs", str(ROOT / "runs" / "budget_curve"), "Where the run folders go.")
flags.DEFINE_string("out", None, "JSON-lines results file (appended).")
flags.DEFINE_string("plot", None, "The plot (default: docs/images/<--out's name>.png).")
flags.DEFINE_bool("table_only", False, "Only print the table and draw the plot.")
flags.DEFINE_string("make_cifar10_folder", None, "Write the CIFAR-10 folder here (train/, val/) "
                    "and exit.")
flags.DEFINE_string("cifar10_npz", "~/.cache/byol_data/cifar10.npz", "scripts/prepare_cifar10.py's "
                    "arrays.")
FLAGS = flags.FLAGS


def results(path):
    path = pathlib.Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


METHODS = {"byol": "BYOL", "simclr": "SimCLR", "moco": "MoCo v2", "multiview": "multi-view"}


def label():
    return FLAGS.label or f"{METHODS[FLAGS.method]}, random init"


def run_one(budget, seed):
    from byol_tf.records import host

    slug = "-".join([FLAGS.method] + [f.strip("-").replace("=", "_") for f in FLAGS.train_flags])
    data = pathlib.Path(FLAGS.dataset).expanduser().resolve().parent.name  # (…/<data>/train)
    run_dir = pathlib.Path(FLAGS.runs) / data / f"{slug}-{budget}min-seed{seed}"
    resumed = (run_dir / "config.json").exists()
    command = [sys.executable, str(ROOT / "train.py"), f"--dataset={FLAGS.dataset}",
               f"--eval_dataset={FLAGS.eval_dataset}", f"--time_budget_minutes={budget}",
               f"--seed={seed}", f"--run_dir={run_dir}", f"--method={FLAGS.method}",
               *FLAGS.train_flags]
    started = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.time() - started
    config = json.loads((run_dir / "config.json").read_text())["config"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return dict(label=label(), budget_minutes=float(budget), seed=int(seed),
                wall_seconds=None if resumed else round(wall, 1),
                knn_top1=metrics["knn"]["pretrained"],
                knn_top1_random_init=metrics["knn"].get("random_init"),
                knn_top1_parent=metrics["knn"].get("parent"), init_from=config.get("init_from"),
                method=config["method"], encoder=config["encoder"],
                image_size=config["image_size"], batch_size=config["batch_size"],
                steps=config["total_steps"], epochs=config["epochs"], budget=config["budget"],
                train_flags=FLAGS.train_flags, dataset=config["dataset"],
                train_images=config["num_examples"], host=host(), time=time.ctime())


def table(rows):
    lines = ["| start | budget | seed | wall time | steps (epochs) | kNN top-1 | random init | "
             "the zoo entry as it is |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["label"], r["budget_minutes"], r["seed"])):
        wall = (f"{int(r['wall_seconds'] // 60)}:{int(r['wall_seconds'] % 60):02d}"
                if r["wall_seconds"] else "(resumed)")
        lines.append(f"| {r['label']} | {r['budget_minutes']:g} min | {r['seed']} | {wall} | "
                     f"{r['steps']} ({r['epochs']}) | {r['knn_top1']:.4f} | "
                     f"{r['knn_top1_random_init']:.4f} | "
                     f"{'' if r.get('knn_top1_parent') is None else format(r['knn_top1_parent'], '.4f')} |")
    return "\n".join(lines)


def plot(rows, path):
    """kNN top-1 against the budget, one line per start (mean over seeds, bars: their range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    for label in sorted({r["label"] for r in rows}):
        budgets = sorted({r["budget_minutes"] for r in rows if r["label"] == label})
        scores = [[r["knn_top1"] for r in rows if r["label"] == label and r["budget_minutes"] == b]
                  for b in budgets]
        means = [sum(v) / len(v) for v in scores]
        ax.errorbar(budgets, means, yerr=[[m - min(v) for m, v in zip(means, scores)],
                                         [max(v) - m for m, v in zip(means, scores)]],
                    marker="o", capsize=3, label=label)
    random = [r["knn_top1_random_init"] for r in rows if r["knn_top1_random_init"]]
    if random:
        ax.axhline(sum(random) / len(random), color="grey", ls="--",
                   label="the same encoder at random init")
    ax.set_xscale("log")
    budgets = sorted({r["budget_minutes"] for r in rows})
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("--time_budget_minutes (2 CPU cores)")
    ax.set_ylabel("kNN top-1 (test folder)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def make_cifar10_folder(folder, npz, train=10_000, test=2_000):
    """The first `train` training and `test` test images of CIFAR-10 as JPEGs under
    folder/{train,val}/<class name>/."""
    import numpy as np
    import tensorflow as tf

    from byol_tf.data.sample import SAMPLE_CLASSES as names  # CIFAR-10's, in label order

    arrays = np.load(pathlib.Path(npz).expanduser())
    for split, (x, y, count) in dict(train=(arrays["x_train"], arrays["y_train"], train),
                                     val=(arrays["x_test"], arrays["y_test"], test)).items():
        for i in range(count):
            target = pathlib.Path(folder).expanduser() / split / names[int(y[i])]
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{i:05d}.jpg").write_bytes(tf.io.encode_jpeg(x[i], quality=95).numpy())


def main(_):
    if FLAGS.make_cifar10_folder:
        make_cifar10_folder(FLAGS.make_cifar10_folder, FLAGS.cifar10_npz)
        return
    done = {(r["label"], r["budget_minutes"], r["seed"]) for r in results(FLAGS.out)}
    if not FLAGS.table_only:
        for budget in FLAGS.budgets:
            for seed in FLAGS.seeds:
                if (label(), float(budget), int(seed)) in done:
                    continue
                row = run_one(budget, seed)
                with open(FLAGS.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    rows = results(FLAGS.out)
    print(table(rows))
    if rows:
        plot(rows, FLAGS.plot or ROOT / "docs" / "images" / f"{pathlib.Path(FLAGS.out).stem}.png")


if __name__ == "__main__":
    app.run(main)
