#!/usr/bin/env bash
# Creates a virtual environment and installs byol_tf with its pinned requirements.
#   bash scripts/setup_env.sh          # runtime: requirements.txt in $BYOL_VENV (default .venv)
#   bash scripts/setup_env.sh test     # tests: requirements-test.txt in $BYOL_TEST_VENV (default .venv-test)
# Two environments because the test-only packages are not free at run time: TensorFlow imports
# JAX whenever it is installed (tf.lite), +0.1 GB of memory and ~0.7 s in every process.
# Idempotent: an environment already set up from the same files is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-runtime}" in
  runtime) VENV=${BYOL_VENV:-.venv}; REQUIREMENTS=requirements.txt ;;
  test) VENV=${BYOL_TEST_VENV:-.venv-test}; REQUIREMENTS=requirements-test.txt ;;
  *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
# The stamp names the requirements file and the sha256 of what decides the installation
# (the requirement files and pyproject.toml): set up again when it differs, not by file times.
stamp="$VENV/.byol_installed"
wanted="$REQUIREMENTS $(cat "$REQUIREMENTS" requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cut -d' ' -f1 "$stamp")" != "$REQUIREMENTS" ]; then
  "$PYTHON" -m venv --clear "$VENV"  # set up from other requirements (e.g. with the test-only ones)
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "Setting up $VENV from $REQUIREMENTS (TensorFlow and the rest: a few minutes the first time)…"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  echo "$wanted" > "$stamp"
  echo "$VENV is ready."
fi
