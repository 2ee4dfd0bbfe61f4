#!/bin/sh
# Set up .venv (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
# MNIST comes from ../shared/data/mnist when it is there (no network), else from VSFAST_DATA
# or the loader's own cache.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -z "${VSFAST_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    VSFAST_DATA=$(cd ../shared/data/mnist && pwd)
    export VSFAST_DATA
fi
exec .venv/bin/python -m pytest "$@"
