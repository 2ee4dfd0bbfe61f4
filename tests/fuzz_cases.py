"""Fuzz cases over vsfast's public entry points and its command, run by tests/test_fuzz.py.

Each target runs in its own process, so that a crash fails one test and names the case that
caused it instead of killing the test runner:

    python tests/fuzz_cases.py rsvd --examples 300 --log case.txt

Every case either returns a result that is checked against a float64 reference or raises one of
the documented exceptions with a message; anything else (another exception, a crash, a NaN
handed back) fails. The process prints ``cases: N`` at the end; ``--log`` holds the case being
run, so that after a crash it is the one that crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vsfast
from vsfast.mnist.data import DataError
from vsfast.inverse import class_targets, onehot_targets, row_norms

# What vsfast documents it raises for bad input, results beyond the dtype, impossible sizes, and
# files that are missing or damaged.
DOCUMENTED = (TypeError, ValueError, OverflowError, MemoryError, OSError, DataError)

FLOAT = (np.float32, np.float64)
DTYPES = (np.bool_, np.int8, np.uint8, np.int32, np.int64, np.uint64, np.float16, np.float32, np.float64,
          np.longdouble, np.complex64, np.complex128, np.object_, np.str_, "M8[s]")
SPECIALS = (0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1e-310, 1e-40, 1e-30, 1e30, 1e38, 3e38, 1e300, 1.7e308)
LAYOUTS = ("plain", "plain", "fortran", "strided", "reversed", "readonly", "swapped", "tensor", "tensor-grad",
           "tensor-strided", "meta", "list", "scalar")
SIZES = (0, 1, 1, 2, 3, 5, 8, 17)
INTS = st.one_of(st.integers(-3, 20), st.sampled_from([2**31, 2**63, 2**64, 2**70, -(2**63)]),
                 st.sampled_from([1.0, True, None, "3", np.int64(2)]))

_log: Path | None = None
_cases = 0


MATRIX = range(2, 33)  # (..., M, N): any number of leading axes, as numpy.linalg takes them


def computes_in(dtype) -> np.dtype | None:
    """The dtype vsfast computes in for values of `dtype`, as numpy.linalg chooses it: float32 and
    float64 as they are, integers and booleans as float64; None for what it refuses."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return dtype.newbyteorder("=")
    return np.dtype(np.float64) if dtype.kind in "biu" else None


