#!/usr/bin/env bash
# Creates the virtual environment ($BYOL_VENV, default .venv) and installs byol_tf with
# its pinned requirements. Idempotent: an environment already set up is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.byol_installed"
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-test.txt -nt "$stamp" ] \
   || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements-test.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
