"""vsfast._cuda: the GPU kernels (csrc/bindings/cuda.cpp over csrc/cuda/api.hpp).

Arrays cross as device addresses (ints) with their sizes, in the CPU core's row-major layout and
batched over a leading axis; the caller allocates the outputs and the workspace (whose size the
matching *_workspace function gives) with its own framework, and the work is queued on `stream`.
Every address must point into memory of CUDA device `device`. Inputs holding NaN or inf raise
ValueError naming the argument, results beyond the dtype raise OverflowError, a decomposition that
does not converge raises LinAlgError, a failing CUDA call CudaError.
"""

from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

from . import _core

_Dtype = Literal["float32", "float64"]

# A chain layer: (m, n, weight, bias or 0, pinv_t or 0, signal_rows or 0, rank, activation,
# parameter), every array by its device address; pinv_t ((W^+)^T, m x n) and signal_rows (V_r^T,
# rank x n) are needed by reconstruct only.
_LayerTuple = tuple[int, int, int, int, int, int, int, str, float]

class CudaError(RuntimeError):
    """A CUDA, cuBLAS or cuSOLVER call failed."""

class LinAlgError(_core.LinAlgError):
    """A decomposition that did not converge on the GPU."""

class _BuildInfo(TypedDict):
    cuda_runtime_built: str
    cuda_runtime: str
    cuda_driver: str
    nvcc: str
    architectures: str
    cublas_built: str
    cublas: str
    cusolver_built: str
    cusolver: str
    device_count: int

def device_count() -> int:
    """CUDA devices usable by this process (0 without a driver)."""

def unavailable_reason() -> str:
    """Why no CUDA device is usable, or ''."""

def device_name(device: int) -> str: ...
def build_info() -> _BuildInfo:
    """How this module was built (CUDA runtime, nvcc, architectures, cuBLAS/cuSOLVER) and what it runs with."""

def _set_jacobi_max_sweeps(sweeps: int) -> None: ...
def rsvd_workspace(
    dtype: _Dtype, device: int, batch: int, m: int, n: int, k: int, oversample: int, power_iters: int
) -> int: ...
def rsvd(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    A: int,
    batch: int,
    m: int,
    n: int,
    k: int,
    oversample: int,
    power_iters: int,
    seed: int,
    tf32: bool,
    U: int,
    S: int,
    Vh: int,
    extra: Callable[[int], int] | None = None,
) -> None:
    """U (batch, m, k), S (batch, k), Vh (batch, k, n); `extra(nbytes)` allocates the rescaled copy
    of a batch holding a matrix outside the safe range."""

def svd_workspace(dtype: _Dtype, device: int, batch: int, m: int, n: int) -> int: ...
def svd(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    A: int,
    batch: int,
    m: int,
    n: int,
    U: int,
    S: int,
    Vh: int,
) -> None:
    """U (batch, m, q), S (batch, q), Vh (batch, q, n), q = min(m, n)."""

def svdvals_workspace(dtype: _Dtype, device: int, batch: int, m: int, n: int) -> int: ...
def svdvals(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    A: int,
    batch: int,
    m: int,
    n: int,
    S: int,
) -> None:
    """S (batch, q), q = min(m, n), by the svd's path."""

def pinv_workspace(dtype: _Dtype, device: int, batch: int, m: int, n: int) -> int: ...
def pinv(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    A: int,
    batch: int,
    m: int,
    n: int,
    rtol: float | None,
    atol: float | None,
    transposed: bool,
    out: int,
    ranks: int,
    Vh: int = 0,
) -> None:
    """out (batch, n, m), or its transposes with `transposed`; ranks (batch, int64); Vh (batch, q, n) unless 0."""

def project_workspace(dtype: _Dtype, device: int, rows: int, n: int, r: int) -> int: ...
def project(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    X: int,
    rows: int,
    n: int,
    basis: int,
    r: int,
    signal: int,
    residual: int,
) -> None:
    """signal = X B^T B and residual = X - signal for X (rows, n) and orthonormal rows B (r, n)."""

def reconstruct_workspace(
    dtype: _Dtype, device: int, layers: Sequence[_LayerTuple], rows: int, ref_rows: int, every_layer: bool
) -> int: ...
def reconstruct(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    layers: Sequence[_LayerTuple],
    Y: int,
    rows: int,
    reference: int,
    ref_rows: int,
    every_layer: bool,
    X: int,
) -> list[int]:
    """X (rows, n_0) from targets Y (rows, m_last); returns the per-layer clamp counts."""

def forward_workspace(dtype: _Dtype, device: int, layers: Sequence[_LayerTuple], rows: int) -> int: ...
def forward(
    dtype: _Dtype,
    device: int,
    stream: int,
    workspace: int,
    workspace_bytes: int,
    layers: Sequence[_LayerTuple],
    X: int,
    rows: int,
    Y: int,
) -> None:
    """Y (rows, m_last) = the chain applied to X (rows, n_0)."""