class Array:
    """A generated argument: what is passed, the dtype vsfast computes in for it (None where it
    refuses the kind), and its values in float64 when it has that dtype, else None."""

    def __init__(self, obj, values: np.ndarray | None, torch_kind: bool, dtype: np.dtype | None = None):
        self.obj, self.values, self.torch, self.dtype = obj, values, torch_kind, dtype

    @classmethod
    def converted(cls, obj) -> "Array":
        """obj (not a tensor) with the values numpy's conversion gives it."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                conv = np.asarray(obj)
            except (TypeError, ValueError):
                return cls(obj, None, False)
        dtype = computes_in(conv.dtype)
        return cls(obj, conv.astype(np.float64) if dtype is not None else None, False, dtype)

    def __repr__(self) -> str:
        shape = getattr(self.obj, "shape", None)
        small = f", values={self.values.tolist()}" if self.values is not None and self.values.size <= 25 else ""
        return f"Array({type(self.obj).__name__}, shape={shape}, dtype={getattr(self.obj, 'dtype', None)}{small})"

    def valid(self, ndims) -> bool:
        v = self.values
        return v is not None and v.ndim in ndims and v.size > 0 and bool(np.isfinite(v).all())


def _torch():
    import torch

    return torch


@st.composite
def arrays(draw, ndim=st.integers(0, 4), shape=None, float_bias: float = 0.7, specials: bool = True):
    shape = shape if shape is not None else tuple(draw(st.sampled_from(SIZES)) for _ in range(draw(ndim)))
    floating = draw(st.floats(0, 1)) < float_bias
    dtype = np.dtype(draw(st.sampled_from(FLOAT if floating else DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1.0, 1e-20, 1e20, 1e-300, 1e300])))
    if specials and values.size and draw(st.booleans()):
        flat = values.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[rng.integers(flat.size)] = draw(st.sampled_from(SPECIALS))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            a = values.astype(dtype)
        except (TypeError, ValueError):
            a = np.zeros(shape, dtype)
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "reversed" and a.ndim:
        a = a[..., ::-1]
    elif layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
    elif layout == "swapped" and a.dtype.kind in "fiuc":
        a = a.astype(a.dtype.newbyteorder())
    elif layout == "list":
        return Array.converted(a.tolist())
    elif layout == "scalar":
        return Array.converted(draw(st.sampled_from([1.0, 3, None, "A", b"A"])))
    elif layout.startswith("tensor") or layout == "meta":
        torch = _torch()
        if a.dtype.kind not in "fiucb" or a.dtype == np.uint64 or a.dtype == np.longdouble:
            return Array.converted(a)
        t = torch.from_numpy(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("=")))
        if layout == "meta":
            return Array(t.to("meta"), None, True)
        if layout == "tensor-grad" and t.is_floating_point():
            t.requires_grad_(True)
        if layout == "tensor-strided" and t.ndim:
            t = torch.repeat_interleave(t, 2, dim=-1)[..., ::2]
        dtype = computes_in(a.dtype)
        return Array(t, np.asarray(t.detach(), np.float64) if dtype is not None else None, True, dtype)
    return Array.converted(a)


def matrices(ndims=(2, 3), **kwargs):
    """Arrays that are mostly valid matrices, with every kind of invalid one among them."""
    valid_shape = st.builds(lambda dims: tuple(dims), st.lists(st.sampled_from(SIZES[1:]), min_size=2, max_size=3))
    return st.one_of(arrays(shape=None, **kwargs), valid_shape.flatmap(lambda s: arrays(shape=s, **kwargs)))


# ------------------------------------------------------------------------------ checks

REFUSED = object()


def run(case: str, fn, *args, **kwargs):
    """fn's result, or REFUSED when it raised a documented exception with a message."""
    global _cases
    _cases += 1
    if _log is not None:
        _log.write_text(case)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except DOCUMENTED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return REFUSED


def as64(x) -> np.ndarray:
    x = x.detach() if hasattr(x, "detach") else x
    return np.asarray(x, dtype=np.float64)


def eps_of(arr: Array) -> float:
    return float(np.finfo(arr.dtype).eps)


def dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "") if hasattr(x, "detach") else np.dtype(x.dtype).newbyteorder("=").name


def same_kind(result, arr: Array) -> None:
    assert hasattr(result, "detach") == arr.torch, "results have the input's kind"
    assert dtype_name(result) == arr.dtype.name, "results have the dtype numpy.linalg computes the input in"


def orthonormal(q: np.ndarray, tol: float) -> None:
    eye = np.eye(q.shape[-1])
    defect = np.abs(np.swapaxes(q, -1, -2) @ q - eye).max() if q.shape[-1] else 0.0
    assert defect <= tol, f"columns not orthonormal: {defect:.3g}"


def refused_or(result, expect_ok: bool, arr: Array | None = None) -> bool:
    """True when result must be checked; fails when a valid call was refused without cause or
    an invalid one accepted."""
    if result is REFUSED:
        if expect_ok and arr is not None and arr.values is not None:
            # Refusing valid input is allowed only for a result beyond the dtype.
            big = np.abs(arr.values).max() * np.sqrt(arr.values.size) if arr.values.size else 0
            tiny = np.abs(arr.values[arr.values != 0]).min() if np.any(arr.values != 0) else 1
            assert big > 1e30 or tiny < 1e-30, "a valid call was refused"
        return False
    assert expect_ok, "an invalid call was accepted"
    return True


# ------------------------------------------------------------------------------ targets

def fuzz_rsvd(examples):
    @given(A=matrices(), k=INTS, oversample=INTS, power_iters=INTS, seed=INTS)
    @settings(max_examples=examples, **SETTINGS)
    def case(A, k, oversample, power_iters, seed):
        out = run(repr((A, k, oversample, power_iters, seed)), vsfast.rsvd, A.obj, k, oversample=oversample,
                  power_iters=power_iters, seed=seed)
        # None is each option's default (seed=None: fresh entropy), as in numpy.
        ok = A.valid(MATRIX) and type(k) in (int, np.int64) and 1 <= k <= min(A.values.shape[-2:])
        ok = ok and all(v is None or (type(v) in (int, np.int64) and low <= v < high)
                        for v, low, high in ((oversample, 0, math.inf), (power_iters, 0, 101), (seed, 0, 2**64)))
        if refused_or(out, ok, A):
            check_truncated_svd(A, *out, k)

    case()


