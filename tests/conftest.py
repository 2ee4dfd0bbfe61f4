"""Shared helpers: matrices with a chosen spectrum and float64 references."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

#: The suite runs under AddressSanitizer (scripts/sanitize.sh preloads its runtime). Its allocator
#: keeps freed memory in quarantine, so a process's resident size grows by design there.
ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
measures_memory = pytest.mark.skipif(ASAN, reason="AddressSanitizer's quarantine makes resident sizes grow by design")

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


# Tests that read MNIST take it from VSFAST_DATA, which the test command sets from ../shared.
needs_mnist = pytest.mark.skipif(not os.environ.get("VSFAST_DATA") or not Path(os.environ["VSFAST_DATA"]).is_dir(),
                                 reason="needs MNIST in VSFAST_DATA (the test command sets it)")


def random_orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n x k with orthonormal columns, Haar-distributed (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


SPECTRA = {
    "fast": lambda q: 10.0 ** (-np.arange(q) / 4),  # two decades every eight values
    "slow": lambda q: 1.0 / np.sqrt(np.arange(1, q + 1)),
    "lowrank": lambda q: np.where(np.arange(q) < max(1, q // 5), 1.0 + np.arange(q)[::-1] / q, 0.0),
    "cond1e12": lambda q: np.logspace(0, -12, q),
}


def with_spectrum(rng: np.random.Generator, m: int, n: int, spectrum: str | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, s): an m x n float64 matrix U diag(s) V^T with Haar U, V and the chosen singular values."""
    q = min(m, n)
    s = SPECTRA[spectrum](q) if isinstance(spectrum, str) else np.asarray(spectrum, dtype=np.float64)
    a = (random_orthonormal(rng, m, q) * s) @ random_orthonormal(rng, n, q).T
    return a, s


def unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a whose data start one byte past an aligned address, as numpy
    admits (an array unpickled from a network buffer can be one)."""
    buffer = np.empty(a.nbytes + 1, dtype=np.uint8)[1:]
    out = buffer.view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def orthonormality_error(q: np.ndarray) -> float:
    """max |Q^T Q - I| in float64."""
    q = np.asarray(q, dtype=np.float64)
    return float(np.abs(q.T @ q - np.eye(q.shape[1])).max()) if q.shape[1] else 0.0


def rank_bounds(w: np.ndarray, rtol: float | None = None) -> tuple[int, int]:
    """The ranks a backward-stable SVD may report for w under numpy's tolerance: singular values
    within the SVD's error bound of the threshold may fall either side of it."""
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    eps = np.finfo(w.dtype).eps
    tol = (max(w.shape) * eps if rtol is None else rtol) * s[0]
    slack = 10 * max(w.shape) * eps * s[0]
    return int(np.sum(s > tol + slack)), int(np.sum(s > tol - slack))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240201)


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only when asked for: ``-m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long run (minutes on a 2-core CPU): run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
