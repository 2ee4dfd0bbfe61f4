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
has_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }
if [ "${VSFAST_CUDA:-AUTO}" != OFF ] && has_nvcc && [ ! -d "$VSFAST_CUDA_SITE/nvidia" ]; then
    # A fresh .venv: install the dependencies (torch brings the CUDA libraries) before vsfast is
    # built, so that one build makes both modules.
    deps=$(.venv/bin/python -c "
try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy
    from pip._vendor import tomli as tomllib
project = tomllib.load(open('pyproject.toml', 'rb'))['project']
groups = [project['dependencies'], *project['optional-dependencies'].values()]
print('\n'.join(d for g in groups for d in g if not d.startswith('vsfast')))")
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install --quiet $deps
fi
.venv/bin/python -m pip install --quiet -e '.[all]'