def check_truncated_svd(A: Array, U, S, Vh, k: int) -> None:
    for r in (U, S, Vh):
        same_kind(r, A)
    u, s, vh, a = as64(U), as64(S), as64(Vh), A.values
    assert u.shape == a.shape[:-1] + (k,) and s.shape == a.shape[:-2] + (k,) and vh.shape == a.shape[:-2] + (k, a.shape[-1])
    assert np.isfinite(u).all() and np.isfinite(s).all() and np.isfinite(vh).all()
    tol = 200 * eps_of(A) * max(a.shape[-2:])
    scale = np.linalg.norm(a, 2, axis=(-2, -1)) if a.size else 0
    assert (s >= 0).all() and (np.diff(s, axis=-1) <= tol * scale[..., None]).all(), "descending"
    orthonormal(u, tol)
    orthonormal(np.swapaxes(vh, -1, -2), tol)
    # The sketch's side of A is projected exactly: U^T A = S Vh for a tall A (the sketch spans
    # its columns), A Vh^T = U S otherwise (the sketch spans its rows).
    if a.shape[-2] > a.shape[-1]:
        defect = np.linalg.norm(np.swapaxes(u, -1, -2) @ a - s[..., None] * vh, 2, axis=(-2, -1))
    else:
        defect = np.linalg.norm(a @ np.swapaxes(vh, -1, -2) - u * s[..., None, :], 2, axis=(-2, -1))
    assert (defect <= tol * scale + 1e-300).all(), f"U^T A != S Vh: {defect} vs {scale}"
    exact = np.linalg.svd(a, compute_uv=False)[..., :k]
    assert (s <= exact + tol * scale[..., None] + 1e-300).all(), "singular values above the exact ones"


def fuzz_svd(examples):
    @given(A=matrices())
    @settings(max_examples=examples, **SETTINGS)
    def case(A):
        out = run(repr(A), vsfast.svd, A.obj)
        if refused_or(out, A.valid(MATRIX), A):
            k = min(A.values.shape[-2:])
            check_truncated_svd(A, *out, k)
            u, s, vh = (as64(r) for r in out)
            err = np.linalg.norm((u * s[..., None, :]) @ vh - A.values, 2, axis=(-2, -1))
            assert (err <= 200 * eps_of(A) * k * np.linalg.norm(A.values, 2, axis=(-2, -1)) + 1e-300).all()

    case()


TOLS = st.one_of(st.none(), st.sampled_from([0, 0.0, 1e-3, 1.0, -1.0, np.nan, np.inf, 1e300, "x", True]))


def fuzz_spaces(examples):
    @given(W=matrices(), k=st.one_of(st.none(), INTS), rtol=TOLS, atol=TOLS,
           method=st.sampled_from(["auto", "exact", "randomized", "bogus", None]))
    @settings(max_examples=examples, **SETTINGS)
    def case(W, k, rtol, atol, method):
        out = run(repr((W, k, rtol, atol, method)), vsfast.spaces, W.obj, k=k, rtol=rtol, atol=atol, method=method)
        tol_ok = all(t is None or (type(t) in (int, float) and np.isfinite(t) and t >= 0) for t in (rtol, atol))
        ok = W.valid(MATRIX) and tol_ok and method in ("auto", "exact", "randomized")
        ok = ok and (k is None or (type(k) in (int, np.int64) and 1 <= k <= min(W.values.shape[-2:])))
        ok = ok and not (method == "randomized" and k is None)
        if refused_or(out, ok, W):
            each = flattened(out) if isinstance(out, list) else [out]
            for sp, w in zip(each, W.values.reshape(-1, *W.values.shape[-2:]), strict=True):
                check_spaces(sp, w, W, rtol, atol)

    case()


def flattened(nested: list) -> list:
    """A stack's Spaces, nested per leading axis, in the order of the flattened stack."""
    return [x for item in nested for x in (flattened(item) if isinstance(item, list) else [item])]


