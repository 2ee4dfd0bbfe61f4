"""The CPU backend: numpy arrays, array-likes and CPU torch tensors, computed by ``vsfast._core``.

Primitives (the GPU backend has the same names and signatures):

- ``asarray(x, name, dtype=None, like=None) -> (a, wrap)``: ``x`` as a C-contiguous float32/float64
  array of this backend, and the function that turns results back into ``x``'s kind;
- ``rsvd``, ``svd``, ``svdvals``, ``spectrum`` (singular values for metrics), ``pinv``: on one
  matrix or a 3-D batch; ``RSVD_METHOD``, the method ``rsvd(method="auto")`` runs (the GPU
  refuses the CPU-only methods and options of ``rsvd`` with a TypeError saying so);
- ``rank`` of host singular values, ``complement`` of orthonormal rows, ``project`` of rows;
- ``to_host``, ``concat``, ``contiguous``, ``transpose``, ``dtype_of``: moving, assembling and
  describing this backend's arrays;
- ``chain(layers, rtol, atol)``: the engine behind :class:`vsfast.Chain`;
- the block steps of a randomized SVD over a matrix held as blocks (``sketch``,
  ``block_largest``, ``block_exponent``, ``block_range``, ``block_corange``, ``cholesky_factor``, ``solve_factor``,
  ``householder_qr``), which :mod:`vsfast.distributed` runs as Dask tasks. They hold a tall
  rows x width matrix as its column-major storage, a C-contiguous (width, rows) array.

Arguments reach these functions already checked by :mod:`vsfast.linalg` (shapes, ranges of k,
tolerances); the compiled core checks again only what memory safety needs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _core
from .._arrays import is_tensor

__all__ = ["asarray", "block_corange", "block_exponent", "block_largest", "block_range", "chain", "cholesky_factor",
           "complement", "concat", "contiguous", "dtype_of", "householder_qr", "pinv", "project", "rank", "rsvd",
           "sketch", "solve_factor", "spectrum", "svd", "svdvals", "to_host", "transpose"]

name = "cpu"
Wrap = Callable[[np.ndarray], Any]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _to_torch(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


def _float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype numpy's linalg computes in for `dtype`: float32 and float64 as they are,
    integers and booleans as float64; anything else (float16, complex, objects) refused."""
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return dtype.newbyteorder("=")
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{name}: expected real numbers (float32, float64 or integers), got dtype {dtype}")


def _from_tensor(x, name: str) -> np.ndarray:
    if x.device.type == "meta":
        raise TypeError(f"{name}: expected data, got a tensor on the meta device (shapes only, no values)")
    if x.device.type != "cpu":
        raise TypeError(f"{name}: got a tensor on {x.device}, but the other arguments are on the CPU; "
                        "move it to the CPU with .cpu() or the others to its device")
    if x.is_complex() or (x.is_floating_point() and x.dtype.itemsize not in (4, 8)):
        raise TypeError(f"{name}: expected real numbers (float32, float64 or integers), got {x.dtype}")
    # Gradients do not flow through vsfast: it reads the values only.
    return x.detach().resolve_conj().resolve_neg().numpy()


def asarray(x: Any, name: str, dtype: Any = None, like: Any = None) -> tuple[np.ndarray, Wrap]:
    """x as a C-contiguous float32/float64 numpy array (no copy where x already is one) and the
    function that turns results back into x's kind (torch tensors stay torch tensors).

    Array-likes are converted as numpy converts them; integer and boolean values become float64,
    as in numpy.linalg. `dtype` casts to that dtype (where one argument follows another's);
    `like` is unused on the CPU, where every array lives in the same memory."""
    del like
    wrap = _identity
    if is_tensor(x):
        a, wrap = _from_tensor(x, name), _to_torch
    elif hasattr(x, "__cuda_array_interface__"):
        raise TypeError(f"{name}: got a GPU array ({type(x).__module__}.{type(x).__name__}), but the other "
                        "arguments are on the CPU")
    else:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected an array of real numbers, got {type(x).__name__} ({exc})") from None
    target = np.dtype(dtype) if dtype is not None else _float_dtype(a.dtype, name)
    if dtype is not None:
        _float_dtype(a.dtype, name)  # refuse what no dtype would make sense of
    return contiguous(np.asarray(a, dtype=target)), wrap


#: The method ``rsvd(method="auto")`` runs here: block Krylov, which reaches subspace iteration's
#: accuracy in fewer passes (docs/numerics.md).
RSVD_METHOD = "krylov"


def rsvd(a: np.ndarray, k: int, oversample: int, power_iters: int, seed: int, method: str, precision: str,
         tol: float):
    return _core.rsvd(a, k, oversample, power_iters, seed, method, precision, tol)


def svd(a: np.ndarray):
    return _core.svd(a)


def svdvals(a: np.ndarray) -> np.ndarray:
    return _core.svdvals(a)


