#!/bin/sh
# On a machine with an NVIDIA GPU (sm_80 or newer): set up, run the GPU tests, run them again under
# compute-sanitizer's memcheck, then the GPU benchmark. One command; the log is the evidence.
#   scripts/gpu-check.sh [pytest arguments for both test runs]
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -z "${VSFAST_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    VSFAST_DATA=$(cd ../shared/data/mnist && pwd)
    export VSFAST_DATA
fi
.venv/bin/python - <<'PY'
import sys, torch, vsfast
from vsfast import _gpu
if not vsfast.cuda_available():
    sys.exit(f"gpu-check: vsfast cannot use a GPU here: "
             f"{_gpu.IMPORT_ERROR or (_gpu._cuda.unavailable_reason() if _gpu._cuda else 'no module')}")
print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true

echo "== GPU tests"
.venv/bin/python -m pytest tests/test_cuda.py -q -rs "$@"

echo "== GPU tests under compute-sanitizer memcheck"
SANITIZER=$(command -v compute-sanitizer || true)
[ -n "$SANITIZER" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || SANITIZER=/usr/local/cuda/bin/compute-sanitizer
sanitized=0
if [ -n "$SANITIZER" ]; then
    # Without torch's caching allocator every tensor is its own allocation, so that memcheck sees a
    # kernel that leaves its buffer.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 3 --print-limit 20 \
        .venv/bin/python -m pytest tests/test_cuda.py -q -x -p no:cacheprovider "$@"
    sanitized=1
else
    echo "gpu-check: compute-sanitizer not found (it ships with the CUDA toolkit); memcheck NOT run" >&2
fi

echo "== GPU benchmark"
.venv/bin/python benchmarks/cuda.py --tf32

[ "$sanitized" = 1 ] || { echo "gpu-check: incomplete: memcheck was not run" >&2; exit 2; }