def check_spaces(sp, w: np.ndarray, W: Array, rtol, atol) -> None:
    m, n = w.shape
    s = as64(sp.singular_values)
    eps = eps_of(W)
    floor = np.finfo(np.float32 if eps > 1e-10 else np.float64).tiny
    r = rtol if rtol is not None else (0.0 if atol is not None else max(m, n) * eps)
    threshold = max(atol or 0.0, r * (s[0] if s.size else 0), floor * (1 - eps))
    assert sp.rank == int(np.sum(s > threshold)), "rank by the documented rule"
    assert sp.rank + sp.nullity == n
    tol = 200 * eps * max(m, n)
    signal, rejected = as64(sp.signal), as64(sp.rejected)
    assert signal.shape == (n, sp.rank) and rejected.shape == (n, n - sp.rank)
    orthonormal(np.concatenate([signal, rejected], axis=1), tol)
    assert as64(sp.signal_out).shape == (m, sp.rank) and as64(sp.rejected_out).shape == (m, m - sp.rank)
    cond = sp.condition_number
    assert (cond == np.inf) if sp.rank == 0 else np.isclose(cond, s[0] / s[sp.rank - 1], rtol=1e-6)
    if sp.method == "exact":
        # The layer maps its rejected space to no more than the first dropped singular value.
        exact = np.append(np.linalg.svd(w, compute_uv=False), 0.0)
        assert np.linalg.norm(w @ rejected, 2) <= exact[sp.rank] + tol * exact[0] + 1e-300


def fuzz_project(examples):
    @given(X=arrays(ndim=st.integers(0, 4)), basis=matrices(ndims=(2,)), use_spaces=st.booleans(),
           side=st.sampled_from(["input", "output", "bogus"]))
    @settings(max_examples=examples, **SETTINGS)
    def case(X, basis, use_spaces, side):
        b = basis
        if use_spaces and basis.valid((2,)):
            b = run(repr(basis), vsfast.spaces, basis.obj)
            if b is REFUSED:
                return
        out = run(repr((X, basis, use_spaces, side)), vsfast.project, X.obj, b if use_spaces else basis.obj, side=side)
        if out is REFUSED:
            return
        assert X.valid(range(1, 33)), "an invalid X was accepted"
        signal, residual = as64(out[0]), as64(out[1])
        same_kind(out[0], X)
        assert signal.shape == X.values.shape == residual.shape
        assert np.isfinite(signal).all() and np.isfinite(residual).all()
        x = X.values
        if use_spaces:
            v = as64(b.signal if side == "input" else b.signal_out)
        else:
            v = basis.values
        expected = x @ v @ v.T
        scale = np.abs(x).max() * max(1.0, np.abs(v).max(initial=0)) ** 2 * max(v.size, 1) + 1e-300
        tol = 100 * max(eps_of(X), eps_of(basis)) * scale  # a float32 basis is orthonormal to float32 only
        assert np.abs(signal - expected).max() <= tol, f"signal off by {np.abs(signal - expected).max()} > {tol}"
        assert np.abs(signal + residual - x).max() <= tol, f"parts off by {np.abs(signal + residual - x).max()} > {tol}"

    case()


def fuzz_pinv(examples):
    @given(W=matrices(), rtol=TOLS, atol=TOLS)
    @settings(max_examples=examples, **SETTINGS)
    def case(W, rtol, atol):
        out = run(repr((W, rtol, atol)), vsfast.pinv, W.obj, rtol=rtol, atol=atol)
        tol_ok = all(t is None or (type(t) in (int, float) and np.isfinite(t) and t >= 0) for t in (rtol, atol))
        if refused_or(out, W.valid(MATRIX) and tol_ok, W):
            same_kind(out, W)
            p, w = as64(out), W.values
            assert p.shape == w.shape[:-2] + (w.shape[-1], w.shape[-2]) and np.isfinite(p).all()
            for wi, pi in zip(w.reshape(-1, *w.shape[-2:]), p.reshape(-1, *p.shape[-2:])):
                # Checked in extended precision, whose exponent range no product here leaves.
                wi, pi = wi.astype(np.longdouble), pi.astype(np.longdouble)
                if not pi.any():  # rank 0: sigma_1 <= ||W||_F below the tolerance or subnormal
                    tiny = np.finfo(W.dtype).tiny
                    assert np.linalg.norm(wi) <= max(atol or 0, tiny) or rtol, "rank 0 without cause"
                    continue
                # The Penrose condition P W P = P, to the accuracy that the condition number of
                # the part P inverts, ||P|| ||W||, allows (Frobenius norms).
                tol = 1e3 * eps_of(W) * max(wi.shape) * np.linalg.norm(pi) * np.linalg.norm(wi)
                assert np.linalg.norm(pi @ wi @ pi - pi) <= tol * np.linalg.norm(pi)

    case()


