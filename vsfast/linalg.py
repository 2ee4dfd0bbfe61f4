"""Linear algebra on layers: SVDs, the four fundamental subspaces, projections, pseudoinverses
and the chained reconstruction of inputs from outputs.

Every function validates and converts its arguments, then hands the work to the compiled core
(``vsfast._core``), which releases the GIL. Vectors are rows and batches come first, as in numpy
and torch; results have the kind (numpy array or torch tensor) and dtype of the main argument.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import _core
from ._arrays import as_core_array, check_int, check_tolerance

__all__ = [
    "rsvd", "svd", "Spaces", "spaces", "project", "pinv", "Chain", "Reconstruction", "Solution",
    "reconstruct", "RangeWarning", "LinAlgError", "get_num_threads", "set_num_threads",
]

LinAlgError = _core.LinAlgError


def get_num_threads() -> int:
    """Threads vsfast's kernels use (default: what OpenBLAS detects, or VSFAST_NUM_THREADS)."""
    return _core.get_num_threads()


def set_num_threads(threads: int) -> None:
    """Set the threads vsfast's kernels use. Results are bitwise the same on any thread count."""
    _core.set_num_threads(check_int(threads, "threads", low=1))

# Below this many singular triplets per matrix dimension, "auto" switches to the randomized SVD.
_RANDOMIZED_FRACTION = 0.25
_SEED_LIMIT = 2**64 - 1
# Beyond a few dozen iterations rounding, not the spectrum, limits the accuracy: more only hangs.
_MAX_POWER_ITERS = 100


class RangeWarning(RuntimeWarning):
    """Targets fell outside an activation's range and were clamped into it."""


def _matrix(A: Any, name: str = "A"):
    return as_core_array(A, name, ndims=(2, 3))


def _rsvd_params(oversample: Any, power_iters: Any, seed: Any, short_side: int) -> tuple[int, int, int]:
    # The sketch never has more columns than the matrix's shorter side.
    return (min(check_int(oversample, "oversample", low=0), short_side),
            check_int(power_iters, "power_iters", low=0, high=_MAX_POWER_ITERS),
            check_int(seed, "seed", low=0, high=_SEED_LIMIT))


def rsvd(A: Any, k: int, *, oversample: int = 10, power_iters: int = 2, seed: int = 0):
    """Truncated SVD by randomized range finding: ``A ~ U @ diag(S) @ Vh``.

    Halko, Martinsson & Tropp (SIAM Review, 2011): a Gaussian sketch with ``k + oversample``
    columns captures A's dominant range; each power iteration raises the spectrum to a higher
    power (error ~ (sigma_{k+1}/sigma_k)^(2q+1) for q iterations), with re-orthonormalisation at
    every half-step so that float32 keeps its accuracy. The small projected matrix then gets an
    exact SVD, on the CPU in float64 whatever A's dtype (float32 divide and conquer would put
    spurious singular values at ~64 eps sigma_1). For slowly decaying spectra raise
    ``power_iters``; ``oversample`` of 5-10 is usually enough.

    Parameters
    ----------
    A : (m, n) or (batch, m, n) float32/float64 array or CPU tensor
    k : number of singular triplets, 1 <= k <= min(m, n)
    oversample : extra sketch columns (clipped so the sketch has at most min(m, n) columns)
    power_iters : power iterations, at most 100
    seed : the sketch's seed; the same seed gives the same result on any thread count, and a
        matrix gets the same result alone as inside a batch.

    Returns
    -------
    U (m, k), S (k,), Vh (k, n), batched like A, singular values in descending order.
    """
    if _gpu.wants(A):
        return _gpu.rsvd(A, k, oversample=oversample, power_iters=power_iters, seed=seed)
    a, wrap = _matrix(A)
    k = check_int(k, "k", low=1, high=min(a.shape[-2:]))
    u, s, vh = _core.rsvd(a, k, *_rsvd_params(oversample, power_iters, seed, min(a.shape[-2:])))
    return wrap(u), wrap(s), wrap(vh)


