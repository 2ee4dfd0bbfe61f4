"""vsfast._core: the CPU kernels (csrc/bindings/core.cpp over csrc/vsfast/api.hpp).

Arrays are C-contiguous float32 or float64 numpy arrays (anything else raises TypeError or
ValueError); results have the input's dtype. Inputs holding NaN or inf raise ValueError naming the
argument, results beyond the dtype raise OverflowError, a decomposition that does not converge
raises LinAlgError. The GIL is released while the kernels run.
"""

from collections.abc import Sequence
from typing import TypedDict, TypeVar

import numpy as np
from numpy.typing import NDArray

# The dtype of the input, which every result shares.
_F = TypeVar("_F", np.float32, np.float64)

class LinAlgError(np.linalg.LinAlgError):
    """A decomposition that did not converge."""

class _BuildInfo(TypedDict):
    compiler: str
    build_type: str
    cxx_flags: str
    compiled_for: list[str]
    cpu_features: dict[str, bool]
    blas_config: str
    sanitizers: bool
    threads: int

def svd(A: NDArray[_F]) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F]]:
    """Thin SVD of A (m, n) or (batch, m, n): U (..., m, q), S (..., q), Vh (..., q, n), q = min(m, n)."""

def svdvals(A: NDArray[_F]) -> NDArray[_F]:
    """Singular values of A (m, n) or (batch, m, n), descending: (..., q), q = min(m, n)."""

def svdvals_gram(A: NDArray[np.float32]) -> NDArray[np.float32]:
    """Singular values of float32 A (m, n) or (batch, m, n) from its float64 Gram matrix's eigenvalues."""

def rsvd(
    A: NDArray[_F],
    k: int,
    oversample: int,
    power_iters: int,
    seed: int,
    method: str = "subspace",
    precision: str = "full",
    tol: float = 0.0,
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F]]:
    """Randomized truncated SVD, 1 <= k <= min(m, n): U (..., m, k), S (..., k), Vh (..., k, n).
    method "subspace" or "krylov"; precision "full", "auto" or "bfloat16"; tol > 0 (krylov only):
    adaptive depth, power_iters being the most iterations."""

def bf16_supported() -> bool:
    """Whether this CPU and build run rsvd's bfloat16 passes (AVX512-BF16)."""

def rank(
    S: NDArray[np.float32] | NDArray[np.float64], m: int, n: int, rtol: float | None = None, atol: float | None = None
) -> NDArray[np.int64]:
    """Rank of each row of singular values S (1-D: a 0-D result; 2-D: one per row) of m x n matrices."""

def complement(basis: NDArray[_F], n: int) -> NDArray[_F]:
    """Orthonormal rows ((batch,) n - r, n) spanning the complement of the orthonormal rows ((batch,) r, n)."""

def project(X: NDArray[_F], basis: NDArray[_F]) -> tuple[NDArray[_F], NDArray[_F]]:
    """(signal, residual) = (X B^T B, X - X B^T B) for X (rows, n) and orthonormal rows B (r, n)."""

def pinv(A: NDArray[_F], rtol: float | None = None, atol: float | None = None) -> tuple[NDArray[_F], NDArray[np.int64]]:
    """Pseudoinverses ((batch,) n, m) and ranks ((batch,) or 0-D) of A ((batch,) m, n)."""

# The block steps of a randomized SVD over a matrix held as blocks (vsfast.distributed). A tall
# rows x width matrix travels as its column-major storage, a (width, rows) array; the block A is
# B (rows x cols) or, with transposed, B's transpose.
def sketch(m: int, n: int, k: int, oversample: int, seed: int, dtype: np.dtype) -> NDArray[np.floating]:
    """The Gaussian test matrix rsvd draws for an m x n matrix: (k + oversample, min(m, n)), at most min(m, n) rows."""

def block_largest(A: NDArray[_F], name: str) -> float:
    """The largest magnitude in A; NaN or inf raise ValueError naming `name`."""

