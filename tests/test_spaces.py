"""spaces, project and pinv against float64 references, plus property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vsfast
from conftest import EPS, orthonormality_error, rank_bounds, with_spectrum

DTYPES = [np.float32, np.float64]


def _check_four_spaces(w: np.ndarray, sp: vsfast.Spaces, tol: float) -> None:
    """The defining properties of the four subspaces of w, to a tolerance relative to ||w||."""
    m, n = w.shape
    r = sp.rank
    wd = w.astype(np.float64)
    scale = max(np.linalg.norm(wd, 2), 1e-300)
    signal, signal_out = np.asarray(sp.signal, np.float64), np.asarray(sp.signal_out, np.float64)
    rejected, rejected_out = np.asarray(sp.rejected, np.float64), np.asarray(sp.rejected_out, np.float64)
    assert signal.shape == (n, r) and signal_out.shape == (m, r)
    assert rejected.shape == (n, n - r) and rejected_out.shape == (m, m - r)
    assert sp.rank + sp.nullity == n
    for basis in (signal, signal_out, rejected, rejected_out):
        assert orthonormality_error(basis) <= tol
    # Complements: together they span the whole space.
    assert orthonormality_error(np.hstack([signal, rejected])) <= tol
    assert orthonormality_error(np.hstack([signal_out, rejected_out])) <= tol
    # W kills the null space; W^T kills the left null space (relative to the rank tolerance).
    if n - r:
        assert np.linalg.norm(wd @ rejected, 2) <= tol * scale + sp._s[r] if r < len(sp._s) else True
    if m - r:
        assert np.linalg.norm(wd.T @ rejected_out, 2) <= tol * scale + (sp._s[r] if r < len(sp._s) else 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(10, 784), (784, 10), (64, 64), (1, 30), (30, 1)])
@pytest.mark.parametrize("spectrum", ["fast", "lowrank", "cond1e12"])
def test_spaces_exact(rng, dtype, shape, spectrum):
    a, s_true = with_spectrum(rng, *shape, spectrum)
    w = a.astype(dtype)
    sp = vsfast.spaces(w)
    low, high = rank_bounds(w)  # numpy's matrix_rank tolerance on the same (rounded) matrix
    assert low <= sp.rank <= high
    assert sp.method == "exact"
    s_ref = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    err = 10 * max(shape) * EPS[dtype] * s_ref[0]  # backward-stable SVD, Weyl's bound
    np.testing.assert_allclose(sp.singular_values, s_ref, rtol=0, atol=err)
    if sp.rank:
        # First-order perturbation of sigma_1 / sigma_r.
        sigma_r = s_ref[sp.rank - 1]
        assert sp.condition_number == pytest.approx(s_ref[0] / sigma_r, rel=2 * err / sigma_r)
    _check_four_spaces(w, sp, 50 * max(shape) * EPS[dtype])


def test_spaces_aliases_and_repr(rng):
    w = rng.standard_normal((5, 12))
    sp = vsfast.spaces(w)
    assert sp.row_space is not None and np.array_equal(sp.row_space, sp.signal)
    assert np.array_equal(sp.column_space, sp.signal_out)
    assert np.array_equal(sp.null_space, sp.rejected)
    assert np.array_equal(sp.left_null_space, sp.rejected_out)
    assert "rank=5" in repr(sp)


def test_spaces_rank_tolerances(rng):
    w, _ = with_spectrum(rng, 40, 60, np.logspace(0, -6, 40))
    assert vsfast.spaces(w).rank == 40
    assert vsfast.spaces(w, rtol=1e-3).rank == int(np.sum(np.logspace(0, -6, 40) > 1e-3))
    assert vsfast.spaces(w, atol=1e-2).rank == int(np.sum(np.logspace(0, -6, 40) > 1e-2))
    assert vsfast.spaces(w, rtol=1e-3, atol=1e-1).rank == int(np.sum(np.logspace(0, -6, 40) > 1e-1))


def test_spaces_rank_zero_and_condition_inf():
    sp = vsfast.spaces(np.zeros((4, 6)))
    assert sp.rank == 0 and sp.nullity == 6 and sp.condition_number == float("inf")
    assert sp.signal.shape == (6, 0) and sp.rejected.shape == (6, 6)
    np.testing.assert_allclose(sp.rejected @ sp.rejected.T, np.eye(6), atol=1e-15)
    signal, residual = vsfast.project(np.ones((3, 6)), sp)
    assert np.array_equal(signal, np.zeros((3, 6))) and np.array_equal(residual, np.ones((3, 6)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_spaces_randomized_matches_exact_top_k(rng, dtype):
    a, _ = with_spectrum(rng, 300, 900, "fast")
    w = a.astype(dtype)
    exact = vsfast.spaces(w, k=12, method="exact")
    fast = vsfast.spaces(w, k=12)
    assert fast.method == "randomized" and exact.method == "exact"
    assert fast.rank == exact.rank == 12
    # Same subspaces: the projector difference is small in the spectral norm.
    for attr in ("signal", "signal_out"):
        pa, pb = np.asarray(getattr(exact, attr), np.float64), np.asarray(getattr(fast, attr), np.float64)
        assert np.linalg.norm(pa @ pa.T - pb @ pb.T, 2) <= 1e4 * EPS[dtype]
    np.testing.assert_allclose(fast.singular_values, exact.singular_values, rtol=1e3 * EPS[dtype])


def test_spaces_batch_and_torch(rng):
    w = torch.from_numpy(rng.standard_normal((3, 8, 20)))
    out = vsfast.spaces(w)
    assert isinstance(out, list) and len(out) == 3
    for i, sp in enumerate(out):
        assert isinstance(sp.signal, torch.Tensor)
        single = vsfast.spaces(w[i])
        np.testing.assert_array_equal(sp.signal.numpy(), single.signal.numpy())
        assert sp.rank == 8


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_matches_reference(rng, dtype):
    check_project_matches_reference(rng, dtype)


def check_project_matches_reference(rng, dtype, place=np.asarray, host=np.asarray):
    """``place`` puts the operands where the work runs (the GPU tests reuse this), ``host``
    brings results back."""
    w, _ = with_spectrum(rng, 10, 784, "slow")
    x = rng.standard_normal((1000, 784)).astype(dtype)
    sp = vsfast.spaces(place(w.astype(dtype)))
    signal, residual = (host(t) for t in vsfast.project(place(x), sp))
    assert signal.dtype == residual.dtype == dtype
    v = np.linalg.svd(w)[2][:10].T
    ref = x.astype(np.float64) @ v @ v.T
    tol = 50 * EPS[dtype] * np.abs(x).max() * np.sqrt(784)
    np.testing.assert_allclose(signal, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(signal.astype(np.float64) + residual, x, rtol=0, atol=4 * EPS[dtype] * np.abs(x).max())
    # The layer sees nothing of the residual.
    assert np.abs(w @ residual.astype(np.float64).T).max() <= tol * np.linalg.norm(w, 2)


@pytest.mark.parametrize("inputs", [1, 5000])
def test_project_through_the_smaller_complement(rng, inputs):
    """A signal space of more than half the dimensions is split through its complement for many
    inputs (or once the complement exists): same result either way."""
    w = rng.standard_normal((300, 400))
    sp = vsfast.spaces(w)
    x = rng.standard_normal((inputs, 400))
    signal, residual = vsfast.project(x, sp)
    assert ("_rejected_rows" in sp.__dict__) == (inputs == 5000)
    v = np.linalg.svd(w)[2][:300].T
    np.testing.assert_allclose(signal, x @ v @ v.T, atol=1e-12)
    np.testing.assert_allclose(signal + residual, x, atol=1e-13)
    assert np.abs(w @ residual.T).max() < 1e-11


def test_project_output_side_and_plain_basis(rng):
    w = rng.standard_normal((30, 12))  # tall: a proper column space in R^30
    sp = vsfast.spaces(w)
    y = rng.standard_normal((7, 30))
    signal, residual = vsfast.project(y, sp, side="output")
    assert np.abs(w.T @ residual.T).max() < 1e-12
    # A plain basis with orthonormal columns gives the same split.
    s2, r2 = vsfast.project(y, sp.signal_out)
    np.testing.assert_allclose(s2, signal, atol=1e-14)
    # Leading dimensions are kept.
    imgs = rng.standard_normal((2, 3, 12))
    s3, r3 = vsfast.project(imgs, sp)
    assert s3.shape == imgs.shape
    np.testing.assert_allclose(s3 + r3, imgs, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(20, 50), (50, 20), (1, 9), (9, 1)])
def test_pinv_matches_numpy(rng, dtype, shape):
    a, _ = with_spectrum(rng, *shape, "lowrank")
    w = a.astype(dtype)
    p = vsfast.pinv(w)
    assert p.shape == shape[::-1] and p.dtype == dtype
    ref = np.linalg.pinv(w.astype(np.float64), rcond=max(shape) * EPS[dtype])
    np.testing.assert_allclose(p, ref, rtol=0, atol=1e3 * EPS[dtype] * np.abs(ref).max())
    # Penrose conditions.
    wd, pd = w.astype(np.float64), p.astype(np.float64)
    np.testing.assert_allclose(wd @ pd @ wd, wd, atol=1e3 * EPS[dtype] * np.abs(wd).max())
    np.testing.assert_allclose(pd @ wd @ pd, pd, atol=1e3 * EPS[dtype] * np.abs(pd).max())


def test_pinv_batch(rng):
    w = rng.standard_normal((4, 6, 9))
    p = vsfast.pinv(w)
    np.testing.assert_allclose(p, np.linalg.pinv(w), atol=1e-12)


# --- property tests ------------------------------------------------------------------------------

@st.composite
def matrices(draw):
    dtype = draw(st.sampled_from(DTYPES))
    m, n = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rank = draw(st.integers(0, min(m, n)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))).astype(dtype)
    x = rng.standard_normal((draw(st.integers(1, 5)), n)).astype(dtype)
    return w, x, rank


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_property_four_spaces(case):
    w, x, rank = case
    dtype = w.dtype.type
    sp = vsfast.spaces(w)
    tol = 100 * max(w.shape) * EPS[dtype]
    low, high = rank_bounds(w)
    assert low <= sp.rank <= high
    assert sp.rank + sp.nullity == w.shape[1]
    _check_four_spaces(w, sp, tol)
    signal, residual = vsfast.project(x, sp)
    scale = max(np.abs(x).max(), 1e-30)
    np.testing.assert_allclose(signal.astype(np.float64) + residual, x, rtol=0, atol=4 * EPS[dtype] * scale)
    wnorm = np.linalg.norm(w.astype(np.float64), 2)
    assert np.abs(w.astype(np.float64) @ residual.astype(np.float64).T).max() <= tol * wnorm * scale * np.sqrt(w.shape[1])


@settings(max_examples=100, deadline=None)
@given(matrices(), st.integers(0, 3), st.integers(0, 12))
def test_property_rsvd_orthonormal(case, power_iters, oversample):
    w, _, _ = case
    dtype = w.dtype.type
    k = max(1, min(w.shape) // 2)
    u, s, vh = vsfast.rsvd(w, k, oversample=oversample, power_iters=power_iters)
    tol = 100 * max(w.shape) * EPS[dtype]
    assert orthonormality_error(u) <= tol
    assert orthonormality_error(vh.T) <= tol
    assert np.all(np.diff(s.astype(np.float64)) <= tol * max(s[0], 1e-30)) and np.all(s >= 0)
