#!/usr/bin/env bash
# The zoo entry byol_tiny_resnet_cifar10: BYOL on the full CIFAR-10 train set with the
# cifar10_cpu preset (150 epochs, ~0.3 M-parameter ResNet), on a CPU, in time-limited
# segments. Each call trains for at most MINUTES (default 60), ends on an epoch's
# checkpoint in runs/byol_tiny_resnet_cifar10/ and says how far the run got; call it again
# (on this machine or, with that folder, on another) to continue. The call that finishes the
# last epoch evaluates (kNN on the 10,000 test images), exports and publishes the entry into
# models/. Extra arguments go to train.py: the published entry's run folder keeps only its
# records (config, history, curves), so to train it again name a new run and entry, e.g.
#   bash scripts/train_cifar10_zoo.sh 60 --run_dir=runs/my_cifar10 --publish=my_cifar10
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
shift || true
bash scripts/setup_env.sh
# The data folder is recorded as written ('~' unexpanded), so that the run resumes with the
# same config under another home directory.
HOME_DATA='~/.cache/byol_data'
DATA_ARG=${BYOL_DATA_DIR:-$HOME_DATA}
DATA=${BYOL_DATA_DIR:-$HOME/.cache/byol_data}
[ -d "$DATA/tfds/cifar10" ] || "${BYOL_VENV:-.venv}/bin/python" scripts/prepare_cifar10.py "$DATA"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "${BYOL_VENV:-.venv}/bin/python" train.py --dataset=cifar10 \
  --data_dir="$DATA_ARG/tfds" --preset=cifar10_cpu --seed=0 \
  --knn_every=5 --keep_checkpoints=1 --run_dir=runs/byol_tiny_resnet_cifar10 \
  --time_limit_minutes="$MINUTES" --publish=byol_tiny_resnet_cifar10 --zoo_dir=models \
  --publish_linear_epochs=20 "$@"
