"""vsfast follows numpy's conventions where its functions shadow numpy's: each test runs numpy's own
function on the same input and compares. Tolerances: float64 results agree with LAPACK's to a few
hundred eps of the largest singular value (both are backward stable to O(eps) ||A||; the factor
covers the matrix sizes here)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

import vsfast
from conftest import unaligned

TOL = 300 * np.finfo(np.float64).eps


def _close(actual, expected, scale=1.0):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL * scale)


def _check_svd_like_numpy(a, result, reference):
    """Same shapes and dtype as numpy's, the same singular values, orthonormal factors, and the
    factors reproduce A (singular vectors are unique only up to sign and within repeated values)."""
    scale = float(np.max(reference.S, initial=1.0))
    assert [x.shape for x in result] == [x.shape for x in reference]
    assert [x.dtype for x in result] == [x.dtype for x in reference]
    _close(result.S, reference.S, scale)
    q = result.S.shape[-1]
    a64 = np.asarray(a, dtype=np.float64)
    _close(result.U[..., :q] * result.S[..., None, :] @ result.Vh[..., :q, :], a64, scale)
    for factor in (result.U, np.swapaxes(result.Vh, -1, -2)):
        gram = np.swapaxes(factor, -1, -2) @ factor
        _close(gram, np.broadcast_to(np.eye(gram.shape[-1]), gram.shape))


@pytest.mark.parametrize("a", [
    [[1, 2, 3], [4, 5, 6]],                      # a list of integers
    np.arange(12, dtype=np.int32).reshape(4, 3),  # an integer array
    np.eye(3, dtype=bool),                        # booleans
    ((0.5, 1.5), (2.5, -3.5), (1.0, 0.0)),        # a tuple of floats
])
def test_array_likes_and_integers_convert_as_numpy_converts_them(a):
    reference = np.linalg.svd(a, full_matrices=False)
    result = vsfast.svd(a)
    assert isinstance(result.S, np.ndarray) and result.S.dtype == np.float64
    _check_svd_like_numpy(a, result, reference)
    np.testing.assert_allclose(vsfast.pinv(a), np.linalg.pinv(np.asarray(a, np.float64)), atol=1e-12)


def test_unaligned_arrays_are_read_like_aligned_ones(rng):
    """numpy admits arrays at any byte offset (one unpickled from a network buffer, as Dask's
    workers receive them); vsfast copies them before its kernels read them (the bindings refuse
    them), so the results are bitwise those of an aligned copy."""
    a = rng.standard_normal((3, 30, 20)).astype(np.float32)
    calls = {"svdvals": lambda x: [vsfast.svdvals(x)], "pinv": lambda x: [vsfast.pinv(x)],
             "rsvd": lambda x: list(vsfast.rsvd(x, 5)), "spaces": lambda x: [vsfast.spaces(x[0]).singular_values]}
    for name, call in calls.items():
        for x, y in zip(call(unaligned(a)), call(a), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 1, 3, 4, 6), (1, 1, 7, 3)])
@pytest.mark.parametrize("full_matrices", [False, True])
def test_stacks_of_matrices_like_numpy(rng, shape, full_matrices):
    a = rng.standard_normal(shape)
    reference = np.linalg.svd(a, full_matrices=full_matrices)
    _check_svd_like_numpy(a, vsfast.svd(a, full_matrices=full_matrices), reference)
    _close(vsfast.svdvals(a), np.linalg.svd(a, compute_uv=False), float(reference.S.max()))
    np.testing.assert_allclose(vsfast.pinv(a), np.linalg.pinv(a), atol=1e-10)


def test_rsvd_and_spaces_take_stacks(rng):
    # Exactly rank 3, so the randomized SVD with k = 3 is exact to rounding on every matrix.
    a = rng.standard_normal((2, 3, 20, 3)) @ rng.standard_normal((2, 3, 3, 15))
    u, s, vh = vsfast.rsvd(a, 3)
    assert (u.shape, s.shape, vh.shape) == ((2, 3, 20, 3), (2, 3, 3), (2, 3, 3, 15))
    _close(s, np.linalg.svd(a, compute_uv=False)[..., :3], float(s.max()))
    _close(u * s[..., None, :] @ vh, a, float(s.max()))
    sp = vsfast.spaces(a)
    assert len(sp) == 2 and len(sp[0]) == 3
    assert [[x.rank for x in row] for row in sp] == np.linalg.matrix_rank(a).tolist()
    _close(sp[1][2].singular_values, np.linalg.svd(a[1, 2], compute_uv=False), float(s.max()))


@pytest.mark.parametrize("m,n", [(6, 4), (4, 6), (5, 5), (1, 7), (7, 1)])
@pytest.mark.parametrize("full_matrices", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_svd_signature_like_numpy(rng, m, n, full_matrices, dtype):
    a = rng.standard_normal((m, n)).astype(dtype)
    reference = np.linalg.svd(a, full_matrices=full_matrices)
    result = vsfast.svd(a, full_matrices=full_matrices)
    assert [x.shape for x in result] == [x.shape for x in reference]
    assert all(x.dtype == dtype for x in result)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(result.S, reference.S, rtol=0, atol=100 * eps * reference.S[0])
    q = min(m, n)
    recon = (result.U[:, :q] * result.S) @ result.Vh[:q]
    np.testing.assert_allclose(recon, a, rtol=0, atol=100 * eps * reference.S[0])
    for factor in (result.U, result.Vh.T):
        np.testing.assert_allclose(factor.T @ factor, np.eye(factor.shape[1]), atol=100 * eps)


def test_compute_uv_false_returns_the_values_alone(rng):
    a = rng.standard_normal((3, 6, 4))
    values = vsfast.svd(a, compute_uv=False)
    expected = np.linalg.svd(a, compute_uv=False)
    assert isinstance(values, np.ndarray) and values.shape == expected.shape
    _close(values, expected, float(expected.max()))
    if hasattr(np.linalg, "svdvals"):  # numpy >= 2.0
        _close(vsfast.svdvals(a), np.linalg.svdvals(a), float(expected.max()))


def test_results_are_named_tuples_with_numpy_field_names(rng):
    a = rng.standard_normal((5, 4))
    result = vsfast.svd(a)
    reference = np.linalg.svd(a, full_matrices=False)
    assert isinstance(result, tuple) and result._fields == ("U", "S", "Vh")
    if hasattr(reference, "_fields"):  # numpy >= 2.0 names its results too
        assert result._fields == reference._fields
    assert vsfast.rsvd(a, 2)._fields == ("U", "S", "Vh")
    split = vsfast.project(a, vsfast.spaces(a[:2]))
    assert split._fields == ("signal", "residual")
    np.testing.assert_allclose(split.signal + split.residual, a, atol=1e-14)


def test_linalg_error_is_numpys():
    assert issubclass(vsfast.LinAlgError, np.linalg.LinAlgError)
    with pytest.raises(np.linalg.LinAlgError):
        raise vsfast.LinAlgError("a numpy user's handler catches vsfast's errors")


def test_seed_takes_what_numpy_generators_take(rng):
    a = rng.standard_normal((60, 40)) * np.logspace(0, -1, 40)  # slow decay: the sketch shows
    kwargs = {"k": 5, "power_iters": 0}
    same = [vsfast.rsvd(a, seed=np.random.default_rng(7), **kwargs).U for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])  # a Generator in the same state: the same result
    generator = np.random.default_rng(7)
    first, second = (vsfast.rsvd(a, seed=generator, **kwargs).U for _ in range(2))
    assert not np.array_equal(first, second)  # drawing from it advances it, as numpy's functions do
    fresh = [vsfast.rsvd(a, seed=None, **kwargs).U for _ in range(2)]
    assert not np.array_equal(fresh[0], fresh[1])  # None: fresh entropy every call
    np.testing.assert_array_equal(vsfast.rsvd(a, seed=3, **kwargs).U, vsfast.rsvd(a, seed=3, **kwargs).U)
    for bad, numpy_raises in ((-1, ValueError), (1.5, TypeError), ("3", TypeError)):
        with pytest.raises(numpy_raises):
            np.random.default_rng(bad)
        with pytest.raises(numpy_raises, match="seed"):
            vsfast.rsvd(a, seed=bad, **kwargs)


def _vsfast_pools() -> list[dict]:
    return [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "vsfast"]


def test_threadpoolctl_sees_and_limits_vsfast():
    before = vsfast.get_num_threads()
    pools = _vsfast_pools()
    assert len(pools) == 1 and pools[0]["num_threads"] == before
    assert pools[0]["version"] == vsfast.__version__
    with threadpoolctl.threadpool_limits(1, user_api="vsfast"):
        assert vsfast.get_num_threads() == 1
    assert vsfast.get_num_threads() == before
    with threadpoolctl.threadpool_limits(1):  # every pool, as scikit-learn users write it
        assert vsfast.get_num_threads() == 1
    assert vsfast.get_num_threads() == before
    vsfast.set_num_threads(1)
    try:
        assert _vsfast_pools()[0]["num_threads"] == 1
    finally:
        vsfast.set_num_threads(before)


def test_a_blas_limit_leaves_vsfasts_openblas_serial(rng):
    """threadpool_limits(n) also sets vsfast's own OpenBLAS (scipy-openblas) to n threads, under
    vsfast's n workers each calling it: the core sets it back to one thread when it runs."""
    def openblas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["filepath"].endswith("libscipy_openblas.so")]

    assert openblas_threads() == [1]
    with threadpoolctl.threadpool_limits(2):
        assert openblas_threads() == [2]
        vsfast.rsvd(rng.standard_normal((300, 200)), 5)
        assert openblas_threads() == [1]
    assert openblas_threads() == [1]


def test_show_config_names_versions_blas_threads_simd_and_cuda(capsys):
    info = vsfast.show_config(mode="dicts")
    assert info["vsfast"] == vsfast.__version__ and info["threads"] == vsfast.get_num_threads()
    assert info["dependencies"]["numpy"] == np.__version__
    assert "openblas" in info["core"]["blas_config"].lower() and "avx2" in info["core"]["cpu_features"]
    cuda = info["cuda"]
    assert cuda["built"] in (True, False) and (cuda["built"] and cuda.get("device_count") or cuda["why"])
    assert vsfast.show_config() is None
    printed = capsys.readouterr().out
    assert vsfast.__version__ in printed and "cuda:" in printed and "threads:" in printed
    with pytest.raises(ValueError, match="mode"):
        vsfast.show_config(mode="json")


def test_python_dash_m_and_lazy_submodules():
    """`import vsfast` stays light: the submodules that need torch or matplotlib load on first
    attribute access."""
    code = ("import sys, vsfast\n"
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\n"
            "assert vsfast.viz.__name__ == 'vsfast.viz' and 'vsfast.viz' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