ACTIVATIONS = st.sampled_from([None, "identity", "selu", "elu", "tanh", "sigmoid", "leaky_relu", "SELU", "relu",
                               ("leaky_relu", 0.2), ("elu", 0.5), ("leaky_relu", -1.0), ("elu", np.nan),
                               ("tanh", 1.0), ("leaky_relu", "x"), 3, ("selu",)])


def fuzz_reconstruct(examples):
    @given(depth=st.integers(0, 3), data=st.data())
    @settings(max_examples=examples, **SETTINGS)
    def case(depth, data):
        widths = [data.draw(st.sampled_from(SIZES[1:])) for _ in range(depth + 1)]
        layers = []
        for i in range(depth):
            w = data.draw(st.one_of(arrays(shape=(widths[i + 1], widths[i]), specials=False, float_bias=0.9),
                                    matrices(ndims=(2,))))
            b = data.draw(st.one_of(st.none(), arrays(shape=(widths[i + 1],), specials=False, float_bias=0.9),
                                    arrays(ndim=st.integers(0, 2))))
            layers.append((w, b, data.draw(ACTIVATIONS)))
        Y = data.draw(st.one_of(arrays(shape=(data.draw(st.sampled_from(SIZES[1:])), widths[-1]), float_bias=0.9),
                                arrays(ndim=st.integers(0, 3))))
        reference = data.draw(st.one_of(st.none(), arrays(shape=(widths[0],), float_bias=0.9), arrays()))
        every = data.draw(st.sampled_from(["first", "all", "bogus"]))
        args = [(w.obj, None if b is None else b.obj, act) for w, b, act in layers]
        out = run(repr((layers, Y, reference, every)), vsfast.reconstruct, args, Y.obj,
                  reference=None if reference is None else reference.obj, reference_layers=every)
        if out is REFUSED:
            return
        x = as64(out.inputs)
        assert np.isfinite(x).all() and x.shape[-1] == (layers[0][0].values.shape[1] if depth else widths[0])
        assert len(out.clamped) == depth and all(isinstance(c, int) and c >= 0 for c in out.clamped)
        check_solve(data, args, Y, reference, every, x.shape)
        simple = all(act in (None, "identity", ("leaky_relu", 0.2)) for _, _, act in layers)
        if simple and not any(out.clamped) and every != "bogus":
            chain = vsfast.Chain(args, dtype=dtype_name(Y.obj))
            full_row_rank = all(r == w.values.shape[0] for r, (w, _, _) in zip(chain.ranks, layers))
            if full_row_rank:  # then the chain reaches every target
                conds = np.prod([vsfast.spaces(w.values).condition_number for w, _, _ in layers])
                y = as64(Y.obj).reshape(-1, chain.output_dim)
                reached = as64(chain.forward(out.inputs)).reshape(y.shape)
                tol = 1e3 * eps_of(Y) * max(widths) * depth * conds * 5 ** depth
                scale = np.abs(y).max() + 1 + magnitudes(args, x.reshape(len(y), -1)).max()  # biases cancel
                assert np.abs(reached - y).max() <= tol * scale, "targets not reached"

    case()


def magnitudes(args, x):
    """Rows of |x| carried through the layers with |W|, |b| and slopes of at most 2 (those of
    the activations drawn here): the size of the values whose rounding the outputs carry."""
    m = np.abs(x)
    for w, b, _ in args:
        m = 2 * (m @ np.abs(as64(w)).T + (0 if b is None else np.abs(as64(b))))
    return m


