#!/bin/sh
# Create .venv beside this repository and install vsfast into it with every optional extra.
# Idempotent: a second run only rebuilds the extension.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[all]'