def spectrum(a: np.ndarray) -> np.ndarray:
    """Singular values for a weight matrix's metrics: a float32 matrix's from its float64 Gram
    matrix (``_core.svdvals_gram``: closer than float32 gesdd above the float32 rank tolerance,
    and faster), a float64 matrix's from gesdd."""
    return _core.svdvals_gram(a) if a.dtype == np.float32 else _core.svdvals(a)


def pinv(a: np.ndarray, rtol: float | None, atol: float | None) -> np.ndarray:
    return _core.pinv(a, rtol, atol)[0]


def rank(s: np.ndarray, m: int, n: int, rtol: float | None, atol: float | None):
    """Ranks of host singular values (one row per matrix) under numpy's rule."""
    return _core.rank(contiguous(s), m, n, rtol, atol)


def complement(rows: np.ndarray, d: int) -> np.ndarray:
    """Orthonormal rows spanning the complement of orthonormal `rows` (r x d, or a batch),
    computed in float64 whatever the dtype: a float32 complement is orthogonal to the basis only
    to ~1e-7 sqrt(d), which would show in every projection onto it."""
    return _core.complement(rows.astype(np.float64), d).astype(rows.dtype, copy=False)


def project(x: np.ndarray, rows: np.ndarray):
    """(x B^T B, x - x B^T B) for rows x (count x d) and orthonormal rows B (r x d)."""
    return _core.project(x, rows)


def to_host(a: np.ndarray) -> np.ndarray:
    return a


def concat(arrays, axis: int) -> np.ndarray:
    return np.concatenate(arrays, axis=axis)


def contiguous(a: np.ndarray) -> np.ndarray:
    """a as the kernels read it: C-contiguous and aligned (numpy admits arrays at any byte offset,
    such as one unpickled from a network buffer), copied only where it is not. A 0-d array stays
    0-d (numpy.ascontiguousarray would make it 1-d)."""
    return np.require(a, requirements="CA")


def transpose(a: np.ndarray) -> np.ndarray:
    """The matrices of a (..., M, N) transposed, C-contiguous."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2))


def dtype_of(a: np.ndarray) -> np.dtype:
    return a.dtype


def chain(layers, rtol: float | None, atol: float | None):
    """The compiled chain of (W, b, activation, parameter) layers, all of one dtype: ``ranks``,
    ``input_dim``, ``output_dim``, ``reconstruct``, ``solve``, ``solve_box`` and ``forward``."""
    engine = _core.ChainF32 if layers[0][0].dtype == np.float32 else _core.ChainF64
    return engine(layers, rtol, atol)


# --- the block steps of a randomized SVD over a matrix held as blocks (csrc/vsfast/blocks.hpp) ---

def sketch(m: int, n: int, k: int, oversample: int, seed: int, dtype) -> np.ndarray:
    """The Gaussian test matrix :func:`rsvd` draws for an m x n matrix, min(m, n) x (k + p)
    column-major: a (k + p, min(m, n)) array."""
    return _core.sketch(m, n, k, oversample, seed, np.dtype(dtype))


def block_largest(a: np.ndarray, name: str) -> float:
    """The largest magnitude in a; NaN or inf raise ValueError naming `name`."""
    return _core.block_largest(contiguous(a), name)


def block_exponent(largest: float, dtype) -> int:
    """The power of two by which :func:`rsvd` scales a matrix whose largest magnitude is
    `largest` (its products would overflow or underflow otherwise): B becomes 2^-e B; 0 inside
    the safe range."""
    return _core.block_exponent(largest, np.dtype(dtype))


def block_range(a: np.ndarray, z: np.ndarray, transposed: bool, exponent: int):
    """(Y, Y^T Y) for Y = 2^-exponent B Z: B the block a (rows x cols, or with `transposed` a's
    transpose), Z cols x width column-major; Y comes column-major, a (width, rows) array."""
    return _core.block_range(contiguous(a), contiguous(z), transposed, exponent)


def block_corange(a: np.ndarray, y: np.ndarray, transposed: bool, exponent: int) -> np.ndarray:
    """2^-exponent B^T Y (cols x width, column-major) for the block B as in :func:`block_range`."""
    return _core.block_corange(contiguous(a), contiguous(y), transposed, exponent)


def cholesky_factor(gram: np.ndarray, near_identity: bool):
    """The upper Cholesky factor R (column-major) of a symmetric Gram matrix, or None where it is
    not numerically positive definite (or, with `near_identity`, more than 1/2 from I)."""
    return _core.cholesky_factor(contiguous(gram), near_identity)


def solve_factor(y: np.ndarray, r: np.ndarray, with_gram: bool):
    """(Y R^-1, its Gram matrix or None) for column-major Y and upper-triangular R."""
    return _core.solve_factor(contiguous(y), contiguous(r), with_gram)


def householder_qr(y: np.ndarray):
    """(Q, R) of the column-major Y (rows >= width) by Householder QR."""
    return _core.householder_qr(contiguous(y))
