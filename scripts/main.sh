#!/usr/bin/env bash
# The main job on the embedded default: pretrain BYOL on the bundled real CIFAR-10
# sample, kNN-evaluate it against the same encoder at random init, export a SavedModel and
# publish a zoo entry (kNN + linear evaluation, model card) inside the run folder, runs/main;
# then score the published 150-epoch CIFAR-10 entry on the same 500 test images.
# Extra arguments go to train.py (e.g. --epochs=5 --run_dir=runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY="${BYOL_VENV:-.venv}/bin/python"
RUN_DIR=runs/main
for arg in "$@"; do case "$arg" in --run_dir=*) RUN_DIR="${arg#--run_dir=}";; esac; done
"$PY" train.py --run_dir="$RUN_DIR" --publish=byol_tiny_resnet_cifar10_sample "$@"
ZOO_ENTRY=byol_tf/models/byol_tiny_resnet_cifar10
echo "The published 150-epoch CIFAR-10 entry on the same test images:"
"$PY" eval.py --model="$ZOO_ENTRY/encoder.keras" --dataset=sample \
    --out="$RUN_DIR/eval_knn_byol_tiny_resnet_cifar10_on_sample.json" | tail -1
"$PY" - "$RUN_DIR" <<'PYEOF'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
knn = json.loads((run / "metrics.json").read_text())["knn"]
entry = json.loads((run / "eval_knn_byol_tiny_resnet_cifar10_on_sample.json").read_text())
print(f"\nkNN top-1 on the sample's {knn['test_examples']} test images:\n"
      f"  this run's encoder, at random init     {knn.get('random_init', float('nan')):.3f}\n"
      f"  this run's encoder, pretrained         {knn['pretrained']:.3f}\n"
      f"  zoo entry byol_tiny_resnet_cifar10     {entry['top1']:.3f}  (150 epochs on all of CIFAR-10)\n"
      f"Run folder {run}: metrics.json, curves.png, neighbours.png, encoder.keras,\n"
      f"export/byol_encoder/1/ (SavedModel), zoo/byol_tiny_resnet_cifar10_sample/ (zoo entry)")
PYEOF
