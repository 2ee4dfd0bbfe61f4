"""Linear algebra on layers: SVDs, the four fundamental subspaces, projections, pseudoinverses
and the chained reconstruction of inputs from outputs.

Every function validates its arguments here, once, then hands the work to the backend that
:func:`vsfast._backends.select` picks for the arrays: the compiled CPU core for numpy arrays,
array-likes and CPU tensors, the CUDA module for torch CUDA tensors and CuPy arrays. numpy's
conventions hold: array-likes and integer arrays are converted as numpy.linalg converts them,
matrices may be stacked as ``(..., M, N)``, results are named tuples, vectors are rows. Results
have the kind (numpy array, torch tensor, CuPy array), device and dtype of the main argument.
"""

from __future__ import annotations

import math
import warnings
from functools import cached_property
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from . import _backends, _core
from ._arrays import check_int, check_tolerance

__all__ = [
    "rsvd", "svd", "svdvals", "SVDResult", "Spaces", "spaces", "project", "Projection", "pinv", "Chain",
    "Reconstruction", "Solution", "BoxSolution", "reconstruct", "RangeWarning", "LinAlgError",
]

LinAlgError = _core.LinAlgError

# Below this many singular triplets per matrix dimension, "auto" switches to the randomized SVD.
_RANDOMIZED_FRACTION = 0.25
_SEED_LIMIT = 2**64 - 1
# Beyond a few dozen iterations rounding, not the spectrum, limits the accuracy: more only hangs.
_MAX_POWER_ITERS = 100


class RangeWarning(RuntimeWarning):
    """Targets fell outside an activation's range and were clamped into it."""


class SVDResult(NamedTuple):
    """``A = U @ diag(S) @ Vh``, as numpy.linalg.svd names it."""

    U: Any
    S: Any
    Vh: Any


class Projection(NamedTuple):
    """The part of inputs a subspace keeps (``signal``) and the part it rejects (``residual``)."""

    signal: Any
    residual: Any


# --- arguments ----------------------------------------------------------------------------------

def _matrices(A: Any, name: str):
    """The backend for A, A as its C-contiguous float32/float64 array of shape (..., M, N), and the
    function that gives results A's kind."""
    backend = _backends.select(**{name: A})
    a, wrap = backend.asarray(A, name)
    if a.ndim < 2:
        raise ValueError(f"{name}: expected a matrix or a stack of matrices (..., M, N), got shape {tuple(a.shape)}")
    if any(d == 0 for d in a.shape):
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {tuple(a.shape)}")
    return backend, a, wrap


def _stacked(fn: Callable, a) -> tuple:
    """fn's results on a (..., M, N) stack, which fn sees as one matrix or a 3-D batch: the
    backends batch over one leading axis, so further ones are folded into it and unfolded after."""
    if a.ndim <= 3:
        return fn(a)
    lead = tuple(a.shape[:-2])
    results = fn(a.reshape((-1,) + tuple(a.shape[-2:])))
    return tuple(r.reshape(lead + tuple(r.shape[1:])) for r in results)


