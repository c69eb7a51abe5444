#!/usr/bin/env bash
# The main job on the embedded default: pretrain BYOL on the bundled real CIFAR-10
# sample, kNN-evaluate it against the same encoder at random init, export a SavedModel and
# publish a zoo entry (kNN + linear evaluation, model card) inside the run folder.
# Extra arguments go to train.py (e.g. --epochs=5 --run_dir=runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "${BYOL_VENV:-.venv}/bin/python" train.py --publish=byol_tiny_resnet_cifar10_sample "$@"
