"""rsvd's methods against the theory's bounds, the adaptive depth against its tol, the bfloat16
passes against their check, and the default call against torch.svd_lowrank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vsfast
from conftest import EPS, random_orthonormal, with_spectrum
from test_svd import spectral_error
from vsfast._backends import gpu

BF16 = vsfast._core.bf16_supported()
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no AVX512-BF16")
DTYPES = [np.float32, np.float64]


def gap_spectrum(q: int, k: int) -> np.ndarray:
    """k values from 2 down to 1, then a tail from 1/2 decaying like 1/j: sigma_k/sigma_{k+1} = 2."""
    j = np.arange(q)
    return np.where(j < k, 2.0 - j / k, 0.5 * k / np.maximum(j, 1))


SPECTRA = {"gap": gap_spectrum, "slow": None, "fast": None}


def spectrum_matrix(rng, shape, name, k):
    s = SPECTRA[name](min(shape), k) if SPECTRA[name] else name
    return with_spectrum(rng, *shape, s)


# --- the theory's bounds ------------------------------------------------------------------------

def sketch_factor(short: int, k: int, b: int, u: float = 6.0, t: float = 4.0) -> float:
    """A bound on ||Omega_2 Omega_1^+|| for a b-column Gaussian sketch of a matrix whose right
    singular vectors split into k and short - k: Omega_2 is a (short - k) x b Gaussian matrix,
    ||Omega_2|| <= sqrt(short - k) + sqrt(b) + u but with probability e^(-u^2/2) (HMT 2011, Prop.
    10.3); Omega_1 a k x b one, ||Omega_1^+|| <= e sqrt(b) / (b - k + 1) t but with probability
    t^-(b - k + 1) (Prop. 10.4). With u = 6 and t = 4: both hold but once in 10^7 draws."""
    return (math.sqrt(short - k) + math.sqrt(b) + u) * math.e * math.sqrt(b) / (b - k + 1) * t


def error_bound(s: np.ndarray, k: int, b: int, q: int, method: str) -> float:
    """A bound on ||A - U S Vh||_2 of the rank-k result from a range finder of b columns and q
    iterations, in exact arithmetic, for singular values s.

    The range finder's space contains phi(A) Omega for the odd polynomial phi of degree 2q + 1 its
    iterations can form: sigma^(2q+1) for subspace iteration; for block Krylov, whose space holds
    every power, sigma T_q(2 sigma^2 / sigma_{k+1}^2 - 1) (T_q Chebyshev's), at most sigma_{k+1}
    below sigma_{k+1} and at least T_q(2 g^2 - 1) sigma above sigma_k, g = sigma_k / sigma_{k+1}.
    HMT's Theorem 9.1, whose proof holds for phi(A) Omega as for A Omega, gives
    ||(I - QQ^T) A||^2 <= sigma_{k+1}^2 + (sigma_{k+1} c ||Omega_2 Omega_1^+||)^2 with
    c = g^-2q (subspace) or 1 / T_q(2 g^2 - 1) (Krylov); truncating to rank k adds at most
    sigma_{k+1} (HMT, Section 9.4)."""
    short = len(s)
    g = s[k - 1] / s[k]
    c = g ** (-2 * q) if method == "subspace" else 1 / math.cosh(q * math.acosh(max(2 * g * g - 1, 1.0)))
    return s[k] + s[k] * math.hypot(1.0, c * sketch_factor(short, k, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(400, 150), (150, 400)])
@pytest.mark.parametrize("spectrum", ["gap", "slow", "fast"])
@pytest.mark.parametrize("method", ["subspace", "krylov"])
@pytest.mark.parametrize("q", [0, 1, 2])
def test_each_method_within_the_theory_bound(rng, dtype, shape, spectrum, method, q):
    """Every seed's error within the bound (exact arithmetic), plus rounding at the level of the
    other tests' backward-error slack; and never below the optimum sigma_{k+1}."""
    k, p = 20, 10
    a, s = spectrum_matrix(rng, shape, spectrum, k)
    bound = error_bound(s, k, k + p, q, method) + 10 * max(shape) * EPS[dtype] * s[0]
    for seed in range(5):
        err = spectral_error(a, *vsfast.rsvd(a.astype(dtype), k, method=method, oversample=p, power_iters=q,
                                              precision="full", seed=seed))
        assert s[k] * (1 - 1e-6) - 10 * max(shape) * EPS[dtype] <= err <= bound


def test_the_krylov_bound_beats_the_subspace_bound_and_is_informative():
    """The bounds the previous test checks are not vacuous: on the gap spectrum, two Krylov
    iterations are bounded by 2.5 sigma_{k+1} (the truncation's sigma_{k+1} plus a range error
    within 1.5 sigma_{k+1}), subspace iteration's bound is over three times as wide."""
    s = gap_spectrum(150, 20)
    krylov, subspace = error_bound(s, 20, 30, 2, "krylov"), error_bound(s, 20, 30, 2, "subspace")
    assert krylov <= 2.5 * s[20] and subspace > 3 * krylov


# --- the adaptive depth -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(400, 150), (150, 400)])
@pytest.mark.parametrize("spectrum,tol", [("fast", 1e-2), ("fast", 1e-4), ("gap", 0.3), ("slow", 0.4)])
def test_adaptive_depth_never_worse_than_tol(rng, dtype, shape, spectrum, tol):
    """Where rank k can reach tol (sigma_{k+1} < tol sigma_1), the result does, for every seed:
    the stop certifies it from an upper bound on the error."""
    k = 20
    a, s = spectrum_matrix(rng, shape, spectrum, k)
    assert s[k] < tol * s[0]
    for seed in range(5):
        err = spectral_error(a, *vsfast.rsvd(a.astype(dtype), k, power_iters="auto", tol=tol, seed=seed))
        assert err <= tol * s[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_depth_stops_when_tol_is_out_of_reach(rng, dtype):
    """sigma_{k+1} = 0.22 sigma_1 and tol = 1e-3: no rank-20 result reaches tol; the iteration stops
    once the projected singular values settle, near the optimum."""
    k = 20
    a, s = with_spectrum(rng, 400, 150, "slow")
    err = spectral_error(a, *vsfast.rsvd(a.astype(dtype), k, power_iters="auto", tol=1e-3))
    assert s[k] <= err * (1 + 1e-6) and err <= 1.05 * s[k]


# --- the bfloat16 passes ------------------------------------------------------------------------

def bf16_rounding(a: np.ndarray) -> float:
    """||A - bf16(A)||_F for float32 A, rounding to nearest even as the core does."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    return float(np.linalg.norm(a.astype(np.float64) - rounded.astype(np.float64)))


def needs_full_precision(rng, k=20):
    """700 x 500 (above the 2^18 entries where bfloat16 passes start): k values of 1, then a flat
    tail at 1e-4, below the spectral norm of A's bfloat16 rounding (about 7e-4), so that passes
    in bfloat16 cannot resolve it."""
    s = np.where(np.arange(500) < k, 1.0, 1e-4)
    a = (random_orthonormal(rng, 700, 500) * s) @ random_orthonormal(rng, 500, 500).T
    return a.astype(np.float32), s


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_bf16_never_used_where_the_check_says_it_costs_accuracy(rng, method):
    """A spectrum built to need float32 gets it: the automatic choice returns bitwise the result of
    float32 passes. Forcing bfloat16 on it shows what the check protects."""
    a, s = needs_full_precision(rng)
    assert bf16_rounding(a) > s[20] / 4  # the premise: the check must refuse
    auto = vsfast.rsvd(a, 20, method=method)
    full = vsfast.rsvd(a, 20, method=method, precision="full")
    for x, y in zip(auto, full):
        np.testing.assert_array_equal(x, y)
    if BF16:
        forced = spectral_error(a, *vsfast.rsvd(a, 20, method=method, precision="bfloat16"))
        assert forced > 1.5 * spectral_error(a, *full)


@needs_bf16
@pytest.mark.parametrize("method", ["krylov", "subspace"])
@pytest.mark.parametrize("shape", [(600, 1000), (1000, 600)])
def test_bf16_used_where_it_costs_no_accuracy(rng, method, shape):
    """A spectrum decaying like a trained layer's (sigma_{k+1} = 0.05 sigma_1, the rounding 1/20 of
    it): the automatic choice takes bfloat16 passes (the result differs from float32's), and the
    error stays within float32's plus twice the rounding, the first-order bound of the check."""
    k = 20
    s = 1.0 / (1.0 + np.arange(min(shape))) ** 1.0
    a, _ = with_spectrum(rng, *shape, s)
    a = a.astype(np.float32)
    rounding = bf16_rounding(a)
    assert rounding < s[k] / 8
    for seed in range(3):
        auto = vsfast.rsvd(a, k, method=method, seed=seed)
        full = vsfast.rsvd(a, k, method=method, precision="full", seed=seed)
        assert not np.array_equal(auto.S, full.S)
        assert spectral_error(a, *auto) <= spectral_error(a, *full) + 2 * rounding


def layer_like(rng, shape, k=20):
    """float32, a spectrum decaying like 1/j (sigma_{k+1} = sigma_1 / (k + 1)): bfloat16 passes pass
    their check on it (the premise of the tests that use it)."""
    s = 1.0 / (1.0 + np.arange(min(shape)))
    a, _ = with_spectrum(rng, *shape, s)
    return a.astype(np.float32), s


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_a_block_of_exactly_k_columns(rng, method):
    """oversample=0: the first projected matrix has no (k+1)-th value to check the bfloat16
    passes against; the check waits for a later one. The result does not depend on what an
    earlier call left in the thread's workspace, and is within the theory's bound."""
    a, s = layer_like(rng, (700, 600))
    first = vsfast.rsvd(a, 20, method=method, oversample=0, power_iters=2)
    vsfast.rsvd(rng.standard_normal((900, 800)).astype(np.float32), 40, method=method)  # other workspace contents
    again = vsfast.rsvd(a, 20, method=method, oversample=0, power_iters=2)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    assert spectral_error(a, *first) <= error_bound(s, 20, 20, 2, method) + 2 * bf16_rounding(a)


@needs_bf16
@pytest.mark.parametrize("scale", [2.0**200, 2.0**-200])
def test_bf16_passes_on_matrices_beyond_floats_range(rng, scale):
    """A float64 matrix far outside float32's range: every pass's operands are scaled into it, so
    the result is the scaled result of the same matrix in range (to rounding; the scaling by a
    power of two is exact, the bfloat16 check's verdict the same)."""
    a, s = layer_like(rng, (700, 600))
    a = a.astype(np.float64)
    ref = vsfast.rsvd(a, 20)
    assert not np.array_equal(ref.S, vsfast.rsvd(a, 20, precision="full").S)  # the premise: bfloat16 passes
    big = vsfast.rsvd(a * scale, 20)
    assert np.all(np.isfinite(big.S))
    np.testing.assert_allclose(big.S / scale, ref.S, rtol=1e-12)
    assert spectral_error(a * scale, *big) <= 1.05 * spectral_error(a, *ref) * scale


def test_float64_matrix_exact_in_bf16_keeps_float64_accuracy(rng):
    """A float64 integer matrix of rank 10 (its entries exact in bfloat16, so its rounding is 0):
    float32 accumulation in the passes would leave 1e-7 of it outside the basis; the check counts
    that accumulation, and the rank-10 result reproduces the matrix to float64 rounding."""
    a = (rng.integers(-3, 4, (700, 10)) @ rng.integers(-3, 4, (10, 600))).astype(np.float64)
    assert np.all(np.abs(a) < 256)  # exact in bfloat16's 8 bits
    u, s, vh = vsfast.rsvd(a, 10)
    assert np.abs(u * s @ vh - a).max() <= 1e-10 * np.abs(a).max()


@pytest.mark.skipif(BF16, reason="this CPU has AVX512-BF16")
def test_forced_bf16_on_a_cpu_without_it_is_refused(rng):
    with pytest.raises(ValueError, match="AVX512-BF16"):
        vsfast.rsvd(rng.standard_normal((40, 30)), 5, precision="bfloat16")


# --- the default call against torch -------------------------------------------------------------

def median_errors(a, ad, k, seeds=7):
    ours, theirs = [], []
    for seed in range(seeds):
        ours.append(spectral_error(a, *vsfast.rsvd(ad, k, seed=seed)))
        torch.manual_seed(seed)
        tu, ts, tv = torch.svd_lowrank(torch.from_numpy(ad), q=k + 10, niter=2)
        theirs.append(spectral_error(a, tu[:, :k].numpy(), ts[:k].numpy(), tv[:, :k].numpy().T))
    return float(np.median(ours)), float(np.median(theirs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(400, 150), (150, 400)])
@pytest.mark.parametrize("spectrum", ["fast", "slow", "cond1e12"])
def test_default_at_least_as_accurate_as_torch(rng, dtype, shape, spectrum):
    """rsvd(A, k) against torch.svd_lowrank(A, q=k+10, niter=2), median over seeds, with only the
    rounding slack of a backward-stable computation (both sit at sigma_{k+1} on fast spectra)."""
    a, s = with_spectrum(rng, *shape, spectrum)
    ours, theirs = median_errors(a, a.astype(dtype), 20)
    assert ours <= theirs + 10 * max(shape) * EPS[dtype] * s[0]


@pytest.mark.parametrize("shape", [(1200, 300), (300, 1200)])
@pytest.mark.parametrize("spectrum", ["fast", "lowrank"])
def test_default_at_least_as_accurate_as_torch_at_float32_rounding(rng, shape, spectrum):
    """Spectra below float32's precision inside the sketch: what is left is rounding, and the
    default's median is at most torch's, with no slack."""
    a, _ = with_spectrum(rng, *shape, spectrum)
    ours, theirs = median_errors(a, a.astype(np.float32), 64, seeds=5)
    assert ours <= theirs


@pytest.mark.parametrize("make", ["random_init", "layer_like"])
def test_default_at_least_as_accurate_as_torch_on_layer_spectra(rng, make):
    """A random-init layer (Gaussian: a flat, Marchenko-Pastur spectrum, the hardest for few
    passes) and a trained-like layer (power law plus a noise floor, with bfloat16 passes where
    this CPU has them)."""
    if make == "random_init":
        a = rng.standard_normal((1024, 768)) / np.sqrt(768)
    else:
        r = 256
        a = (rng.standard_normal((512, r)) / (1.0 + np.arange(r))) @ rng.standard_normal((r, 2048)) / np.sqrt(512 * 2048)
        a += 1e-3 / np.sqrt(2048) * rng.standard_normal(a.shape)
    ours, theirs = median_errors(a, a.astype(np.float32), 64, seeds=5)
    assert ours <= theirs


# --- arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,match", [
    ({"method": "lanczos"}, ValueError, "method: expected one of 'auto', 'krylov', 'subspace'"),
    ({"precision": "half"}, ValueError, "precision: expected one of 'auto', 'full', 'bfloat16'"),
    ({"tol": 0.1}, ValueError, "tol: only used with power_iters='auto'"),
    ({"power_iters": "auto"}, ValueError, "needs tol"),
    ({"power_iters": "auto", "tol": 0.1, "method": "subspace"}, ValueError, "needs method='krylov'"),
    ({"power_iters": "auto", "tol": 0}, ValueError, "tol: expected a number > 0"),
    ({"power_iters": "auto", "tol": -1.0}, ValueError, "tol: expected a finite number >= 0"),
    ({"power_iters": "auto", "tol": float("nan")}, ValueError, "tol: expected a finite number"),
    ({"power_iters": "some"}, TypeError, "power_iters: expected an integer"),
    ({"oversample": -1}, ValueError, "oversample: expected oversample >= 0"),
])
def test_rsvd_arguments_are_checked(rng, kwargs, error, match):
    with pytest.raises(error, match=match):
        vsfast.rsvd(rng.standard_normal((30, 20)), 5, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "krylov"}, "method='krylov' runs on the CPU"),
    ({"tol": 0.1}, "power_iters='auto' runs on the CPU"),
    ({"precision": "bfloat16"}, "precision='bfloat16' runs on the CPU"),
])
def test_the_gpu_refuses_what_runs_on_the_cpu_only(kwargs, match):
    options = {"method": "subspace", "precision": "auto", "tol": 0.0, **kwargs}
    with pytest.raises(TypeError, match=match):
        gpu.rsvd(None, 1, 10, 2, 0, **options)


def test_auto_is_krylov_on_the_cpu_and_subspace_on_the_gpu(rng):
    a = rng.standard_normal((200, 120))
    np.testing.assert_array_equal(vsfast.rsvd(a, 8).S, vsfast.rsvd(a, 8, method="krylov").S)
    assert gpu.RSVD_METHOD == "subspace"


def test_spaces_uses_rsvds_defaults(rng):
    w = rng.standard_normal((400, 300))
    sp = vsfast.spaces(w, k=20, method="randomized")
    np.testing.assert_array_equal(sp.singular_values, vsfast.rsvd(w, 20).S)
