"""vsfast.metrics against their definitions computed plainly in float64: the power-law fit
against a direct transcription of the Clauset-Shalizi-Newman procedure and against samples of a
known power law, effective and stable rank, norms, the rank rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import with_spectrum
from vsfast import metrics
from vsfast.metrics import effective_rank, frobenius_norm, powerlaw_fit, spectral_metrics


def csn_reference(x: np.ndarray):
    """Every eigenvalue but the largest as x_min; the MLE and the KS distance of each, plainly."""
    x = np.sort(x[x > 0].astype(np.float64))
    best = None
    for i in range(x.size - 1):
        tail = x[i:]
        n = tail.size
        spread = np.sum(np.log(tail / x[i]))
        if spread <= 0:
            continue
        alpha = 1 + n / spread
        empirical = np.arange(n) / n
        fitted = 1 - (tail / x[i]) ** (1 - alpha)
        d = np.max(np.abs(fitted - empirical))
        if best is None or d < best[2]:
            best = (alpha, x[i], d, n)
    return best


@pytest.mark.parametrize("size", [10, 37, 400, 1500])
def test_powerlaw_fit_is_the_csn_procedure(rng, size):
    for sample in (rng.pareto(2.0, size) + 1.0, rng.random(size) ** 3, np.exp(rng.standard_normal(size))):
        alpha, xmin, d, tail = csn_reference(sample)
        fit = powerlaw_fit(sample)
        assert fit.xmin == xmin and fit.tail == tail
        assert fit.alpha == pytest.approx(alpha, rel=1e-12) and fit.ks_distance == pytest.approx(d, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_powerlaw_fit_recovers_a_known_exponent(rng, alpha):
    # Pareto samples with density ~ x^-alpha above 1: the MLE's standard error is (alpha - 1)/sqrt(n).
    n = 5000
    x = (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))
    fit = powerlaw_fit(x)
    assert abs(fit.alpha - alpha) < 4 * (alpha - 1) / math.sqrt(fit.tail)
    assert fit.tail > n / 4


def test_powerlaw_fit_edges():
    assert math.isnan(powerlaw_fit(np.arange(1.0, metrics.ALPHA_MIN_EIGENVALUES)).alpha)
    assert math.isnan(powerlaw_fit(np.zeros(50)).alpha)  # zeros are not part of any tail
    equal = powerlaw_fit(np.ones(30))  # no spread: no finite fit anywhere
    assert equal.ks_distance == 1.0 and math.isinf(equal.alpha)


def test_effective_rank():
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.zeros(4)) == 0.0
    s = np.array([4.0, 2.0, 1.0, 1.0])
    p = s / s.sum()
    assert effective_rank(s) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-14)


def test_frobenius_norm_in_chunks_of_a_memory_map(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(metrics, "_NORM_CHUNK", 1000)
    a = rng.standard_normal((301, 77)).astype(np.float32)
    a.tofile(tmp_path / "a.bin")
    mapped = np.memmap(tmp_path / "a.bin", dtype=np.float32, mode="r", shape=a.shape)
    assert frobenius_norm(mapped) == pytest.approx(np.linalg.norm(a.astype(np.float64)), rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectral_metrics_of_a_chosen_spectrum(rng, dtype):
    s = np.concatenate([2.0 ** -np.arange(20.0), np.zeros(10)])
    a, s = with_spectrum(rng, 40, 30, s)
    a = a.astype(dtype)
    computed = np.linalg.svd(a.astype(np.float64), compute_uv=False).astype(dtype)
    frob = frobenius_norm(a)
    m = spectral_metrics(computed, frob, a.shape, dtype, complete=True)
    assert m.numerical_rank == np.linalg.matrix_rank(a)
    assert m.sigma_max == pytest.approx(1.0, rel=1e-6)
    assert m.frobenius_norm == pytest.approx(np.sqrt(np.sum(s**2)), rel=1e-6)
    assert m.stable_rank == pytest.approx(np.sum(s**2), rel=1e-5)
    assert m.condition_number == pytest.approx(s[0] / s[m.numerical_rank - 1], rel=1e-4)
    assert m.energy_kept == pytest.approx(1.0, abs=1e-6)
    assert m.effective_rank == pytest.approx(effective_rank(computed), rel=1e-12)

    top = spectral_metrics(computed[:5], frob, a.shape, dtype, complete=False)
    assert math.isnan(top.effective_rank) and top.numerical_rank == 5
    assert top.energy_kept == pytest.approx(np.sum(s[:5] ** 2) / np.sum(s**2), rel=1e-5)
    assert top.stable_rank == pytest.approx(m.stable_rank) and top.sigma_max == m.sigma_max


def test_alpha_of_a_top_k_spectrum_is_the_full_fit_restricted_to_its_tail(rng):
    # The eigenvalues of a heavy-tailed spectrum: the fit on the top k searches x_min among them,
    # with every value it needs known; it is the full fit whenever that one's x_min lies there.
    s = np.sort(np.sqrt(rng.pareto(1.5, 300) + 1.0))[::-1]
    full = spectral_metrics(s, float(np.sqrt(np.sum(s**2))), (300, 400), np.float64, complete=True)
    k = full.alpha_tail + 20
    top = spectral_metrics(s[:k], full.frobenius_norm, (300, 400), np.float64, complete=False)
    assert (top.alpha, top.alpha_xmin, top.alpha_tail) == (full.alpha, full.alpha_xmin, full.alpha_tail)
    alpha, xmin, _, tail = csn_reference(s[:k] ** 2)
    assert top.alpha == pytest.approx(alpha, rel=1e-12)


def test_zero_matrix():
    m = spectral_metrics(np.zeros(4, np.float32), 0.0, (4, 6), np.float32, complete=True)
    assert (m.numerical_rank, m.sigma_max, m.stable_rank, m.effective_rank, m.energy_kept) == (0, 0.0, 0.0, 0.0, 0.0)
    assert math.isinf(m.condition_number) and math.isnan(m.alpha)
