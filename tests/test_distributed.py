"""vsfast.distributed on a LocalCluster of two worker processes on the loopback address, started
and closed here: the randomized SVD of dask arrays against the in-memory vsfast.rsvd, its
independence of the chunks and of the workers."""

from __future__ import annotations

import numpy as np
import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import vsfast  # noqa: E402
from vsfast import distributed as vd  # noqa: E402

from conftest import EPS, orthonormality_error, with_spectrum  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, on 127.0.0.1, no dashboard: the cluster every
    test of this module shares (the current client while they run)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      worker_dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def rounding(dtype, a: np.ndarray, s0: float) -> float:
    """How far two computations of the same rsvd may differ: the products sum max(m, n) terms
    each, in a different order when the blocks differ; random rounding errors grow like
    sqrt(max(m, n)) eps |A| (10 covers the few further products of the small steps)."""
    return 10 * np.sqrt(max(a.shape)) * EPS[dtype] * s0


def product(U, S, Vh) -> np.ndarray:
    return (np.asarray(U, dtype=np.float64) * S) @ np.asarray(Vh, dtype=np.float64)


# --- rsvd -------------------------------------------------------------------------------------

CHUNKINGS = {  # shape: chunkings of x (rows or columns along the long side, merged across the short one)
    (900, 120): [(900, 120), (100, 120), (333, 120), (250, 60)],
    (120, 900): [(120, 900), (120, 100), (60, 333)],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", list(CHUNKINGS))
@pytest.mark.parametrize("power_iters", [0, 2])
def test_rsvd_equals_in_memory_rsvd_to_rounding_whatever_the_chunks(client, rng, dtype, shape, power_iters):
    """With no power iteration and a slowly decaying spectrum the sketch decides the result: only
    the in-memory call's own sketch gives it to rounding."""
    a, _ = with_spectrum(rng, *shape, "slow")
    a = a.astype(dtype)
    u, s, vh = vsfast.rsvd(a, 12, power_iters=power_iters, seed=5)
    expected = product(u, s, vh)
    tol = rounding(dtype, a, s[0])
    for chunks in CHUNKINGS[shape]:
        U, S, Vh = vd.rsvd(da.from_array(a, chunks=chunks), 12, power_iters=power_iters, seed=5)
        assert S.dtype == dtype and np.abs(S - s).max() <= tol, chunks
        assert np.abs(product(U, S, Vh) - expected).max() <= tol, chunks


@pytest.mark.parametrize("shape, chunks, long_axis", [((900, 120), (200, 120), 0), ((120, 900), (120, 200), 1)])
def test_rsvd_factors_shapes_kinds_and_orthonormality(client, rng, shape, chunks, long_axis):
    a, _ = with_spectrum(rng, *shape, "fast")
    x = da.from_array(a, chunks=chunks)
    U, S, Vh = vd.rsvd(x, 7)
    long_factor, short_factor = (U, Vh) if long_axis == 0 else (Vh, U)
    assert isinstance(long_factor, da.Array) and isinstance(short_factor, np.ndarray)
    assert long_factor.chunks[long_axis] == x.chunks[long_axis]
    assert U.shape == (shape[0], 7) and S.shape == (7,) and Vh.shape == (7, shape[1])
    assert orthonormality_error(np.asarray(U)) < 50 * EPS[np.float64]
    assert orthonormality_error(np.asarray(Vh).T) < 50 * EPS[np.float64]
    assert np.all(np.diff(S) <= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_bitwise_the_same_on_any_number_of_workers(client, rng, dtype):
    """Two worker processes, or one thread in this process (Dask's synchronous scheduler): the
    same blocks give bitwise the same result."""
    a, _ = with_spectrum(rng, 700, 90, "slow")
    x = da.from_array(a.astype(dtype), chunks=(90, 90))
    on_cluster = vd.rsvd(x, 9, seed=11)
    with dask.config.set(scheduler="synchronous"):
        alone = vd.rsvd(x, 9, seed=11)
    for got, want in zip(on_cluster, alone):
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_rsvd_is_seeded(client, rng):
    a, _ = with_spectrum(rng, 400, 60, "slow")
    x = da.from_array(a, chunks=(100, 60))
    assert np.array_equal(vd.rsvd(x, 5, power_iters=0, seed=3).S, vd.rsvd(x, 5, power_iters=0, seed=3).S)
    assert not np.array_equal(vd.rsvd(x, 5, power_iters=0, seed=3).S, vd.rsvd(x, 5, power_iters=0, seed=4).S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_rank_deficient_sketch_goes_through_tsqr(client, rng, dtype, monkeypatch):
    """A matrix of rank 3 makes the sketch's Gram matrix singular: CholeskyQR2 gives way to TSQR,
    whose leaves include blocks with fewer rows than the sketch has columns, and the result is
    still exact to rounding."""
    calls = []
    tsqr = vd._BlockedRsvd._tsqr
    monkeypatch.setattr(vd._BlockedRsvd, "_tsqr", lambda self, ys: calls.append(len(ys)) or tsqr(self, ys))
    a = (rng.standard_normal((120, 3)) @ rng.standard_normal((3, 50))).astype(dtype)
    U, S, Vh = vd.rsvd(da.from_array(a, chunks=(7, 50)), 5)
    assert calls
    s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert np.abs(product(U, S, Vh) - a).max() <= rounding(dtype, a, s[0])
    assert orthonormality_error(np.asarray(U)) < 50 * EPS[dtype]


def test_rsvd_float32_ill_conditioned_sketch_matches_in_memory(client, rng, monkeypatch):
    """sigma_1 / sigma_k = 1e9 in float32: the last basis is too ill-conditioned for CholeskyQR2
    (orthonormalize.hpp's test), as in the in-memory call, which then takes Householder QR."""
    calls = []
    tsqr = vd._BlockedRsvd._tsqr
    monkeypatch.setattr(vd._BlockedRsvd, "_tsqr", lambda self, ys: calls.append(len(ys)) or tsqr(self, ys))
    a, s_true = with_spectrum(rng, 400, 60, np.logspace(0, -9, 60))
    a = a.astype(np.float32)
    S = vd.rsvd(da.from_array(a, chunks=(50, 60)), 20).S
    assert calls
    assert np.abs(S - vsfast.rsvd(a, 20).S).max() <= rounding(np.float32, a, 1.0)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 2.0**60), (np.float32, 2.0**-70), (np.float64, 2.0**600)])