def svd(A: Any):
    """Exact thin SVD (LAPACK gesdd): ``A = U @ diag(S) @ Vh`` with U (m, q), S (q,), Vh (q, n),
    q = min(m, n); batched like A."""
    if _gpu.wants(A):
        return _gpu.svd(A)
    a, wrap = _matrix(A)
    u, s, vh = _core.svd(a)
    return wrap(u), wrap(s), wrap(vh)


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

    The rejected bases are built on first access only: projecting onto them never needs them
    (:func:`project` returns the residual). With a randomized or truncated decomposition (``k``
    given), the signal spaces are those of the top-k part and the rejected spaces their
    complements.
    """

    def __init__(self, u: np.ndarray, s: np.ndarray, vh: np.ndarray, rank: int, shape: tuple[int, int],
                 method: str, wrap):
        self._u, self._s, self._vh = u, s, vh
        self.rank = int(rank)
        self.shape = shape
        self.method = method
        self._wrap = wrap

    def __repr__(self) -> str:
        m, n = self.shape
        return (f"Spaces(shape=({m}, {n}), rank={self.rank}, condition_number={self.condition_number:.3g}, "
                f"method={self.method!r}, dtype={self._s.dtype})")

    @property
    def dtype(self) -> np.dtype:
        return self._s.dtype

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
        return float(self._s[0] / self._s[self.rank - 1]) if self.rank else float("inf")

    @property
    def energy_kept(self) -> float:
        """Fraction of W's squared Frobenius norm in the retained singular values (of those
        computed)."""
        total = float(np.sum(self._s.astype(np.float64) ** 2))
        return float(np.sum(self._s[: self.rank].astype(np.float64) ** 2) / total) if total else 0.0

    @property
    def signal_rows(self) -> np.ndarray:
        """The signal basis as r orthonormal rows (r x n), C-contiguous numpy: the form the core
        projects with."""
        return self._vh[: self.rank]

    @property
    def signal_out_rows(self) -> np.ndarray:
        return np.ascontiguousarray(self._u[:, : self.rank].T)

    @property
    def signal(self):
        return self._wrap(self.signal_rows.T)

    @property
    def signal_out(self):
        return self._wrap(self._u[:, : self.rank])

    # Complements are computed in float64 whatever the dtype: a float32 complement is orthogonal
    # to the signal basis only to ~1e-7 * sqrt(d), which would show in every projection onto it.
    @cached_property
    def _rejected_rows(self) -> np.ndarray:
        return _complement(self.signal_rows, self.shape[1])

    @cached_property
    def _rejected_out_rows(self) -> np.ndarray:
        return _complement(self.signal_out_rows, self.shape[0])

    def _projection_rows(self, side: str, inputs: int) -> tuple[np.ndarray, bool]:
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


def _complement(rows: np.ndarray, d: int) -> np.ndarray:
    return _core.complement(rows.astype(np.float64), d).astype(rows.dtype, copy=False)


def _choose_method(method: str, k: int | None, m: int, n: int) -> str:
    if method not in ("auto", "exact", "randomized"):
        raise ValueError(f"method: expected 'auto', 'exact' or 'randomized', got {method!r}")
    if method == "randomized" and k is None:
        raise ValueError("method='randomized' needs k, the number of singular triplets to compute")
    if method == "auto":
        return "randomized" if k is not None and k + 10 <= _RANDOMIZED_FRACTION * min(m, n) else "exact"
    return method


def _spaces_request(m: int, n: int, k: Any, rtol: Any, atol: Any, method: Any, oversample: Any,
                    power_iters: Any, seed: Any):
    """spaces()'s arguments checked for an m x n W: (k, rtol, atol, the method chosen, and rsvd's
    (oversample, power_iters, seed) when that method is "randomized", else None)."""
    if k is not None:
        k = check_int(k, "k", low=1, high=min(m, n))
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    chosen = _choose_method(method, k, m, n)
    params = _rsvd_params(oversample, power_iters, seed, min(m, n)) if chosen == "randomized" else None
    return k, rtol, atol, chosen, params


def _leading(usv, k: int | None):
    """The top k triplets of an exact SVD (U, S, Vh), numpy or torch, batched or not; all for None."""
    u, s, vh = usv
    return usv if k is None else (u[..., :k], s[..., :k], vh[..., :k, :])


def spaces(W: Any, *, k: int | None = None, rtol: float | None = None, atol: float | None = None,
           method: str = "auto", oversample: int = 10, power_iters: int = 2, seed: int = 0):
    """The four fundamental subspaces of W (m x n), or of each matrix of a batch (b x m x n).

    Parameters
    ----------
    W : the weight, output x input, float32/float64 array or CPU tensor.
    k : compute only the top-k singular triplets (default: all).
    rtol, atol : rank tolerance, singular values above ``max(atol, rtol * sigma_1)`` count.
        By default rtol = max(m, n) * eps of the dtype (numpy's matrix_rank); with only atol
        given, rtol = 0.
    method : "exact" (LAPACK gesdd), "randomized" (:func:`rsvd`, needs k) or "auto"
        (randomized when k is well below min(m, n), else exact).
    oversample, power_iters, seed : passed to :func:`rsvd` when it is used.

    Returns
    -------
    Spaces for a 2-D W; a list of Spaces, one per matrix, for a batch.
    """
    if _gpu.wants(W):
        return _gpu.spaces(W, k=k, rtol=rtol, atol=atol, method=method, oversample=oversample,
                           power_iters=power_iters, seed=seed)
    w, wrap = _matrix(W, "W")
    m, n = w.shape[-2:]
    k, rtol, atol, chosen, params = _spaces_request(m, n, k, rtol, atol, method, oversample, power_iters, seed)
    if chosen == "randomized":
        u, s, vh = _core.rsvd(w, k, *params)
    else:
        u, s, vh = _leading(_core.svd(w), k)
    ranks = _core.rank(np.ascontiguousarray(s), m, n, rtol, atol)
    if w.ndim == 2:
        return Spaces(u, s, vh, ranks, (m, n), chosen, wrap)
    return [Spaces(u[i], s[i], vh[i], ranks[i], (m, n), chosen, wrap) for i in range(w.shape[0])]


def project(X: Any, basis: Spaces | Any, *, side: str = "input"):
    """Split X into the part a subspace keeps and the part it rejects, in one pass:
    ``signal = X V V^T`` and ``residual = X - signal``.

    Parameters
    ----------
    X : (..., d) inputs as rows, float32/float64 array or CPU tensor.
    basis : a :class:`Spaces` (its signal space, d = n; or with ``side="output"`` its signal
        output space, d = m), or a (d, r) matrix with orthonormal columns.
    side : "input" or "output", for a Spaces basis.

    Returns
    -------
    (signal, residual), each shaped like X, of X's kind and dtype. For a layer's Spaces the
    residual is X's component in the rejected space: the layer maps it to (nearly) zero.

    When the signal space has more than half the dimensions and there are enough inputs to pay
    for building the rejected basis once (it is then kept in the Spaces), the split goes through
    the smaller rejected space: half the flops or better, with the signal part then carrying the
    rounding of one subtraction (about 2x the float32 error of the direct split, still ~1e-6).
    """
    if _gpu.wants(X) or isinstance(basis, _gpu.GpuSpaces):
        return _gpu.project(X, basis, side=side)
    x, wrap = as_core_array(X, "X", ndims=tuple(range(1, 33)))
    swap = False
    if isinstance(basis, Spaces):
        if side not in ("input", "output"):
            raise ValueError(f"side: expected 'input' or 'output', got {side!r}")
        rows, swap = basis._projection_rows(side, inputs=x.size // max(x.shape[-1], 1))
    else:
        cols, _ = as_core_array(basis, "basis", ndims=(2,), dtype=x.dtype)
        rows = cols.T
    if rows.shape[1] != x.shape[-1]:
        raise ValueError(f"X: expected a last dimension of {rows.shape[1]} (the basis vectors' length), "
                         f"got shape {x.shape}")
    rows = np.ascontiguousarray(rows, dtype=x.dtype)
    kept, rest = _core.project(x.reshape(-1, x.shape[-1]), rows)
    signal, residual = (rest, kept) if swap else (kept, rest)
    return wrap(signal.reshape(x.shape)), wrap(residual.reshape(x.shape))


def pinv(W: Any, *, rtol: float | None = None, atol: float | None = None):
    """Moore-Penrose pseudoinverse through the SVD: ``W+ = V_r diag(1/sigma) U_r^T`` (n x m), with
    the rank chosen as in :func:`spaces`; batched like W."""
    if _gpu.wants(W):
        return _gpu.pinv(W, rtol=rtol, atol=atol)
    w, wrap = _matrix(W, "W")
    p, _ = _core.pinv(w, check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol"))
    return wrap(p)


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


class Chain:
    """A network of layers ``h = act(h @ W.T + b)`` with every factor for going backwards
    precomputed: build it once, then :meth:`reconstruct` any number of targets at the cost of one
    matrix product per layer, and :meth:`solve` those whose preimage leaves an activation's range.

    Parameters
    ----------
    layers : sequence of ``(W, b, activation)``: W (m x n) of the layer, b (m,) or None, and the
        activation applied after it: ``"identity"``, ``"selu"``, ``"elu"``, ``"tanh"``,
        ``"sigmoid"``, ``"leaky_relu"`` (torch's default parameters) or a ``(name, parameter)``
        pair such as ``("leaky_relu", 0.2)``; None means identity.
    dtype : float32 or float64 (default: the first weight's).
    rtol, atol : rank tolerance of each layer's pseudoinverse, as in :func:`spaces`.
    """

    def __new__(cls, layers: Sequence[Any] = (), **kwargs: Any):
        # Layers on the GPU make a GPU chain (vsfast._gpu.GpuChain, a subclass).
        return super().__new__(_gpu.GpuChain if cls is Chain and _gpu.wants_layers(layers) else cls)

    def __init__(self, layers: Sequence[Any], *, dtype: Any = None, rtol: float | None = None,
                 atol: float | None = None):
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise TypeError("layers: expected a non-empty sequence of (W, b, activation) triples")
        specs = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, (tuple, list)) or len(layer) != 3:
                raise TypeError(f"layers[{i}]: expected a (W, b, activation) triple, got {type(layer).__name__}")
            w, _ = as_core_array(layer[0], f"layers[{i}].weight", ndims=(2,), dtype=dtype)
            if i == 0:
                dtype = w.dtype
            b = None if layer[1] is None else as_core_array(layer[1], f"layers[{i}].bias", ndims=(1,),
                                                            dtype=dtype)[0]
            specs.append((w, b, *_activation(layer[2], i)))
        self.dtype = np.dtype(dtype)
        self.activations = tuple((name, param) for _, _, name, param in specs)
        core_class = _core.ChainF32 if self.dtype == np.float32 else _core.ChainF64
        self._chain = core_class(specs, check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol"))

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(self._chain.ranks)

    @property
    def input_dim(self) -> int:
        return self._chain.input_dim

    @property
    def rounding_level(self) -> float:
        """The relative output error :meth:`solve` stops at by default: 100 eps of the dtype."""
        return 100 * float(np.finfo(self.dtype).eps)

    @property
    def output_dim(self) -> int:
        return self._chain.output_dim

    def _rows(self, X: Any, name: str, width: int, *, cast: bool = False):
        x, wrap = as_core_array(X, name, ndims=(1, 2), dtype=self.dtype if cast else None)
        if x.dtype != self.dtype:
            raise TypeError(f"{name}: expected the chain's dtype {self.dtype}, got {x.dtype}")
        if x.shape[-1] != width:
            raise ValueError(f"{name}: expected rows of {width} values, got shape {x.shape}")
        return x.reshape(-1, width), wrap, x.ndim == 1

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
        if reference_layers not in ("all", "first"):
            raise ValueError(f"reference_layers: expected 'all' or 'first', got {reference_layers!r}")
        y, wrap, single = self._rows(Y, "Y", self.output_dim)
        ref = None if reference is None else self._rows(reference, "reference", self.input_dim, cast=True)[0]
        x, clamped = self._chain.reconstruct(y, ref, reference_layers == "all")
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
        if reference_layers not in ("all", "first"):
            raise ValueError(f"reference_layers: expected 'all' or 'first', got {reference_layers!r}")
        y, wrap, single = self._rows(Y, "Y", self.output_dim)
        ref = None if reference is None else self._rows(reference, "reference", self.input_dim, cast=True)[0]
        tol = self.rounding_level if tol is None else check_tolerance(tol, "tol")
        x, steps, error = self._chain.solve(y, ref, reference_layers == "all", tol,
                                            check_int(max_iter, "max_iter", low=0, high=2**63 - 1))
        return Solution(wrap(x[0] if single else x), steps, error)

    def forward(self, X: Any):
        """The chain's outputs for inputs X (N x n_0)."""
        x, wrap, single = self._rows(X, "X", self.input_dim)
        y = self._chain.forward(x)
        return wrap(y[0] if single else y)


def reconstruct(layers: Sequence[Any], Y: Any, *, reference: Any = None, reference_layers: str = "first",
                rtol: float | None = None, atol: float | None = None) -> Reconstruction:
    """Inputs whose outputs through ``layers`` are Y; see :class:`Chain` and
    :meth:`Chain.reconstruct`. Computed in Y's dtype. Build a :class:`Chain` instead to reuse the
    factors across calls."""
    if _gpu.wants(Y):
        return _gpu.reconstruct(layers, Y, reference=reference, reference_layers=reference_layers, rtol=rtol,
                                atol=atol)
    y, _ = as_core_array(Y, "Y", ndims=(1, 2))
    chain = Chain(layers, dtype=y.dtype, rtol=rtol, atol=atol)
    return chain.reconstruct(Y, reference=reference, reference_layers=reference_layers)


# The GPU path (torch CUDA tensors, CuPy arrays) builds on the classes above: imported last.
from . import _gpu  # noqa: E402