def check_solve(data, args, Y, reference, every, shape):
    """Chain.solve on a chain and targets that reconstruct accepted: finite inputs of the same
    shape, steps within max_iter, errors that are what the inputs' outputs give."""
    tol = data.draw(st.sampled_from([None, 0.0, 1e-3, 1e300, -1.0, np.nan, "x"]))
    max_iter = data.draw(st.sampled_from([0, 1, 3, 20, -1, 2**70]))

    def solve():
        chain = vsfast.Chain(args, dtype=dtype_name(Y.obj))
        return chain, chain.solve(Y.obj, reference=None if reference is None else reference.obj,
                                  reference_layers=every, tol=tol, max_iter=max_iter)

    out = run(repr((args, Y, reference, every, tol, max_iter)), solve)
    if out is REFUSED:
        return
    assert (tol is None or 0 <= tol < np.inf) and max_iter in (0, 1, 3, 20), "invalid tol or max_iter accepted"
    chain, solution = out
    x = as64(solution.inputs)
    assert x.shape == shape and np.isfinite(x).all()
    assert np.all((solution.steps >= 0) & (solution.steps <= max_iter))
    assert np.all(np.isfinite(solution.error) & (solution.error >= 0))
    y = as64(Y.obj).reshape(-1, chain.output_dim)
    reached = as64(chain.forward(solution.inputs)).reshape(y.shape)
    norms = row_norms(y)  # scaled: no square under- or overflows
    scale = np.where(norms > 0, norms, 1)
    recomputed = row_norms(reached - y) / scale
    # The core evaluates the first layer as W start + (U S) c, the check as W x: they differ by
    # rounding, bounded through the chain by magnitudes.
    start = np.abs(x.reshape(len(y), -1))
    if reference is not None:
        start = start + np.abs(as64(reference.obj)).reshape(-1, start.shape[1])
    slack = 1e3 * eps_of(Y) * np.linalg.norm(magnitudes(args, start), axis=1) / scale
    assert np.all(np.abs(recomputed - solution.error) <= slack + 1e-3 * recomputed), "errors misreported"


def fuzz_threads(examples):
    @given(threads=INTS)
    @settings(max_examples=examples, **SETTINGS)
    def case(threads):
        before = vsfast.get_num_threads()
        out = run(repr(threads), vsfast.set_num_threads, threads)
        if out is REFUSED and type(threads) in (int, np.int64) and 1 <= threads < 2**31:
            raise AssertionError("a valid thread count was refused")
        vsfast.set_num_threads(before)

    case()


def fuzz_targets(examples):
    @given(outputs=arrays(ndim=st.integers(0, 3), float_bias=0.8), labels=arrays(ndim=st.integers(0, 2), float_bias=0.2),
           low=st.sampled_from([0, 0.0, 10, 50, 100, -1, 101, np.nan, "x"]), high=st.sampled_from([100, 90, 0, 150, np.inf]),
           classes=INTS)
    @settings(max_examples=examples, **SETTINGS)
    def case(outputs, labels, low, high, classes):
        out = run(repr((outputs, labels, low, high)), class_targets, outputs.obj, labels.obj, low=low, high=high)
        if out is not REFUSED:
            assert np.isfinite(out).all() and out.ndim == 2 and out.shape[0] == out.shape[1]
        out = run(repr((classes, low, high)), onehot_targets, classes, low=low, high=high)
        if out is not REFUSED:
            assert out.shape == (classes, classes)

    case()


def _small_model(draw):
    torch = _torch()
    nn = torch.nn
    kind = draw(st.sampled_from(["chain", "relu", "conv", "lstm", "embedding", "custom", "grouped", "bare",
                                 "not-a-model"]))
    torch.manual_seed(draw(st.integers(0, 100)))
    if kind == "chain":
        return nn.Sequential(nn.Linear(6, 5), nn.SELU(), nn.Linear(5, 3)), (6,)
    if kind == "relu":
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), (6,)
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 3)), (1, 5, 5)
    if kind == "grouped":
        return nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)), (2, 5, 5)
    if kind == "bare":
        return nn.Sequential(nn.ReLU()), (6,)
    if kind == "lstm":
        return nn.LSTM(6, 3), (6,)
    if kind == "embedding":
        return nn.Sequential(nn.Embedding(10, 3)), (6,)
    if kind == "custom":
        class Scale(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.ones(6))

            def forward(self, x):
                return x * self.weight
        return nn.Sequential(Scale(), nn.Linear(6, 3)), (6,)
    return draw(st.sampled_from([None, "fcnn1", 3, np.eye(3)])), (6,)


