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
# The float64 references in the tests run on single-threaded BLAS: threaded OpenBLAS busy-waits,
# and on a shared machine that makes small reference computations take seconds. vsfast keeps its
# own thread count (VSFAST_NUM_THREADS, default: every CPU it may use).
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
VSFAST_NUM_THREADS=${VSFAST_NUM_THREADS:-$(.venv/bin/python -c "import os; print(len(os.sched_getaffinity(0)))")}
export VSFAST_NUM_THREADS
exec .venv/bin/python -m pytest "$@"
