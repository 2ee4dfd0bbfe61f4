"""Per-layer metrics of a weight matrix W (m x n) from its singular values: the numbers spectral
tools such as WeightWatcher report, each defined here with its reference.

With s_1 >= s_2 >= ... the singular values of W and q = min(m, n):

- ``sigma_max`` = s_1, the spectral norm ||W||_2.
- ``frobenius_norm`` = ||W||_F = sqrt(sum of squared entries), summed from the entries in
  float64 (exact whatever part of the spectrum was computed).
- ``stable_rank`` = ||W||_F^2 / ||W||_2^2 (Rudelson & Vershynin, "Sampling from large matrices",
  J. ACM 54(4), 2007): between 1 and the rank, insensitive to tiny singular values. WeightWatcher's
  ``stable_rank`` (sum of the eigenvalues over the largest) is the same number.
- ``effective_rank`` = exp(H(p)), p_i = s_i / sum_j s_j, H the Shannon entropy (Roy & Vetterli,
  "The effective rank: a measure of effective dimensionality", EUSIPCO 2007). It needs the whole
  spectrum: NaN when only the top k singular values were computed.
- ``numerical_rank``: the singular values above max(atol, rtol * s_1), rtol = max(m, n) * eps of
  the dtype computed in by default: numpy's ``matrix_rank`` rule, the rank of :class:`vsfast.Spaces`
  (counted by the same compiled function). With top-k it counts among the k.
- ``energy_kept``: the share of ||W||_F^2 in the top min(k, rank) singular values, k the number
  computed (all of them: ~1; top-k: what a rank-k approximation keeps).
- ``alpha``: the exponent of a power law p(lambda) ~ lambda^-alpha fitted to the tail of the
  empirical spectral density of W^T W, the eigenvalues lambda_i = s_i^2 (those above the rank
  tolerance), by the estimator of Clauset, Shalizi & Newman ("Power-law distributions in empirical
  data", SIAM Review 51(4), 2009), which WeightWatcher's ``alpha`` uses: for a lower bound
  x_min, the continuous maximum-likelihood estimate alpha = 1 + n / sum_{lambda_i >= x_min}
  ln(lambda_i / x_min) over the n eigenvalues in the tail; x_min is the eigenvalue (any but the
  largest) that minimises the Kolmogorov-Smirnov distance D = max |F_emp - F_fit| between the
  tail's empirical CDF (the powerlaw package's convention, F_emp(lambda_(j)) = j/n for the j-th
  smallest, j = 0..n-1) and the fitted one, F_fit(lambda) = 1 - (lambda/x_min)^(1 - alpha).
  With top-k singular values the tail is searched among the k largest eigenvalues only (x_min >=
  lambda_k): every quantity the fit uses is then known exactly, and the result is the full fit's
  whenever the full fit's x_min lies there. Fewer than ``ALPHA_MIN_EIGENVALUES`` eigenvalues
  give NaN. The fit's x_min, D and tail size are reported beside alpha.

Differences from WeightWatcher 0.7 (default ``pl_package="ww"``): it fits the eigenvalues above an
absolute 1e-5, this module those above the rank tolerance (relative to s_1); below 20 eigenvalues
it switches to a bias-corrected estimator with a penalised x_min choice, this module does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _core

__all__ = ["ALPHA_MIN_EIGENVALUES", "PowerLawFit", "SpectralMetrics", "effective_rank", "frobenius_norm",
           "powerlaw_fit", "spectral_metrics"]

#: Below this many eigenvalues no power law is fitted (alpha is NaN).
ALPHA_MIN_EIGENVALUES = 10
# Entries summed per step of frobenius_norm: 8 MB of float64 at a time, whatever the matrix.
_NORM_CHUNK = 1 << 20
# Candidate x_min values x tail values evaluated per step of the KS scan.
_KS_BLOCK = 1 << 15


class PowerLawFit(NamedTuple):
    """A power law fitted to a spectrum's tail: exponent, lower bound, KS distance, tail size."""

    alpha: float
    xmin: float
    ks_distance: float
    tail: int


@dataclass(frozen=True)
class SpectralMetrics:
    """The metrics of one matrix (see the module docstring for their definitions)."""

    sigma_max: float
    frobenius_norm: float
    stable_rank: float
    effective_rank: float
    numerical_rank: int
    condition_number: float
    energy_kept: float
    alpha: float
    alpha_xmin: float
    alpha_ks_distance: float
    alpha_tail: int


