#!/bin/sh
# Build vsfast with AddressSanitizer and UndefinedBehaviorSanitizer into .venv-sanitize and run
# the test suite against it. Extra arguments go to pytest (default: the whole suite).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The sanitizers check the CPU core; the CUDA module has its own check (compute-sanitizer, run by
# scripts/gpu-check.sh on a GPU machine).
VSFAST_CUDA=OFF
export VSFAST_CUDA
[ -x .venv-sanitize/bin/python ] || "$PYTHON" -m venv .venv-sanitize
.venv-sanitize/bin/python -m pip install --quiet --upgrade pip
.venv-sanitize/bin/python -m pip install --quiet -C cmake.define.VSFAST_SANITIZE=ON \
    -C cmake.define.VSFAST_WERROR="${VSFAST_WERROR:-OFF}" -C build-dir=build/sanitize -e '.[all]'
if [ -z "${VSFAST_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    VSFAST_DATA=$(cd ../shared/data/mnist && pwd)
    export VSFAST_DATA
fi
# The sanitizer runtime must come first in the process; Python's own allocations are not its
# business (leak checking off), an impossible allocation fails as it would without it (so Python
# raises MemoryError), undefined behaviour aborts the run.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# A test slower than 10 minutes under the sanitizers is a hang: fail it and go on (pytest-timeout).
exec .venv-sanitize/bin/python -m pytest -o timeout=600 "$@"
