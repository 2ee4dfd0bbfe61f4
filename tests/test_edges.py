"""Numerics at the edges: exactly singular and rank-0 matrices, condition numbers of 1e15,
subnormal numbers, all-equal inputs, and magnitudes near the ends of the dtype. Each gives the
documented result (README, "Numerics"), never NaN."""

from __future__ import annotations

import numpy as np
import pytest

import vsfast
from conftest import random_orthonormal, with_spectrum

DTYPES = (np.float32, np.float64)


def finite(*arrays) -> bool:
    return all(np.isfinite(np.asarray(a)).all() for a in arrays)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_zero(dtype):
    w = np.zeros((4, 6), dtype)
    sp = vsfast.spaces(w)
    assert sp.rank == 0 and sp.nullity == 6 and sp.condition_number == np.inf
    assert sp.signal.shape == (6, 0) and sp.rejected.shape == (6, 6) and sp.rejected_out.shape == (4, 4)
    assert not vsfast.pinv(w).any()
    x = np.arange(12, dtype=dtype).reshape(2, 6)
    signal, residual = vsfast.project(x, sp)
    assert not signal.any() and np.array_equal(residual, x)
    u, s, vh = vsfast.rsvd(w, 2)
    assert not s.any() and finite(u, vh)
    # A rank-0 layer passes nothing back: the input is the reference's, or zero.
    inputs, clamped = vsfast.reconstruct([(w, None, None)], np.ones((1, 4), dtype), reference=np.ones(6, dtype))
    np.testing.assert_allclose(inputs, np.ones((1, 6)), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exactly_singular(rng, dtype):
    w = (rng.standard_normal((7, 3)) @ rng.standard_normal((3, 9))).astype(dtype)
    sp = vsfast.spaces(w)
    assert sp.rank == 3 and sp.nullity == 6 and np.isfinite(sp.condition_number)
    tol = 100 * np.finfo(dtype).eps * np.linalg.norm(w, 2)
    assert np.linalg.norm(w.astype(np.float64) @ sp.rejected, 2) <= tol
    p = vsfast.pinv(w).astype(np.float64)
    np.testing.assert_allclose(w @ p @ w, w, atol=tol)


def test_condition_number_1e15():
    """sigma_1 / sigma_r = 1e15: float64 keeps it (above max(m, n) * eps), float32 cannot."""
    w = np.diag([1.0, 1e-15])  # exact: a rotated copy would carry rounding of 1e-16
    sp = vsfast.spaces(w)
    assert sp.rank == 2 and sp.condition_number == pytest.approx(1e15, rel=0.05)
    sp32 = vsfast.spaces(w.astype(np.float32))
    assert sp32.rank == 1 and sp32.condition_number == pytest.approx(1.0, rel=1e-5)
    assert finite(vsfast.pinv(w), vsfast.pinv(w.astype(np.float32)))


@pytest.mark.parametrize("dtype, value", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_subnormal_singular_values_do_not_count(dtype, value):
    """Their reciprocals overflow: they are treated as zero, so pinv stays finite."""
    w = (np.eye(3) * value).astype(dtype)
    assert w[0, 0] > 0
    sp = vsfast.spaces(w, rtol=0.0, atol=0.0)
    assert sp.rank == 0 and sp.condition_number == np.inf
    assert not vsfast.pinv(w, atol=0.0).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_equal(dtype):
    w = np.full((5, 8), 0.25, dtype)
    sp = vsfast.spaces(w)
    assert sp.rank == 1 and sp.condition_number == 1.0
    x = np.full((3, 8), 2.0, dtype)
    signal, residual = vsfast.project(x, sp)
    np.testing.assert_allclose(signal, x, atol=1e-5)
    assert np.abs(residual).max() <= 1e-5


def test_all_equal_and_zero_inputs_to_a_model():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    for fill in (0.0, 1.0):
        report = vsfast.analyze(net, np.full((3, 8), fill, np.float32))
        for layer in report:
            assert finite(layer.rejected_fraction) and (0 <= layer.rejected_fraction).all()


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_magnitudes_in_float32(rng, scale):
    """rsvd rescales a matrix by a power of two (exact) when its Gram matrices would underflow
    or overflow, and gets the same answer as at unit scale."""
    a, s = with_spectrum(rng, 60, 40, "fast")
    u, got, vh = vsfast.rsvd((a * scale).astype(np.float32), 5)
    np.testing.assert_allclose(got / scale, s[:5], rtol=1e-4)
    assert finite(u, vh)
    u1, s1, vh1 = vsfast.svd((a * scale).astype(np.float32))
    np.testing.assert_allclose(s1[:5] / scale, s[:5], rtol=1e-4)


def test_results_beyond_the_dtype_are_overflow_errors(rng):
    big = (random_orthonormal(rng, 6, 1) @ random_orthonormal(rng, 6, 1).T * 3e38 * 1.5).astype(np.float64)
    a = np.clip(big * 4, -3e38, 3e38).astype(np.float32)  # finite entries, sigma_1 beyond float32
    for call in (lambda: vsfast.svd(a), lambda: vsfast.rsvd(a, 1), lambda: vsfast.spaces(a)):
        with pytest.raises(OverflowError, match="overflows float32"):
            call()
    assert vsfast.svd(a.astype(np.float64))[1][0] > 3.4e38  # float64 holds it