def frobenius_norm(a) -> float:
    """||A||_F of a numpy array (any shape: the matrices of a batch together), accumulated in
    float64 a chunk at a time, so that a memory-mapped matrix is read once and never copied whole."""
    flat = np.asarray(a).reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _NORM_CHUNK):
        chunk = flat[start:start + _NORM_CHUNK].astype(np.float64)
        # numpy's pairwise sum, not a BLAS dot: no BLAS threads to wake beside vsfast's
        total += float(np.sum(np.square(chunk, out=chunk)))
    return math.sqrt(total)


def effective_rank(s: np.ndarray) -> float:
    """exp of the entropy of the singular values normalised to sum 1 (Roy & Vetterli 2007); 0
    for an all-zero spectrum."""
    s = np.asarray(s, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def powerlaw_fit(eigenvalues: np.ndarray) -> PowerLawFit:
    """The Clauset-Shalizi-Newman fit of a power law to the tail of positive ``eigenvalues``
    (see the module docstring): every value but the largest is tried as x_min, the one with the
    smallest KS distance wins (the first of equals). NaN fields for fewer than
    ``ALPHA_MIN_EIGENVALUES`` positive values."""
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    x = x[x > 0]
    if x.size < ALPHA_MIN_EIGENVALUES:
        return PowerLawFit(math.nan, math.nan, math.nan, 0)
    logs = np.log(x)
    count = x.size
    first = np.arange(count - 1)  # candidate i: x_min = x[i], tail x[i:]
    tail = count - first
    # sum_{j >= i} ln(x_j / x_i), from a suffix sum of the logarithms
    spread = np.cumsum(logs[::-1])[::-1][:-1] - tail * logs[:-1]
    with np.errstate(divide="ignore"):
        alphas = np.where(spread > 0, 1.0 + tail / np.where(spread > 0, spread, 1.0), np.inf)
    distances = _ks_distances(logs, alphas, tail)
    best = int(np.argmin(distances))
    return PowerLawFit(float(alphas[best]), float(x[best]), float(distances[best]), int(tail[best]))


def _ks_distances(logs: np.ndarray, alphas: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """D_i = max_{j >= i} |1 - (x_j/x_i)^(1 - alpha_i) - (j - i)/n_i| for every candidate i,
    in blocks of candidates small enough for the processor's cache (O(count^2) work in all)."""
    count = logs.size
    distances = np.ones(alphas.size)  # a candidate without a finite fit (all tail values equal) loses
    rows = max(1, _KS_BLOCK // count)
    for begin in range(0, alphas.size, rows):
        cand = np.arange(begin, min(begin + rows, alphas.size))
        finite = np.isfinite(alphas[cand])
        cand = cand[finite]
        if cand.size == 0:
            continue
        # (x_j / x_i)^(1 - alpha_i) - 1 + (j - i)/n_i for j from `begin` on, in place
        gap = logs[None, begin:] - logs[cand, None]
        gap *= (1.0 - alphas[cand])[:, None]
        with np.errstate(over="ignore"):  # j < i overflows; those entries are dropped below
            np.exp(gap, out=gap)
        offset = np.arange(begin, count)[None, :] - cand[:, None]
        gap += offset / tail[cand, None] - 1.0
        np.abs(gap, out=gap)
        gap[offset < 0] = 0.0  # j < i: not in candidate i's tail
        distances[cand] = gap.max(axis=1)
    return distances


def spectral_metrics(s: np.ndarray, frobenius: float, shape: tuple[int, int], dtype, *, complete: bool,
                     rtol: float | None = None, atol: float | None = None) -> SpectralMetrics:
    """The metrics of an m x n matrix from its computed singular values ``s`` (descending, all
    of them when ``complete``, else the top k) and its Frobenius norm; the rank tolerance is that
    of ``dtype``, the dtype the singular values were computed in (see the module docstring)."""
    m, n = shape
    host = np.ascontiguousarray(s, dtype=np.dtype(dtype))
    rank = int(_core.rank(host, m, n, rtol, atol))
    s64 = host.astype(np.float64)
    sigma_max = float(s64[0]) if s64.size else 0.0
    energy = float(np.sum(s64[:rank] ** 2)) / frobenius**2 if frobenius > 0 else 0.0
    fit = powerlaw_fit(s64[:rank] ** 2)
    return SpectralMetrics(
        sigma_max=sigma_max,
        frobenius_norm=float(frobenius),
        stable_rank=(frobenius / sigma_max) ** 2 if sigma_max > 0 else 0.0,
        effective_rank=effective_rank(s64) if complete else math.nan,
        numerical_rank=rank,
        condition_number=float(s64[0] / s64[rank - 1]) if rank else math.inf,
        energy_kept=min(energy, 1.0),
        alpha=fit.alpha, alpha_xmin=fit.xmin, alpha_ks_distance=fit.ks_distance, alpha_tail=fit.tail,
    )
