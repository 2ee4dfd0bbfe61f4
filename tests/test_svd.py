"""svd and rsvd against float64 numpy references on matrices with chosen spectra."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vsfast
from conftest import EPS, orthonormality_error, with_spectrum

DTYPES = [np.float32, np.float64]
SHAPES = [(120, 80), (80, 120), (64, 64), (1, 50), (50, 1), (1, 1)]


def spectral_error(a: np.ndarray, u, s, vh) -> float:
    """||A - U diag(S) Vh||_2 in float64."""
    approx = (np.asarray(u, np.float64) * np.asarray(s, np.float64)) @ np.asarray(vh, np.float64)
    return float(np.linalg.norm(a - approx, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spectrum", ["fast", "slow", "lowrank", "cond1e12"])
def test_svd_matches_float64_reference(rng, dtype, shape, spectrum):
    a, s_true = with_spectrum(rng, *shape, spectrum)
    u, s, vh = vsfast.svd(a.astype(dtype))
    assert u.dtype == s.dtype == vh.dtype == dtype
    q = min(shape)
    assert u.shape == (shape[0], q) and s.shape == (q,) and vh.shape == (q, shape[1])
    # gesdd is backward stable: every singular value is within p(m, n) * eps * sigma_1 of the true
    # one (Weyl), plus the rounding of A itself to the working precision.
    tol = 10 * max(shape) * EPS[dtype] * s_true[0]
    np.testing.assert_allclose(s, s_true, rtol=0, atol=tol)
    assert spectral_error(a, u, s, vh) <= tol
    assert orthonormality_error(u) <= 10 * max(shape) * EPS[dtype]
    assert orthonormality_error(vh.T) <= 10 * max(shape) * EPS[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_svd_batch_equals_loop(rng, dtype):
    a = rng.standard_normal((5, 30, 20)).astype(dtype)
    u, s, vh = vsfast.svd(a)
    for i in range(5):
        ui, si, vhi = vsfast.svd(a[i])
        np.testing.assert_array_equal(s[i], si)
        np.testing.assert_array_equal(u[i], ui)
        np.testing.assert_array_equal(vh[i], vhi)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (1, 40), (40, 1)])
def test_rsvd_exact_on_low_rank(rng, dtype, shape):
    check_rsvd_exact_on_low_rank(rng, dtype, shape)


def check_rsvd_exact_on_low_rank(rng, dtype, shape, place=np.asarray, host=np.asarray):
    """With k at least the rank, the range finder captures A exactly (up to rounding). ``place``
    puts the matrix where rsvd runs (the GPU tests reuse this), ``host`` brings results back."""
    rank = min(5, min(shape))
    a, s_true = with_spectrum(rng, *shape, np.r_[np.linspace(3, 1, rank), np.zeros(min(shape) - rank)])
    u, s, vh = (host(t) for t in vsfast.rsvd(place(a.astype(dtype)), rank))
    assert u.shape == (shape[0], rank) and s.shape == (rank,) and vh.shape == (rank, shape[1])
    tol = 30 * max(shape) * EPS[dtype] * s_true[0]
    np.testing.assert_allclose(s, s_true[:rank], rtol=0, atol=tol)
    assert spectral_error(a, u, s, vh) <= tol
    assert orthonormality_error(u) <= 30 * max(shape) * EPS[dtype]
    assert orthonormality_error(vh.T) <= 30 * max(shape) * EPS[dtype]


def errors_against_torch(a: np.ndarray, ad: np.ndarray, k: int, seeds: int, p: int = 10, q: int = 2):
    """Spectral-norm errors against the float64 a of vsfast.rsvd and torch.svd_lowrank on ad, at
    the same k, oversample p and power iterations q, one per seed."""
    ours, theirs = [], []
    for seed in range(seeds):
        ours.append(spectral_error(a, *vsfast.rsvd(ad, k, oversample=p, power_iters=q, seed=seed)))
        torch.manual_seed(seed)
        tu, ts, tv = torch.svd_lowrank(torch.from_numpy(ad), q=k + p, niter=q)
        theirs.append(spectral_error(a, tu[:, :k].numpy(), ts[:k].numpy(), tv[:, :k].numpy().T))
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(400, 150), (150, 400)])
@pytest.mark.parametrize("spectrum", ["fast", "slow", "cond1e12"])
def test_rsvd_error_no_worse_than_torch(rng, dtype, shape, spectrum):
    """Median over seeds of ||A - U S Vh||_2 within 10 % of torch.svd_lowrank's at the same k,
    oversample and power iterations; and never below the optimal sigma_{k+1}."""
    a, s_true = with_spectrum(rng, *shape, spectrum)
    k = 20
    ours, theirs = errors_against_torch(a, a.astype(dtype), k, seeds=7)
    floor = s_true[k] if k < len(s_true) else 0.0
    assert min(ours) >= floor * (1 - 1e-6) - 10 * max(shape) * EPS[dtype]
    assert np.median(ours) <= 1.10 * np.median(theirs) + 10 * max(shape) * EPS[dtype] * s_true[0]


@pytest.mark.parametrize("shape", [(1200, 300), (300, 1200)])
@pytest.mark.parametrize("spectrum", ["fast", "lowrank"])
def test_rsvd_float32_error_at_the_rounding_level_no_worse_than_torch(rng, shape, spectrum):
    """When the spectrum falls below float32's precision inside the sketch, all that is left of
    the error is rounding (of the products, the bases and the small SVD): its median over seeds
    within 10 % of torch.svd_lowrank's, with no slack added. A float32 small SVD by sgesdd, whose
    smallest singular values can be off by ~64 eps sigma_1, fails this by a factor of 3 to 16."""
    a, _ = with_spectrum(rng, *shape, spectrum)
    ours, theirs = errors_against_torch(a, a.astype(np.float32), 64, seeds=5)
    assert np.median(ours) <= 1.10 * np.median(theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1200, 300), (300, 1200), (10, 10)])
@pytest.mark.parametrize("spectrum", ["fast", "slow", "lowrank", "cond1e12"])
def test_rsvd_factors_orthonormal_to_working_precision(rng, dtype, shape, spectrum):
    """U and V are orthonormal to a few eps whatever the spectrum: each is an orthonormal basis
    (CholeskyQR2 or Householder QR) times an orthogonal factor of the small SVD, and neither step
    loses more than a few eps per column (at most 17 eps measured on these cases)."""
    a, _ = with_spectrum(rng, *shape, spectrum)
    u, _, vh = vsfast.rsvd(a.astype(dtype), min(64, min(shape) // 2))
    assert orthonormality_error(u) <= 50 * EPS[dtype]
    assert orthonormality_error(vh.T) <= 50 * EPS[dtype]


@pytest.mark.parametrize("smallest", [3e-4, 1.05e-4, 3e-5, 1e-7])
def test_rsvd_float32_small_svd_either_side_of_the_gram_floor(rng, smallest):
    """float32's small SVD comes from the float64 Gram matrix of the projected matrix while its
    k-th singular value is at least 1e-4 of the first, else from LAPACK's SVD: on either side of
    that floor (1.05e-4: the worst case it admits), an exactly rank-k matrix (singular values from
    1 down to ``smallest``) gets its singular values to float32's rounding of A (a few
    eps * sigma_1) and orthonormal factors.
    The Gram route taken down to 1e-7 makes U 4e4 eps from orthonormal (measured)."""
    k = 40
    s_true = np.geomspace(1.0, smallest, k)
    left = np.linalg.qr(rng.standard_normal((600, k)))[0]
    right = np.linalg.qr(rng.standard_normal((900, k)))[0]
    a = ((left * s_true) @ right.T).astype(np.float32)
    u, s, vh = vsfast.rsvd(a, k)
    reference = np.linalg.svd(a.astype(np.float64), compute_uv=False)[:k]
    assert np.max(np.abs(np.asarray(s, np.float64) - reference)) <= 20 * EPS[np.float32]
    assert orthonormality_error(u) <= 50 * EPS[np.float32]
    assert orthonormality_error(vh.T) <= 50 * EPS[np.float32]
    assert spectral_error(a.astype(np.float64), u, s, vh) <= 50 * EPS[np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
def test_rsvd_singular_values_and_vectors_accurate_on_fast_decay(rng, dtype):
    a, s_true = with_spectrum(rng, 500, 300, "fast")
    u, s, vh = vsfast.rsvd(a.astype(dtype), 10)
    # With sigma_{k+p}/sigma_k = 10^-2.5 and two power iterations the leading triplets are exact to
    # working precision.
    np.testing.assert_allclose(s, s_true[:10], rtol=100 * EPS[dtype] * s_true[0] / s_true[9])
    u_ref, _, vh_ref = np.linalg.svd(a, full_matrices=False)
    # Singular vectors up to sign.
    signs = np.sign(np.sum(np.asarray(u, np.float64) * u_ref[:, :10], axis=0))
    np.testing.assert_allclose(np.asarray(u) * signs, u_ref[:, :10], atol=2000 * EPS[dtype])
    np.testing.assert_allclose((np.asarray(vh).T * signs), vh_ref[:10].T, atol=2000 * EPS[dtype])


def test_rsvd_batch_equals_single_and_is_seeded(rng):
    a = rng.standard_normal((6, 60, 90)).astype(np.float32)
    u, s, vh = vsfast.rsvd(a, 8, seed=3)
    for i in range(6):
        ui, si, vhi = vsfast.rsvd(a[i], 8, seed=3)
        np.testing.assert_array_equal(ui, u[i])
        np.testing.assert_array_equal(si, s[i])
        np.testing.assert_array_equal(vhi, vh[i])
    again = vsfast.rsvd(a, 8, seed=3)
    np.testing.assert_array_equal(again[0], u)
    other = vsfast.rsvd(a, 8, seed=4)
    assert not np.array_equal(other[0], u)


_THREADS_SCRIPT = """
import hashlib, numpy as np, vsfast
rng = np.random.default_rng(7)
h = hashlib.sha256()
options = [{}, {"method": "subspace"}, {"precision": "full"}, {"power_iters": "auto", "tol": 0.05}]
if vsfast._core.bf16_supported():
    options += [{"precision": "bfloat16"}, {"method": "subspace", "precision": "bfloat16"}]