def fuzz_analyze(examples):
    @given(data=st.data())
    @settings(max_examples=examples, **SETTINGS)
    def case(data):
        model, shape = _small_model(data.draw)
        inputs = data.draw(st.one_of(st.none(), arrays(shape=(data.draw(st.sampled_from([1, 3])),) + shape,
                                                       specials=False), arrays()))
        kwargs = dict(method=data.draw(st.sampled_from(["auto", "exact", "randomized", "x"])),
                      k=data.draw(st.one_of(st.none(), INTS)),
                      conv_view=data.draw(st.sampled_from(["patch", "kernel", "x"])))
        report = run(repr((model, inputs, kwargs)), vsfast.analyze, model,
                     None if inputs is None else inputs.obj, **kwargs)
        if report is REFUSED:
            return
        for layer in report:
            s = np.asarray(layer.singular_values)
            assert np.isfinite(s).all() and 0 <= layer.rank <= min(layer.shape)
            fraction = layer.rejected_fraction
            if fraction is not None:
                assert np.isfinite(fraction).all() and (fraction >= 0).all() and (fraction <= 1 + 1e-5).all()
        report.to_json()
        report.to_rows()

    case()


def fuzz_invert(examples):
    @given(data=st.data())
    @settings(max_examples=examples, **SETTINGS)
    def case(data):
        model, shape = _small_model(data.draw)
        targets = data.draw(st.one_of(arrays(shape=(data.draw(st.sampled_from([1, 2])), 3), float_bias=0.9), arrays()))
        reference = data.draw(st.one_of(st.none(), st.sampled_from(["class-mean", "nearest", "bogus"]),
                                        arrays(shape=shape, specials=False), arrays()))
        labelled = data.draw(st.booleans())
        images = np.random.default_rng(0).random((12,) + shape)
        kwargs = dict(method=data.draw(st.sampled_from(["auto", "pinv", "optimize", "x"])),
                      reference=reference if isinstance(reference, (str, type(None))) else reference.obj,
                      data=(images, np.arange(12) % 3) if labelled else data.draw(st.sampled_from([None, "x", (1, 2)])),
                      max_iter=data.draw(st.sampled_from([1, 3, 0, -1, 2.5, "3"])),  # few: each is a step
                      tol=data.draw(st.sampled_from([1e-4, 0.0, -1.0, np.nan])),
                      reference_layers=data.draw(st.sampled_from(["first", "all", "x"])))
        result = run(repr((model, targets, kwargs)), vsfast.invert, model, targets.obj, **kwargs)
        if result is REFUSED:
            return
        y = np.atleast_2d(np.asarray(targets.values if targets.values is not None else targets.obj, np.float64))
        assert result.inputs.shape[0] == result.error.shape[0] == len(y)
        assert np.isfinite(result.inputs).all() and np.isfinite(result.outputs).all()
        norms = row_norms(y)
        error = row_norms(result.outputs - y) / np.where(norms > 0, norms, 1)
        assert np.allclose(result.error, error, rtol=1e-6, atol=1e-12), "the reported errors are the outputs'"

    case()


def fuzz_figures(examples):
    from vsfast import viz

    @given(images=st.one_of(arrays(shape=(3, 4, 4), specials=False), arrays()), signal=arrays(shape=(3, 4, 4)),
           titles=st.one_of(st.none(), st.just(["a", "b", "c"]), st.just("abc"), st.just([]), st.just(3)),
           columns=INTS)
    @settings(max_examples=examples, **SETTINGS)
    def case(images, signal, titles, columns):
        fig = run(repr((images, titles, columns)), viz.image_grid, images.obj, titles, columns=columns)
        if fig is not REFUSED:
            assert np.ndim(images.obj) in (3, 4) and len(fig.axes) >= len(images.obj)
            viz.save(fig, io.BytesIO())
        fig = run(repr((images, signal, titles)), viz.decomposition, images.obj, signal.obj, signal.obj, titles)
        if fig is not REFUSED:
            assert np.ndim(images.obj) in (3, 4) and np.ndim(signal.obj) == 3
            viz.save(fig, io.BytesIO())

    case()


