#!/usr/bin/env bash
# Sets up the environment, prepares the real CIFAR-10 (through ../shared, cached in
# $BYOL_DATA_DIR or ~/.cache/byol_data) and runs the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY="${BYOL_VENV:-.venv}/bin/python"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export BYOL_DATA_DIR=${BYOL_DATA_DIR:-$HOME/.cache/byol_data}
if [ ! -d "$BYOL_DATA_DIR/tfds/cifar10" ]; then
  if [ -f ../shared/data/prepare_cifar10.py ]; then
    "$PY" ../shared/data/prepare_cifar10.py "$BYOL_DATA_DIR"
  else
    echo "note: ../shared/data/prepare_cifar10.py not found; tests on real CIFAR-10 will be skipped" >&2
  fi
fi
exec "$PY" -m pytest "$@"