for shape in [(700, 900), (900, 700), (5, 300, 520), (12000, 80)]:  # the last: reductions over 768-row chunks
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal(shape).astype(dtype)
        for kw in options:
            for part in vsfast.rsvd(a, 24, **kw):
                h.update(part.tobytes())
print(h.hexdigest())
"""


def test_rsvd_bitwise_identical_on_any_thread_count():
    """Every method, precision and the adaptive depth: the same bits on 1, 2 and 3 threads, also where
    a tall basis's reductions grow their row chunks to bound their partial sums' memory."""
    digests = set()
    for threads in ("1", "2", "3"):
        env = dict(os.environ, VSFAST_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True,
                             check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_set_num_threads_roundtrip():
    before = vsfast.get_num_threads()
    try:
        vsfast.set_num_threads(1)
        assert vsfast.get_num_threads() == 1
    finally:
        vsfast.set_num_threads(before)
    with pytest.raises(ValueError):
        vsfast.set_num_threads(0)


def test_rsvd_power_iterations_help_on_slow_decay(rng):
    a, s_true = with_spectrum(rng, 300, 300, "slow")
    errs = [np.median([spectral_error(a, *vsfast.rsvd(a, 10, power_iters=q, seed=s)) for s in range(5)])
            for q in (0, 2, 6)]
    assert errs[0] > errs[1] > errs[2] >= s_true[10] * (1 - 1e-9)


@pytest.mark.parametrize("make", ["fortran", "negative_stride", "readonly", "torch", "torch_transposed",
                                  "requires_grad", "big_endian"])
def test_rsvd_and_svd_accept_any_layout(rng, make):
    a = rng.standard_normal((40, 30))
    views = {
        "fortran": lambda: np.asfortranarray(a),
        "negative_stride": lambda: np.ascontiguousarray(a[::-1])[::-1],
        "readonly": lambda: np.frombuffer(a.tobytes(), dtype=np.float64).reshape(40, 30),
        "torch": lambda: torch.from_numpy(a),
        "torch_transposed": lambda: torch.from_numpy(np.ascontiguousarray(a.T)).T,
        "requires_grad": lambda: torch.from_numpy(a).clone().requires_grad_(True),
        "big_endian": lambda: a.astype(">f8"),
    }
    view = views[make]()
    ref = vsfast.rsvd(a, 5)
    got = vsfast.rsvd(view, 5)
    is_torch = isinstance(view, torch.Tensor)
    for r, g in zip(ref, got):
        assert isinstance(g, torch.Tensor) == is_torch
        g = g.numpy() if is_torch else g
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)
    s_ref = np.linalg.svd(a, compute_uv=False)
    s = vsfast.svd(view)[1]
    np.testing.assert_allclose(s.numpy() if is_torch else s, s_ref, rtol=1e-12)
