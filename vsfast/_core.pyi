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

def rsvd(
    A: NDArray[_F], k: int, oversample: int, power_iters: int, seed: int
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F]]:
    """Randomized truncated SVD, 1 <= k <= min(m, n): U (..., m, k), S (..., k), Vh (..., k, n)."""

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
