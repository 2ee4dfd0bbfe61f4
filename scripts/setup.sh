#!/bin/sh
# Create .venv beside this repository and install vsfast into it (editable) with every optional
# extra. Idempotent: a second run only rebuilds the extensions.
#
# Where nvcc is found, the build makes the CUDA module (vsfast._cuda) too: the build backend
# (backend/vsfast_backend.py) brings cuBLAS/cuSOLVER into pip's build environment. VSFAST_CUDA=ON/OFF
# forces the module on or off (default AUTO); VSFAST_WERROR=ON makes compiler warnings errors (CI).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(.venv/bin/python -c "import os; print(len(os.sched_getaffinity(0)))")}
export CMAKE_BUILD_PARALLEL_LEVEL
.venv/bin/python -m pip install --quiet -C cmake.define.VSFAST_WERROR="${VSFAST_WERROR:-OFF}" -e '.[all]'
