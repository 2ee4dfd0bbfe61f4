#!/bin/sh
# Create .venv beside this repository and install vsfast into it with every optional extra.
# Idempotent: a second run only rebuilds the extensions.
#
# The CUDA module (vsfast._cuda) is built when nvcc is found, against cuBLAS/cuSOLVER from torch's
# nvidia wheels in this .venv: pip builds in an isolated environment, so CMake is told where they
# are (VSFAST_CUDA_SITE). VSFAST_CUDA=ON/OFF forces it on or off (default AUTO).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
VSFAST_CUDA_SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(.venv/bin/python -c "import os; print(len(os.sched_getaffinity(0)))")}
export VSFAST_CUDA_SITE CMAKE_BUILD_PARALLEL_LEVEL
.venv/bin/python -m pip install --quiet -e '.[all]'
# In a fresh .venv the nvidia wheels arrive in the same pip run, after vsfast was built: build once
# more now that they are there.
has_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }
has_cuda_module() { .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('vsfast._cuda') is None)"; }
if [ "${VSFAST_CUDA:-AUTO}" != OFF ] && has_nvcc && ! has_cuda_module; then
    .venv/bin/python -m pip install --quiet --no-deps -e .
fi