def test_rsvd_rescales_matrices_outside_the_safe_range(client, rng, dtype, scale):
    a, s_true = with_spectrum(rng, 300, 40, "fast")
    x = da.from_array((a * scale).astype(dtype), chunks=(64, 40))
    S = vd.rsvd(x, 4).S
    assert np.all(np.isfinite(S))
    assert np.abs(S / scale - s_true[:4]).max() <= rounding(dtype, a, s_true[0])


def test_rsvd_names_the_block_holding_nan(client, rng):
    a = rng.standard_normal((300, 20))
    a[250, 3] = np.inf
    with pytest.raises(ValueError, match=r"x\[200:300\]: expected finite values"):
        vd.rsvd(da.from_array(a, chunks=(100, 20)), 2)


def test_rsvd_takes_integers_as_float64(client):
    a = np.arange(600).reshape(30, 20)
    U, S, Vh = vd.rsvd(da.from_array(a, chunks=(10, 20)), 2)
    assert S.dtype == np.float64
    assert np.abs(S - vsfast.rsvd(a, 2).S).max() <= rounding(np.float64, a, S[0])


@pytest.mark.parametrize("x, k, error, match", [
    (np.ones((4, 3)), 1, TypeError, "expected a dask.array.Array"),
    (da.ones(3), 1, ValueError, "expected a matrix"),
    (da.ones((4, 3), dtype=np.float16), 1, TypeError, "expected real numbers"),
    (da.ones((4, 3)), 4, ValueError, r"k: expected 1 <= k <= 3"),
    (da.ones((4, 3)), 1.5, TypeError, "k: expected an integer"),
])
def test_rsvd_refuses_bad_arguments(x, k, error, match):
    with pytest.raises(error, match=match):
        vd.rsvd(x, k)