def block_exponent(largest: float, dtype: np.dtype) -> int:
    """e such that rsvd works on 2^-e A for a matrix A whose largest magnitude is `largest`; 0 in the safe range."""

def block_range(A: NDArray[_F], Z: NDArray[_F], transposed: bool, exponent: int) -> tuple[NDArray[_F], NDArray[_F]]:
    """(Y, Y^T Y) for Y = 2^-exponent B Z, Z (width, cols): Y (width, rows), Y^T Y (width, width)."""

def block_corange(A: NDArray[_F], Y: NDArray[_F], transposed: bool, exponent: int) -> NDArray[_F]:
    """2^-exponent B^T Y for Y (width, rows): (width, cols)."""

def cholesky_factor(G: NDArray[_F], near_identity: bool) -> NDArray[_F] | None:
    """The upper Cholesky factor of G (n, n), column-major; None when G is not numerically positive definite or,
    with near_identity, more than 1/2 from the identity."""

def solve_factor(Y: NDArray[_F], R: NDArray[_F], with_gram: bool) -> tuple[NDArray[_F], NDArray[_F] | None]:
    """(Y R^-1, its Gram matrix or None) for Y (width, rows) and the upper-triangular R (width, width)."""

def householder_qr(Y: NDArray[_F]) -> tuple[NDArray[_F], NDArray[_F]]:
    """(Q, R) of Y (width, rows), rows >= width: Q (width, rows), R (width, width), both column-major."""

def get_num_threads() -> int: ...
def set_num_threads(threads: int) -> None: ...
def build_info() -> _BuildInfo:
    """How this module was built and what this CPU offers."""

class ChainF32:
    """Layers (W, b or None, activation name, parameter) of dtype float32 with their factors for
    going backwards, computed once."""

    def __init__(
        self,
        layers: Sequence[tuple[NDArray[np.float32], NDArray[np.float32] | None, str, float]],
        rtol: float | None = None,
        atol: float | None = None,
    ) -> None: ...
    @property
    def depth(self) -> int: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def ranks(self) -> list[int]: ...
    def reconstruct(
        self, Y: NDArray[np.float32], reference: NDArray[np.float32] | None = None, every_layer: bool = False
    ) -> tuple[NDArray[np.float32], list[int]]: ...
    def solve(
        self,
        Y: NDArray[np.float32],
        reference: NDArray[np.float32] | None,
        from_reference: bool,
        tol: float,
        max_iter: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64]]: ...
    def solve_box(
        self,
        Y: NDArray[np.float32],
        reference: NDArray[np.float32] | None,
        lo: float,
        hi: float,
        tol: float,
        max_iter: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]: ...
    def forward(self, X: NDArray[np.float32]) -> NDArray[np.float32]: ...

class ChainF64:
    """Layers (W, b or None, activation name, parameter) of dtype float64 with their factors for
    going backwards, computed once."""

    def __init__(
        self,
        layers: Sequence[tuple[NDArray[np.float64], NDArray[np.float64] | None, str, float]],
        rtol: float | None = None,
        atol: float | None = None,
    ) -> None: ...
    @property
    def depth(self) -> int: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def ranks(self) -> list[int]: ...
    def reconstruct(
        self, Y: NDArray[np.float64], reference: NDArray[np.float64] | None = None, every_layer: bool = False
    ) -> tuple[NDArray[np.float64], list[int]]: ...
    def solve(
        self,
        Y: NDArray[np.float64],
        reference: NDArray[np.float64] | None,
        from_reference: bool,
        tol: float,
        max_iter: int,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]: ...
    def solve_box(
        self,
        Y: NDArray[np.float64],
        reference: NDArray[np.float64] | None,
        lo: float,
        hi: float,
        tol: float,
        max_iter: int,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]: ...
    def forward(self, X: NDArray[np.float64]) -> NDArray[np.float64]: ...
