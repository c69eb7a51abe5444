"""The BYOL ablations and the other methods, one run each, as a table.

    python bench/ablations.py --dataset=sample --encoder=tiny_resnet_cifar --epochs=10 \
        --out=bench/results/ablations_cpu_sample.md                       # TF, CPU
    KERAS_BACKEND=jax python bench/ablations.py --dataset=cifar10 --data_dir=DIR \
        --encoder=resnet18_cifar --epochs=50 --out=/tmp/out/ablations_cifar10.md   # JAX

Each variant is a full run of train.py (on the backend KERAS_BACKEND names) with the same
data, encoder, budget and seed; the table
gives kNN top-1 on the test set (k = 200, cosine, T = 0.1), kNN of the same encoder at
random initialisation (train.py runs), the collapse metric `projection_std` of the last
epoch (std over the batch of l2-normalised projections, mean over dimensions: ≈ 1/√d when
spread out, → 0 when collapsed) and the final loss. Variants (data, below): the paper's
BYOL; no predictor; τ = 0 and τ = 1 held constant; β = 0.5 and 1 of InfoNCE^{α,β};
batch norm in both heads (= BYOL) / projector only / predictor only / LayerNorm / none;
no batch statistics anywhere (GN+WS encoder, LayerNorm heads); SimCLR; MoCo v2; the
multi-view objective; and recipe knobs for short runs (τ held at τ_base, crop area from 0.2;
with `--preset=cifar10_cpu` the other view keys stay the preset's). `--train_flags` adds
train.py flags to every run (e.g. `--base_lr=4e-3,--noknn_random_init`). Results, with the
host's CPU, are appended as JSON lines beside the table.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from byol_tf import records

ROOT = pathlib.Path(__file__).resolve().parents[1]

VARIANTS = {  # name → (method, method options, encoder suffix)
    "byol": ("byol", {}, ""),
    "no_predictor": ("byol", {"use_predictor": False}, ""),
    "tau_0": ("byol", {"tau_base": 0.0, "tau_schedule": "constant"}, ""),
    "tau_1": ("byol", {"tau_base": 1.0, "tau_schedule": "constant"}, ""),
    "beta_0.5": ("byol", {"beta": 0.5}, ""),
    "beta_1": ("byol", {"beta": 1.0}, ""),
    "projector_bn_only": ("byol", {"predictor_norm": "none"}, ""),
    "predictor_bn_only": ("byol", {"projector_norm": "none"}, ""),
    "heads_layer_norm": ("byol", {"projector_norm": "layer_norm", "predictor_norm": "layer_norm"}, ""),
    "heads_no_norm": ("byol", {"projector_norm": "none", "predictor_norm": "none"}, ""),
    "no_batch_stats_gnws": ("byol", {"projector_norm": "layer_norm",
                                     "predictor_norm": "layer_norm"}, "_gnws"),
    "simclr": ("simclr", {"temperature": 0.5}, ""),
    "moco_v2": ("moco", {}, ""),  # queue_size from --moco_queue
    "multiview": ("multiview", {}, ""),
    # Recipe knobs for short runs (views given in part keep the preset's other keys).
    "tau_constant": ("byol", {"tau_schedule": "constant"}, ""),
    "crop_area_0.2": ("byol", {"view1": {"crop_area": [0.2, 1.0]},
                               "view2": {"crop_area": [0.2, 1.0]}}, ""),
}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="sample", help="train.py --dataset")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--encoder", default="tiny_resnet_cifar")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--moco_queue", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_flags", default="",
                   help="comma-separated extra flags for every run, e.g. --base_lr=4e-3,--noknn_random_init")
    p.add_argument("--only", default="", help="comma-separated variant names")
    p.add_argument("--work_dir", default="runs/ablations")
    p.add_argument("--out", required=True, help="markdown table; JSON lines go to <out>.jsonl")
    return p.parse_args(argv)


def run_variant(args, name):
    method, options, suffix = VARIANTS[name]
    if method == "moco":
        options = dict(options, queue_size=args.moco_queue)
    run_dir = pathlib.Path(args.work_dir) / name
    common = [f"--encoder={args.encoder}{suffix}", f"--epochs={args.epochs}",
              f"--batch_size={args.batch_size}", f"--method={method}",
              f"--method_options={json.dumps(options)}", f"--run_dir={run_dir}",
              f"--seed={args.seed}", *[f for f in args.train_flags.split(",") if f]]
    command = [sys.executable, str(ROOT / "train.py"), f"--dataset={args.dataset}", *common]
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
    if args.preset:
        command.append(f"--preset={args.preset}")
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    row = dict(variant=name, method=method, options=options, encoder=args.encoder + suffix,
               seed=args.seed, seconds=round(time.time() - start, 1),
               command=" ".join(command[1:]), **records.host())
    if result.returncode:
        row["error"] = result.stderr.strip().splitlines()[-1][:300]
        return row
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    row.update(knn_top1=metrics["knn"]["pretrained"], projection_std=history["projection_std"][-1],
               loss=history["loss"][-1], backend=os.environ.get("KERAS_BACKEND", "tensorflow"))
    if "random_init" in metrics["knn"]:  # (not with --noknn_random_init)
        row["knn_random_init"] = metrics["knn"]["random_init"]
    return row


def table(rows, args):
    lines = [f"Ablations: backend={os.environ.get('KERAS_BACKEND', 'tensorflow')}, data={args.dataset}, "
             f"encoder={args.encoder}, {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}"
             f"{', preset ' + args.preset if args.preset else ''}"
             f"{', flags ' + args.train_flags if args.train_flags else ''} "
             f"({time.strftime('%Y-%m-%d')}; {records.host()['cpu']}).", "",
             "| variant | method | options | kNN top-1 | kNN at random init | projection_std | final loss | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['method']} | `{json.dumps(r['options'])}` | "
                         f"failed: {r['error']} | | | | {r['seconds']} |")
            continue
        random_init = f"{r['knn_random_init']:.3f}" if "knn_random_init" in r else "—"
        lines.append(f"| {r['variant']} | {r['method']} | `{json.dumps(r['options'])}` | "
                     f"{r['knn_top1']:.3f} | {random_init} | {r['projection_std']:.4f} | "
                     f"{r['loss']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    args = parse(argv)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = run_variant(args, name)
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(str(out) + ".jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        out.write_text(table(rows, args))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1:])