def _seed(seed: Any) -> int:
    """A 64-bit sketch seed from None (fresh OS entropy), an int, or a numpy Generator (one draw,
    which advances it), as numpy's and scipy's ``seed``/``rng`` arguments take them."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**64, dtype=np.uint64))
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed: expected None, an integer or a numpy.random.Generator, got {type(seed).__name__}")
    return check_int(seed, "seed", low=0, high=_SEED_LIMIT)


_RSVD_METHODS = ("auto", "krylov", "subspace")
_RSVD_PRECISIONS = ("auto", "full", "bfloat16")
# (oversample, power_iters) of each method when not given. Block Krylov with one iteration and a
# block of k + 30 makes 4 passes of k + 30 columns where subspace iteration's (10, 2) makes 6 of
# k + 10, and is at least as accurate as torch.svd_lowrank(niter=2) on every spectrum of the
# tests (tests/test_rsvd_methods.py) and the benchmark (benchmarks/accuracy_time.py). A block of
# k + 20 loses to torch by a few tenths of a percent on flat (random-init) spectra.
_RSVD_DEFAULTS = {"krylov": (30, 1), "subspace": (10, 2)}


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _rsvd_params(backend, method: Any, oversample: Any, power_iters: Any, tol: Any, precision: Any, seed: Any,
                 short_side: int) -> tuple:
    """rsvd's arguments checked and completed, in the order the backends take them after k:
    oversample, power_iters, seed, method, precision, tol (0 for a fixed depth)."""
    method = _choice(method, "method", _RSVD_METHODS)
    if method == "auto":
        method = backend.RSVD_METHOD
    default_oversample, default_iters = _RSVD_DEFAULTS[method]
    oversample = default_oversample if oversample is None else check_int(oversample, "oversample", low=0)
    if isinstance(power_iters, str) and power_iters == "auto":
        if tol is None:
            raise ValueError("power_iters='auto' needs tol, the relative error ||A - U S Vh||_2 / ||A||_2 to reach")
        if method != "krylov":
            raise ValueError(f"power_iters='auto': the adaptive depth needs method='krylov', got {method!r}")
        tol = check_tolerance(tol, "tol")
        if tol == 0:
            raise ValueError("tol: expected a number > 0, got 0.0")
        power_iters = _MAX_POWER_ITERS
    else:
        if tol is not None:
            raise ValueError("tol: only used with power_iters='auto' (the adaptive depth)")
        tol = 0.0
        power_iters = default_iters if power_iters is None else check_int(power_iters, "power_iters", low=0,
                                                                            high=_MAX_POWER_ITERS)
    precision = _choice(precision, "precision", _RSVD_PRECISIONS)
    # The sketch never has more columns than the matrix's shorter side.
    return min(oversample, short_side), power_iters, _seed(seed), method, precision, tol


# --- SVDs ---------------------------------------------------------------------------------------

def rsvd(A: Any, k: int, *, method: str = "auto", oversample: int | None = None, power_iters: int | str | None = None,
         tol: float | None = None, precision: str = "auto", seed: Any = 0) -> SVDResult:
    """Truncated SVD by randomized range finding: ``A ~ U @ diag(S) @ Vh``.

    Halko, Martinsson & Tropp (SIAM Review, 2011): a Gaussian sketch of A's range, sharpened by
    passes over A, then the SVD of the small projected matrix (on the CPU in float64 whatever A's
    dtype; for float32 from its Gram matrix where that is exact to float32's rounding,
    docs/numerics.md). Two ways to spend the passes:

    - ``"subspace"`` iteration keeps the last block ``(A A^T)^q A Omega`` of ``k + oversample``
      columns, re-orthonormalised at every half-step; the error falls like
      ``(sigma_{k+1}/sigma_k)^(2q+1)``.
    - ``"krylov"`` (block Krylov; Musco & Musco, NeurIPS 2015; Tropp & Webber, 2023) keeps every
      block ``A Omega, (A A^T) A Omega, ..., (A A^T)^q A Omega`` in one orthonormal basis, for
      the same 2q + 2 passes over A: the space is q + 1 times wider and contains subspace
      iteration's, and its error falls like a Chebyshev polynomial of the spectrum of degree
      2q + 1, as if the gap sigma_k/sigma_{k+1} - 1 had its square root taken. It reaches
      subspace iteration's accuracy in fewer passes: its default, ``oversample=30,
      power_iters=1``, is at least as accurate as subspace iteration with ``(10, 2)`` and as
      ``torch.svd_lowrank(q=k+10, niter=2)`` with fewer column-passes over A (4 (k + 30)
      against 6 (k + 10)).

    ``"auto"`` is block Krylov on the CPU and subspace iteration on the GPU, which runs no other.

    Parameters
    ----------
    A : (..., M, N) array-like, CPU or CUDA tensor, or CuPy array; integers become float64.
    k : number of singular triplets, 1 <= k <= min(M, N)
    method : "auto", "krylov" or "subspace" (above).
    oversample : extra sketch (block) columns beyond k, clipped so the sketch has at most min(M, N)
        columns. Default: 30 for block Krylov, 10 for subspace iteration.
    power_iters : iterations q, at most 100; block Krylov also stops where its space would exceed
        min(M, N) dimensions or its next block is rounding noise. Default: 1 for block Krylov, 2
        for subspace iteration; raise it for slowly decaying spectra. ``"auto"`` (block Krylov,
        CPU): iterate until an a-posteriori estimate of the error certifies ``tol``, or until
        further passes cannot improve the result by that much.
    tol : with ``power_iters="auto"``, the relative error ``||A - U S Vh||_2 / ||A||_2`` to reach.
        After every block the error is bounded by 20 Gaussian probes of the residual (HMT 2011,
        Lemma 4.1: the bound fails with probability below 1e-6) combined with the truncation to
        rank k; iteration stops once that bound is at most ``tol``, or, when no rank-k
        approximation can reach ``tol`` (``sigma_{k+1} > tol sigma_1`` is certain), once the
        leading k + 1 singular values of the projected matrix move by less than ``tol sigma_1``.
    precision : the precision of the passes over A (CPU). ``"auto"``: all but the last pass in
        bfloat16 where this CPU has AVX512-BF16 (see ``vsfast.show_config()``), A has at least
        2^18 entries, and A's rounding to bfloat16 (its Frobenius norm, computed exactly) is at
        most 1/4 of a lower bound on sigma_{k+1} from the projected matrix; a spectrum that
        needs the input's precision gets it, recomputed from the start (docs/numerics.md). ``"full"``: the
        input's precision throughout. ``"bfloat16"``: bfloat16 without that check (to measure
        what it protects; needs AVX512-BF16). Products accumulate in float32; the
        orthonormalisations and the small SVD stay in the input's precision.
    seed : None (fresh entropy), an int, or a numpy.random.Generator (one draw). The same int
        gives bitwise the same result on any thread count on a given CPU, and a matrix gets the
        same result alone as inside a batch.

    Returns
    -------
    SVDResult ``(U (..., M, k), S (..., k), Vh (..., k, N))``, singular values descending.
    """
    backend, a, wrap = _matrices(A, "A")
    m, n = a.shape[-2:]
    k = check_int(k, "k", low=1, high=min(m, n))
    params = _rsvd_params(backend, method, oversample, power_iters, tol, precision, seed, min(m, n))
    u, s, vh = _stacked(lambda b: backend.rsvd(b, k, *params), a)
    return SVDResult(wrap(u), wrap(s), wrap(vh))


def svd(A: Any, full_matrices: bool = False, compute_uv: bool = True):
    """Exact SVD (LAPACK gesdd on the CPU, Jacobi on the GPU): ``A = U @ diag(S) @ Vh``.

    numpy.linalg.svd's signature, with the thin factors as the default (``full_matrices=False``):
    U (..., M, Q), S (..., Q), Vh (..., Q, N), Q = min(M, N). ``full_matrices=True`` completes U to
    (..., M, M) and Vh to (..., N, N) with orthonormal bases of the complements (computed in
    float64; any orthonormal completion is as valid as LAPACK's). ``compute_uv=False`` returns S
    alone, as numpy does (see also :func:`svdvals`).
    """
    backend, a, wrap = _matrices(A, "A")
    if not compute_uv:
        return wrap(_stacked(lambda b: (backend.svdvals(b),), a)[0])
    u, s, vh = _stacked(lambda b: _completed(backend, *backend.svd(b)) if full_matrices else backend.svd(b), a)
    return SVDResult(wrap(u), wrap(s), wrap(vh))


def _completed(backend, u, s, vh) -> tuple:
    """Thin SVD factors completed to square U and Vh by the complements of their spans."""
    m, q = u.shape[-2:]
    n = vh.shape[-1]
    if m > q:
        rest = backend.complement(backend.transpose(u), m)  # (m - q) x m orthonormal rows
        u = backend.concat([u, backend.transpose(rest)], -1)
    if n > q:
        vh = backend.concat([vh, backend.complement(vh, n)], -2)
    return u, s, vh


def svdvals(A: Any):
    """Singular values of A (..., M, N), descending: (..., min(M, N)). As
    ``svd(A, compute_uv=False)`` and numpy.linalg.svdvals."""
    return svd(A, compute_uv=False)


def _weight_spectrum(A: Any):
    """Singular values of A (..., M, N) for its metrics, descending: as svdvals, but a float32
    matrix's from its float64 Gram matrix on the CPU (the backends' ``spectrum``)."""
    backend, a, wrap = _matrices(A, "A")
    return wrap(_stacked(lambda b: (backend.spectrum(b),), a)[0])


# --- spaces -------------------------------------------------------------------------------------

class Spaces:
    """The four fundamental subspaces of a layer's weight W (m x n, output x input).

    Bases are matrices whose columns are orthonormal:

    ==================  ===================  ============  =======================
    paper's name        linear algebra       shape         alias
    ==================  ===================  ============  =======================
    ``signal``          row space            n x r         ``row_space``
    ``signal_out``      column space         m x r         ``column_space``
    ``rejected``        null space           n x (n - r)   ``null_space``
    ``rejected_out``    left null space      m x (m - r)   ``left_null_space``
    ==================  ===================  ============  =======================

    The bases live where W lived (numpy, CPU torch, or on the GPU) and have its kind. The rejected
    bases are built on first access only: projecting onto them never needs them (:func:`project`
    returns the residual). With a randomized or truncated decomposition (``k`` given), the signal
    spaces are those of the top-k part and the rejected spaces their complements.
    """

    def __init__(self, u, s, vh, rank: int, shape: tuple[int, int], method: str, wrap, backend,
                 s_host: np.ndarray):
        self._u, self._s, self._vh = u, s, vh
        self._s_host = s_host  # the singular values on the host, for the scalar properties
        self.rank = int(rank)
        self.shape = shape
        self.method = method
        self._wrap = wrap
        self._backend = backend

    def __repr__(self) -> str:
        m, n = self.shape
        return (f"Spaces(shape=({m}, {n}), rank={self.rank}, condition_number={self.condition_number:.3g}, "
                f"method={self.method!r}, dtype={self.dtype})")

    @property
    def dtype(self) -> np.dtype:
        return self._s_host.dtype

    @property
    def singular_values(self):
        """All computed singular values, descending (min(m, n) of them, or k)."""
        return self._wrap(self._s)

    @property
    def nullity(self) -> int:
        """Dimension of the null space: n - rank."""
        return self.shape[1] - self.rank

    @property
    def condition_number(self) -> float:
        """sigma_1 / sigma_r of the retained part; inf when the rank is 0."""
        s = self._s_host
        return float(s[0] / s[self.rank - 1]) if self.rank else float("inf")

    @property
    def energy_kept(self) -> float:
        """Fraction of W's squared Frobenius norm in the retained singular values (of those
        computed)."""
        s = self._s_host.astype(np.float64)
        total = float(np.sum(s**2))
        return float(np.sum(s[: self.rank] ** 2) / total) if total else 0.0

    @property
    def signal_rows(self):
        """The signal basis as r orthonormal rows (r x n), C-contiguous, of the backend: the form
        the kernels project with."""
        return self._vh[: self.rank]

    @property
    def signal_out_rows(self):
        return self._backend.transpose(self._u[:, : self.rank])

    @property
    def signal(self):
        return self._wrap(self.signal_rows.T)

    @property
    def signal_out(self):
        return self._wrap(self._u[:, : self.rank])

    @cached_property
    def _rejected_rows(self):
        return self._backend.complement(self.signal_rows, self.shape[1])

    @cached_property
    def _rejected_out_rows(self):
        return self._backend.complement(self.signal_out_rows, self.shape[0])

    def _projection_rows(self, side: str, inputs: int) -> tuple[Any, bool]:
        """The rows to project onto for a split of `inputs` vectors: the signal basis, or the
        rejected one (then True: the caller swaps the two parts) when that is smaller and its
        one-off construction, O(d^3), is paid back by the cheaper products or already done."""
        d = self.shape[1] if side == "input" else self.shape[0]
        signal = self.signal_rows if side == "input" else self.signal_out_rows
        name = "_rejected_rows" if side == "input" else "_rejected_out_rows"
        rejected_dim = d - self.rank
        cached = name in self.__dict__
        saving = inputs * d * (self.rank - rejected_dim)  # flops saved, up to a constant
        if rejected_dim < self.rank and (cached or saving > d**3):
            return getattr(self, name), True
        return signal, False

    @property
    def rejected(self):
        return self._wrap(self._rejected_rows.T)

    @property
    def rejected_out(self):
        return self._wrap(self._rejected_out_rows.T)

    row_space = signal
    column_space = signal_out
    null_space = rejected
    left_null_space = rejected_out


def _choose_method(method: str, k: int | None, m: int, n: int) -> str:
    if method not in ("auto", "exact", "randomized"):
        raise ValueError(f"method: expected 'auto', 'exact' or 'randomized', got {method!r}")
    if method == "randomized" and k is None:
        raise ValueError("method='randomized' needs k, the number of singular triplets to compute")
    if method == "auto":
        return "randomized" if k is not None and k + 10 <= _RANDOMIZED_FRACTION * min(m, n) else "exact"
    return method


def _leading(usv, k: int | None):
    """The top k triplets of an exact SVD (U, S, Vh), batched or not; all for None."""
    u, s, vh = usv
    return usv if k is None else (u[..., :k], s[..., :k], vh[..., :k, :])


def spaces(W: Any, *, k: int | None = None, rtol: float | None = None, atol: float | None = None,
           method: str = "auto", oversample: int | None = None, power_iters: int | None = None, seed: Any = 0):
    """The four fundamental subspaces of W (m x n), or of each matrix of a stack (..., m, n).

    Parameters
    ----------
    W : the weight, output x input: array-like, CPU or CUDA tensor, or CuPy array.
    k : compute only the top-k singular triplets (default: all).
    rtol, atol : rank tolerance, singular values above ``max(atol, rtol * sigma_1)`` count.
        By default rtol = max(m, n) * eps of the dtype (numpy's matrix_rank); with only atol
        given, rtol = 0.
    method : "exact" (full SVD), "randomized" (:func:`rsvd`, needs k) or "auto" (randomized when
        k is well below min(m, n), else exact).
    oversample, power_iters, seed : passed to :func:`rsvd` when it is used, with its defaults (its
        default method and precision: block Krylov, bfloat16 passes where they cost no accuracy).

    Returns
    -------
    Spaces for a 2-D W; for a stack, a list of Spaces per leading axis (nested like ``tolist()``).
    """
    backend, w, wrap = _matrices(W, "W")
    m, n = w.shape[-2:]
    if k is not None:
        k = check_int(k, "k", low=1, high=min(m, n))
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    chosen = _choose_method(method, k, m, n)
    lead = tuple(w.shape[:-2])
    flat = w.reshape((-1, m, n)) if lead else w
    if chosen == "randomized":
        params = _rsvd_params(backend, "auto", oversample, power_iters, None, "auto", seed, min(m, n))
        u, s, vh = backend.rsvd(flat, k, *params)
    else:
        u, s, vh = _leading(backend.svd(flat), k)
    s_host = backend.to_host(s)
    ranks = backend.rank(s_host, m, n, rtol, atol)
    if not lead:
        return Spaces(u, s, vh, ranks, (m, n), chosen, wrap, backend, s_host)
    each = [Spaces(u[i], s[i], vh[i], ranks[i], (m, n), chosen, wrap, backend, s_host[i])
            for i in range(math.prod(lead))]
    return _nested(each, lead)


def _spaces_of_factors(U: Any, S: Any, Vh: Any, shape: tuple[int, int], method: str, rtol: float | None,
                       atol: float | None) -> list[Spaces]:
    """Spaces of a batch of top-k SVD factors computed elsewhere (U (B, m, k), S (B, k),
    Vh (B, k, n): a matrix-free decomposition), ranked by the rank rule of :func:`spaces`."""
    backend = _backends.select(U=U)
    (u, wrap), (s, _), (vh, _) = (backend.asarray(a, name) for a, name in ((U, "U"), (S, "S"), (Vh, "Vh")))
    s_host = backend.to_host(s)
    ranks = backend.rank(s_host, *shape, rtol, atol)
    return [Spaces(u[i], s[i], vh[i], ranks[i], shape, method, wrap, backend, s_host[i]) for i in range(len(s_host))]


def _nested(items: list, lead: tuple[int, ...]) -> list:
    """A flat list of per-matrix results as nested lists following the stack's leading axes."""
    if len(lead) == 1:
        return items
    size = len(items) // lead[0]
    return [_nested(items[i * size:(i + 1) * size], lead[1:]) for i in range(lead[0])]


def project(X: Any, basis: Spaces | Any, *, side: str = "input") -> Projection:
    """Split X into the part a subspace keeps and the part it rejects, in one pass:
    ``signal = X V V^T`` and ``residual = X - signal``.

    Parameters
    ----------
    X : (..., d) inputs as rows: array-like, CPU or CUDA tensor, or CuPy array.
    basis : a :class:`Spaces` (its signal space, d = n; or with ``side="output"`` its signal
        output space, d = m), or a (d, r) matrix with orthonormal columns.
    side : "input" or "output", for a Spaces basis.

    Returns
    -------
    Projection ``(signal, residual)``, each shaped like X, of X's kind and dtype. For a layer's
    Spaces the residual is X's component in the rejected space: the layer maps it to (nearly) zero.

    When the signal space has more than half the dimensions and there are enough inputs to pay
    for building the rejected basis once (it is then kept in the Spaces), the split goes through
    the smaller rejected space: half the flops or better, with the signal part then carrying the
    rounding of one subtraction (about 2x the float32 error of the direct split, still ~1e-6).
    """
    if isinstance(basis, Spaces):
        if side not in ("input", "output"):
            raise ValueError(f"side: expected 'input' or 'output', got {side!r}")
        backend = basis._backend
        if backend is _backends.cpu and _backends.gpu.is_gpu(X):
            raise TypeError(f"basis: Spaces computed on the CPU, but X is {_backends.gpu.describe(X)}; "
                            "compute the spaces of the weight on the GPU")
        x, wrap = backend.asarray(X, "X", like=basis._s)
    else:
        backend = _backends.select(X=X, basis=basis)
        x, wrap = backend.asarray(X, "X", like=basis if _backends.gpu.is_gpu(basis) else None)
    if x.ndim < 1 or any(d == 0 for d in x.shape):
        raise ValueError(f"X: expected non-empty rows of values, got shape {tuple(x.shape)}")
    dtype = backend.dtype_of(x)
    swap = False
    if isinstance(basis, Spaces):
        rows, swap = basis._projection_rows(side, inputs=math.prod(x.shape[:-1]))
        rows = backend.asarray(rows, "basis", dtype=dtype, like=x)[0]
    else:
        cols, _ = backend.asarray(basis, "basis", dtype=dtype, like=x)
        if cols.ndim != 2 or any(d == 0 for d in cols.shape):
            raise ValueError(f"basis: expected a non-empty (d, r) matrix of orthonormal columns, "
                             f"got shape {tuple(cols.shape)}")
        rows = backend.transpose(cols)
    if rows.shape[1] != x.shape[-1]:
        raise ValueError(f"X: expected a last dimension of {rows.shape[1]} (the basis vectors' length), "
                         f"got shape {tuple(x.shape)}")
    kept, rest = backend.project(x.reshape(-1, x.shape[-1]), rows)
    signal, residual = (rest, kept) if swap else (kept, rest)
    return Projection(wrap(signal.reshape(x.shape)), wrap(residual.reshape(x.shape)))


def pinv(W: Any, *, rtol: float | None = None, atol: float | None = None):
    """Moore-Penrose pseudoinverse through the SVD: ``W+ = V_r diag(1/sigma) U_r^T`` (n x m), with
    the rank chosen as in :func:`spaces`; stacked like W."""
    backend, w, wrap = _matrices(W, "W")
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    return wrap(_stacked(lambda b: (backend.pinv(b, rtol, atol),), w)[0])


# --- chained reconstruction --------------------------------------------------------------------

_DEFAULT_PARAMS = {"identity": 0.0, "selu": 0.0, "tanh": 0.0, "sigmoid": 0.0, "elu": 1.0, "leaky_relu": 0.01}


def _activation(spec: Any, index: int) -> tuple[str, float]:
    """An activation given as a name, a (name, parameter) pair or None (identity)."""
    if spec is None:
        return "identity", 0.0
    if isinstance(spec, str):
        name, param = spec, None
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        name, param = spec
    else:
        raise TypeError(f"layers[{index}]: expected an activation name or a (name, parameter) pair, got {spec!r}")
    name = name.lower()
    if name not in _DEFAULT_PARAMS:
        raise ValueError(f"layers[{index}]: unknown activation {name!r}; expected one of {sorted(_DEFAULT_PARAMS)}")
    if param is None:
        return name, _DEFAULT_PARAMS[name]
    if name not in ("elu", "leaky_relu"):
        raise ValueError(f"layers[{index}]: activation {name!r} takes no parameter, got {param!r}")
    return name, float(check_tolerance(param, f"layers[{index}] parameter"))


class Reconstruction(NamedTuple):
    """Inputs computed from targets, and per layer (in forward order) how many target entries
    lay outside that layer's activation range and were clamped into it."""

    inputs: Any
    clamped: tuple[int, ...]


class Solution(NamedTuple):
    """Inputs found by :meth:`Chain.solve`, the Gauss-Newton steps each took, and the relative
    output error ||f(x) - y|| / ||y|| each reached."""

    inputs: Any
    steps: np.ndarray
    error: np.ndarray


class BoxSolution(NamedTuple):
    """Inputs found by :meth:`Chain.solve_box`, the Gauss-Newton steps each took, the relative
    output error each reached, and each one's box violation: the largest distance of an input
    value outside the box, 0 for inputs inside it (then every value lies in the box exactly)."""

    inputs: Any
    steps: np.ndarray
    error: np.ndarray
    violation: np.ndarray


def _reference_layers(value: Any) -> bool:
    """reference_layers as the kernels take it: True for "all", False for "first"."""
    if value not in ("all", "first"):
        raise ValueError(f"reference_layers: expected 'all' or 'first', got {value!r}")
    return value == "all"


class Chain:
    """A network of layers ``h = act(h @ W.T + b)`` with every factor for going backwards
    precomputed: build it once, then :meth:`reconstruct` any number of targets at the cost of one
    matrix product per layer, and :meth:`solve` those whose preimage leaves an activation's range.

    The chain computes where its weights live: on the CPU for numpy arrays and CPU tensors, on the
    GPU for torch CUDA tensors and CuPy arrays (:meth:`solve` and :meth:`solve_box` are CPU-only).

    Parameters
    ----------
    layers : sequence of ``(W, b, activation)``: W (m x n) of the layer, b (m,) or None, and the
        activation applied after it: ``"identity"``, ``"selu"``, ``"elu"``, ``"tanh"``,
        ``"sigmoid"``, ``"leaky_relu"`` (torch's default parameters) or a ``(name, parameter)``
        pair such as ``("leaky_relu", 0.2)``; None means identity.
    dtype : float32 or float64 (default: the first weight's).
    rtol, atol : rank tolerance of each layer's pseudoinverse, as in :func:`spaces`.
    """

    def __init__(self, layers: Sequence[Any], *, dtype: Any = None, rtol: float | None = None,
                 atol: float | None = None):
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise TypeError("layers: expected a non-empty sequence of (W, b, activation) triples")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (tuple, list)) or len(layer) != 3:
                raise TypeError(f"layers[{i}]: expected a (W, b, activation) triple, got {type(layer).__name__}")
        self._backend = _backends.select(**{f"layers[{i}].weight": layer[0] for i, layer in enumerate(layers)})
        self._like = None  # the first weight: later arrays must share its kind and device
        specs: list[tuple] = []
        for i, layer in enumerate(layers):
            specs.append(self._layer(i, layer, dtype, specs))
            if i == 0:
                dtype, self._like = self._backend.dtype_of(specs[0][0]), specs[0][0]
        self.dtype = np.dtype(dtype)
        self.activations = tuple((name, param) for _, _, name, param in specs)
        self._engine = self._backend.chain(specs, check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol"))

    def _layer(self, i: int, layer: Sequence[Any], dtype: Any, before: list[tuple]) -> tuple:
        """Layer i as (W, b, activation, parameter), arrays of the chain's backend and dtype."""
        w, _ = self._backend.asarray(layer[0], f"layers[{i}].weight", dtype=dtype, like=self._like)
        if w.ndim != 2 or any(d == 0 for d in w.shape):
            raise ValueError(f"layers[{i}].weight: expected a non-empty 2-D array, got shape {tuple(w.shape)}")
        if before and w.shape[1] != before[-1][0].shape[0]:
            raise ValueError(f"layers: layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives "
                             f"{before[-1][0].shape[0]} outputs")
        b = None
        if layer[1] is not None:
            b, _ = self._backend.asarray(layer[1], f"layers[{i}].bias", dtype=self._backend.dtype_of(w), like=w)
            if tuple(b.shape) != (w.shape[0],):
                raise ValueError(f"layers[{i}].bias: expected {w.shape[0]} values, got shape {tuple(b.shape)}")
        return (w, b, *_activation(layer[2], i))

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(int(r) for r in self._engine.ranks)

    @property
    def input_dim(self) -> int:
        return self._engine.input_dim

    @property
    def output_dim(self) -> int:
        return self._engine.output_dim

    @property
    def rounding_level(self) -> float:
        """The relative output error :meth:`solve` stops at by default: 100 eps of the dtype."""
        return 100 * float(np.finfo(self.dtype).eps)

    def _rows(self, X: Any, name: str, width: int, *, cast: bool = False):
        """X (a row or rows of `width` values) as a 2-D array of the chain's backend and dtype, the
        function giving results X's kind, and whether X was one row."""
        x, wrap = self._backend.asarray(X, name, dtype=self.dtype if cast else None, like=self._like)
        if self._backend.dtype_of(x) != self.dtype:
            raise TypeError(f"{name}: expected the chain's dtype {self.dtype}, got {self._backend.dtype_of(x)}")
        if x.ndim not in (1, 2) or x.shape[-1] != width or x.shape[0] == 0:
            raise ValueError(f"{name}: expected rows of {width} values, got shape {tuple(x.shape)}")
        return x.reshape(-1, width), wrap, x.ndim == 1

    def _reference(self, reference: Any, targets: int):
        if reference is None:
            return None
        ref = self._rows(reference, "reference", self.input_dim, cast=True)[0]
        if ref.shape[0] not in (1, targets):
            raise ValueError(f"reference: expected 1 or {targets} rows of {self.input_dim} values, got shape "
                             f"{tuple(ref.shape)}")
        return ref

    def reconstruct(self, Y: Any, *, reference: Any = None, reference_layers: str = "first") -> Reconstruction:
        """Inputs X (N x n_0) whose outputs are Y (N x m_L): backwards through every layer,
        invert the activation, subtract the bias and apply W^+.

        Without a reference the answer is the minimum-norm one at every layer. A ``reference``
        (one input, or one per target; converted to the chain's dtype) fills rejected spaces the
        network cannot see, so the outputs stay Y: with ``reference_layers="first"`` (default)
        the first layer's, so the inputs resemble the reference; with ``"all"`` every layer's,
        with the reference's own activations there, so the hidden values resemble the
        reference's too (targets equal to the reference's outputs give back the reference).
        Targets outside an activation's range are clamped into it (with a relative margin of
        sqrt(eps)), counted per layer and reported with a :class:`RangeWarning`.
        """
        every_layer = _reference_layers(reference_layers)
        y, wrap, single = self._rows(Y, "Y", self.output_dim)
        x, clamped = self._engine.reconstruct(y, self._reference(reference, y.shape[0]), every_layer)
        clamped = tuple(int(c) for c in clamped)
        if any(clamped):
            where = ", ".join(f"layer {i}: {c}" for i, c in enumerate(clamped) if c)
            warnings.warn(f"targets outside the activation range were clamped ({where})", RangeWarning,
                          stacklevel=2)
        return Reconstruction(wrap(x[0] if single else x), clamped)

    def solve(self, Y: Any, *, reference: Any = None, reference_layers: str = "first", tol: float | None = None,
              max_iter: int = 100) -> Solution:
        """Inputs X (N x n_0) whose outputs are Y, found through the forward map, which never
        leaves an activation's range: for targets whose :meth:`reconstruct` preimage had to be
        clamped.

        Gauss-Newton in the first layer's row space: every step is the minimum-norm solution of
        the linearised chain, halved until the target's error drops, so X stays near where it
        started. As in :meth:`reconstruct`, X keeps the ``reference``'s part (one input, or one
        per target) in the first layer's rejected space; its row-space part starts at 0 with
        ``reference_layers="first"`` (X then stays near the minimum-norm answer plus that part)
        and at the reference's with ``"all"`` (X, and the values inside the chain, stay near the
        reference's: the choice for targets near the reference's outputs). The chain's Jacobian
        is computed exactly at the start and where a step failed, and updated by Broyden's
        rank-one formula in between. A target stops at a relative output error of ``tol``
        (default 100 eps of the chain's dtype, its rounding level), when no step lowers its error
        any more (Gauss-Newton can stall in a local minimum of the residual where activations
        saturate), or after ``max_iter`` steps.

        Returns a :class:`Solution` (inputs, steps, error).
        """
        from_reference = _reference_layers(reference_layers)
        y, wrap, single = self._rows(Y, "Y", self.output_dim)
        tol = self.rounding_level if tol is None else check_tolerance(tol, "tol")
        max_iter = check_int(max_iter, "max_iter", low=0, high=2**63 - 1)
        x, steps, error = self._engine.solve(y, self._reference(reference, y.shape[0]), from_reference, tol, max_iter)
        return Solution(wrap(x[0] if single else x), steps, error)

    def solve_box(self, Y: Any, *, box: tuple[float, float] = (0.0, 1.0), reference: Any = None,
                  tol: float | None = None, max_iter: int = 30) -> BoxSolution:
        """Inputs X (N x n_0) with every value inside ``box`` = (low, high) whose outputs are Y,
        nearest the ``reference`` (one input, or one per target; None: the origin, so the
        smallest inputs): ``min ||x - reference||`` subject to ``f(x) = y`` and the box, through the
        whole chain, so every layer's rejected space is free.

        Projected Gauss-Newton: each step projects the reference onto the box cut by the
        linearised chain, a quadratic program with one equality row per output, solved in its
        dual by semismooth Newton (an active-set method on the handful of multipliers). For one
        layer the first step is exact. A target whose preimages all leave the box is solved with
        the box made a steep penalty instead: its answer leaves the box by as little as the
        method finds, and ``violation`` says by how much. The method is local: from a far
        reference it finds a nearby preimage, not necessarily the nearest one of all.

        A target stops at a relative output error of ``tol`` (default the chain's rounding level)
        once a step no longer moves it by a thousandth of its distance to the reference, when no
        step helps any more, or after ``max_iter`` steps. CPU only. Returns a
        :class:`BoxSolution` (inputs, steps, error, violation).
        """
        y, wrap, single = self._rows(Y, "Y", self.output_dim)
        low, high = _box(box)
        tol = self.rounding_level if tol is None else check_tolerance(tol, "tol")
        max_iter = check_int(max_iter, "max_iter", low=0, high=2**63 - 1)
        x, steps, error, violation = self._engine.solve_box(y, self._reference(reference, y.shape[0]), low, high, tol,
                                                            max_iter)
        return BoxSolution(wrap(x[0] if single else x), steps, error, violation)

    def forward(self, X: Any):
        """The chain's outputs for inputs X (N x n_0)."""
        x, wrap, single = self._rows(X, "X", self.input_dim)
        y = self._engine.forward(x)
        return wrap(y[0] if single else y)


def _box(box: Any) -> tuple[float, float]:
    """box as finite (low, high) floats with low < high, or a ValueError saying what was expected."""
    try:
        low, high = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box: expected a (low, high) pair of numbers, got {box!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"box: expected finite bounds with low < high, got {box!r}")
    return low, high


def reconstruct(layers: Sequence[Any], Y: Any, *, reference: Any = None, reference_layers: str = "first",
                rtol: float | None = None, atol: float | None = None) -> Reconstruction:
    """Inputs whose outputs through ``layers`` are Y; see :class:`Chain` and
    :meth:`Chain.reconstruct`. Computed in Y's dtype. Build a :class:`Chain` instead to reuse the
    factors across calls."""
    backend = _backends.select(Y=Y)
    y, _ = backend.asarray(Y, "Y")
    chain = Chain(layers, dtype=backend.dtype_of(y), rtol=rtol, atol=atol)
    return chain.reconstruct(Y, reference=reference, reference_layers=reference_layers)
