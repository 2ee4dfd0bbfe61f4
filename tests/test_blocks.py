"""The block steps of a randomized SVD over a matrix held as blocks (csrc/vsfast/blocks.hpp, the
CPU backend's primitives that vsfast.distributed runs as Dask tasks), against numpy in float64.
Tall and small matrices travel column-major: a rows x width matrix as a (width, rows) array."""

from __future__ import annotations

import numpy as np
import pytest

import vsfast
from vsfast._backends import cpu, gpu

from conftest import EPS, with_spectrum


def close(got, want, dtype, scale=1.0, factor=50) -> bool:
    return np.abs(np.asarray(got, np.float64) - want).max() <= factor * EPS[dtype] * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [0, 3, -2])
def test_block_products_and_gram_in_both_layouts(rng, dtype, exponent):
    block = rng.standard_normal((70, 30)).astype(dtype)
    z = rng.standard_normal((30, 8)).astype(dtype)
    y_want = 2.0**-exponent * block.astype(np.float64) @ z
    for a, transposed in [(block, False), (np.ascontiguousarray(block.T), True)]:
        y, gram = cpu.block_range(a, np.ascontiguousarray(z.T), transposed, exponent)
        scale = np.abs(y_want).max() * np.sqrt(30)
        assert y.shape == (8, 70) and close(y.T, y_want, dtype, scale)
        assert np.array_equal(gram, gram.T) and close(gram, y_want.T @ y_want, dtype, scale**2 * 70)
        p = cpu.block_corange(a, y, transposed, exponent)
        p_want = 2.0**-exponent * block.T.astype(np.float64) @ y.T.astype(np.float64)
        assert p.shape == (8, 30) and close(p.T, p_want, dtype, np.abs(p_want).max() * 70)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cholesky_factor_solve_and_cholesky_qr2(rng, dtype):
    y = rng.standard_normal((200, 6)).astype(dtype)
    yt = np.ascontiguousarray(y.T)
    gram = (y.T.astype(np.float64) @ y).astype(dtype)
    r = cpu.cholesky_factor(gram, False)
    R = r.T  # column-major storage: the array holds R^T
    assert np.array_equal(np.tril(R, -1), np.zeros_like(R)) and close(R.T @ R, gram, dtype, 200 * 6)
    q1t, g2 = cpu.solve_factor(yt, r, True)
    assert cpu.cholesky_factor(g2, True) is not None  # the second pass of CholeskyQR2 is trusted
    qt, _ = cpu.solve_factor(q1t, cpu.cholesky_factor(g2, True), False)
    assert close(qt @ qt.T, np.eye(6), dtype)
    assert close(qt.T @ (qt @ y), y, dtype, np.abs(y).max() * 6)  # Q spans Y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cholesky_factor_refuses_what_cholesky_qr2_cannot_trust(dtype):
    singular = np.diag([1.0, 1.0, 0.0]).astype(dtype)
    assert cpu.cholesky_factor(singular, False) is None
    far_from_identity = np.diag([1.0, 4.0, 1.0]).astype(dtype)
    assert cpu.cholesky_factor(far_from_identity, False) is not None
    assert cpu.cholesky_factor(far_from_identity, True) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_householder_qr_is_orthonormal_on_rank_deficient_blocks(rng, dtype):
    y = (rng.standard_normal((50, 2)) @ rng.standard_normal((2, 7))).astype(dtype)  # rank 2 of 7 columns
    qt, rt = cpu.householder_qr(np.ascontiguousarray(y.T))
    assert close(qt @ qt.T, np.eye(7), dtype)
    assert np.array_equal(np.triu(rt, 1), np.zeros_like(rt))  # R^T: R is upper triangular
    assert close(qt.T @ rt.T, y, dtype, np.abs(y).max() * 7)
    with pytest.raises(ValueError, match="at least as many rows as columns"):
        cpu.householder_qr(np.ones((7, 3), dtype))


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
def test_the_sketch_is_rsvds(rng, shape):
    """One block, no power iteration, composed from the block steps: vsfast.rsvd's result to
    rounding on a slowly decaying spectrum, which only the same sketch gives."""
    a, _ = with_spectrum(rng, *shape, "slow")
    k, oversample = 6, 4
    omega = cpu.sketch(*shape, k, oversample, 9, np.float64)
    assert omega.shape == (k + oversample, min(shape))
    transposed = shape[1] >= shape[0]  # a wide matrix is worked on as its transpose, a block of its columns
    yt, _ = cpu.block_range(np.ascontiguousarray(a), omega, transposed, 0)
    qt, _ = cpu.householder_qr(yt)
    b = cpu.block_corange(np.ascontiguousarray(a), qt, transposed, 0)  # Q^T M, row-major
    s = np.linalg.svd(b, compute_uv=False)[:k]
    assert np.abs(s - vsfast.rsvd(a, k, oversample=oversample, power_iters=0, seed=9).S).max() < 1e-12


def test_block_largest_names_the_block_and_the_exponent_follows_rsvds_rule():
    a = np.array([[1.0, -7.5], [2.0, 0.5]], np.float32)
    assert cpu.block_largest(a, "x[0:2]") == 7.5
    a[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"x\[0:2\]: expected finite values"):
        cpu.block_largest(a, "x[0:2]")
    assert cpu.block_exponent(1.0, np.float32) == 0
    assert cpu.block_exponent(2.0**40, np.float32) == 40 and cpu.block_exponent(2.0**40, np.float64) == 0
    assert cpu.block_exponent(2.0**-300, np.float64) == -300


def test_block_steps_refuse_mismatched_arrays():
    with pytest.raises(ValueError, match=r"Z: expected a \(width, 3\) array"):
        cpu.block_range(np.ones((5, 3)), np.ones((2, 4)), False, 0)
    with pytest.raises(TypeError, match="Z: expected the dtype of A"):
        cpu.block_range(np.ones((5, 3)), np.ones((2, 3), np.float32), False, 0)
    with pytest.raises(ValueError, match=r"R: expected a \(2, 2\) array"):
        cpu.solve_factor(np.ones((2, 5)), np.eye(3), False)


def test_the_gpu_backend_says_the_block_steps_run_on_the_cpu():
    with pytest.raises(TypeError, match="block_range runs on the CPU"):
        gpu.block_range(None, None, False, 0)
