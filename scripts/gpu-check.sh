#!/bin/sh
# On a machine with an NVIDIA GPU (sm_80 or newer): set up, run the GPU tests, the GPU benchmark,
# then the GPU tests again under compute-sanitizer's memcheck (the slowest part, last). One
# command; the log is the evidence.
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
if not vsfast.cuda_available():
    sys.exit(f"gpu-check: vsfast cannot use a GPU here: {vsfast.show_config(mode='dicts')['cuda']['why']}")
print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true

# Every stage runs even when one before it failed: a first run should bring back all the evidence.
failed=""
echo "== GPU tests"
.venv/bin/python -m pytest tests/test_cuda.py -q -rs "$@" || failed="$failed tests"

echo "== GPU benchmark"
.venv/bin/python benchmarks/cuda.py --tf32 || failed="$failed benchmark"

echo "== GPU tests under compute-sanitizer memcheck"
SANITIZER=$(command -v compute-sanitizer || true)
[ -n "$SANITIZER" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || SANITIZER=/usr/local/cuda/bin/compute-sanitizer
if [ -z "$SANITIZER" ]; then
    echo "gpu-check: compute-sanitizer not found (it ships with the CUDA toolkit); memcheck NOT run" >&2
    exit 2
fi
# Without torch's caching allocator every tensor is its own allocation, so that memcheck sees a
# kernel that leaves its buffer; fewer property examples keep the instrumented run short.
PYTORCH_NO_CUDA_MEMORY_CACHING=1 VSFAST_GPU_EXAMPLES=${VSFAST_GPU_EXAMPLES:-15} \
    "$SANITIZER" --tool memcheck --error-exitcode 3 --print-limit 20 \
    .venv/bin/python -m pytest tests/test_cuda.py -q -x -p no:cacheprovider "$@" || failed="$failed memcheck"

[ -z "$failed" ] || { echo "gpu-check: FAILED:$failed" >&2; exit 1; }
echo "gpu-check: all stages passed"