def fuzz_loading(examples):
    from vsfast.mnist import data, models

    root = Path(tempfile.mkdtemp())
    (root / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 40)  # a lying header
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    (root / "weights.safetensors").write_bytes(b"{}")

    @given(split=st.sampled_from(["train", "test", "TRAIN", "", "val", None, 3]),
           where=st.sampled_from([root, root / "missing", str(root / "weights.safetensors"), 5]),
           dtype=st.sampled_from(["float32", "uint8", "float16", None]),
           name=st.sampled_from(["fcnn1", "mnist_fcnn5", "FCNN-1", "resnet", "", None, 1]),
           weights=st.sampled_from([None, root / "weights.safetensors", root / "missing.safetensors", root]))
    @settings(max_examples=examples, **SETTINGS)
    def case(split, where, dtype, name, weights):
        got = run(repr((split, where, dtype)), data.load, split, where, dtype, download=False)
        assert got is REFUSED, "the folder holds no valid MNIST"
        model = run(repr((name, weights)), models.load, name, weights=weights)
        if model is not REFUSED:
            assert weights is None and models.store.canonical(name) in ("fcnn1", "fcnn5")

    case()


def fuzz_command(examples):
    models = st.sampled_from(["fcnn1", "fcnn5", "resnet18", "FCNN1", "", "x"])
    numbers = st.sampled_from(["1", "3", "0", "-2", "999999999999", "x", "1e3", ""])
    root = Path(tempfile.mkdtemp())
    (root / "file").write_text("not a folder")
    paths = st.sampled_from([str(root / "out"), str(root / "file"), str(root / "file" / "below"), "", "/proc/vsfast"])

    @st.composite
    def argv(draw):
        command = draw(st.sampled_from(["analyze", "invert", "train", "demo", "bogus", "--help", "--version"]))
        args = [command]
        if command in ("analyze", "invert", "train"):
            name = draw(models)
            if command != "train" and name == "resnet18":
                name = "fcnn1"  # resnet18 is trained on first use: minutes, not a fuzz case
            args.append(name)
        options = {"analyze": ["--inputs", "--k", "--method", "--conv-view", "--out"],
                   "invert": ["--reference", "--max-iter", "--out"],
                   "train": ["--epochs", "--limit", "--seed", "--out", "--data"],
                   "demo": ["--bogus", "--out"]}.get(command, [])
        for option in draw(st.lists(st.sampled_from(options), max_size=3)) if options else []:
            value = draw(paths if option in ("--out", "--data") else
                         st.sampled_from(["auto", "exact", "randomized", "patch", "kernel", "none", "class-mean",
                                          "nearest", "x"]) if option in ("--method", "--conv-view", "--reference")
                         else numbers)
            args += [option, value]
        if command == "train":  # keep valid trainings short
            args += ["--limit", "32", "--epochs", "1", "--out", str(root / "models")]
        if command == "invert" and "--max-iter" not in args:
            args += ["--max-iter", "3"]
        if command == "demo" and "--bogus" not in args:
            args.append("--bogus")
        if command == "analyze" and "--inputs" not in args:
            args += ["--inputs", "8"]
        return args

    from vsfast import cli

    @given(args=argv())
    @settings(max_examples=examples, **SETTINGS)
    def case(args):
        global _cases
        _cases += 1
        if _log is not None:
            _log.write_text(repr(args))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = cli.main(args)  # argparse's exits (--help, usage errors) come back as statuses too
        assert code in (0, 1, 2), f"exit status {code}: {err.getvalue()[-500:]}"
        assert code == 0 or "error" in err.getvalue(), "a failure explains itself"

    case()


TARGETS = {name[len("fuzz_"):]: fn for name, fn in globals().items() if name.startswith("fuzz_")}
SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def main() -> int:
    global _log
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--random", action="store_true", help="new random cases instead of the fixed ones")
    args = parser.parse_args()
    _log = args.log
    if args.random:
        SETTINGS["derandomize"] = False
    os.environ.setdefault("MPLBACKEND", "Agg")
    TARGETS[args.target](args.examples)
    print(f"cases: {_cases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
