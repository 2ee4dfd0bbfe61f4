"""The CUDA module (vsfast._cuda).

Without a GPU: the module is built wherever nvcc is (so a broken CUDA build fails here), it imports
and reports the missing device cleanly, ``import vsfast`` stays torch-free, and GPU arrays get clear
errors. With a GPU: the same matrices with chosen spectra and the same tolerances as the CPU tests,
against the CPU core and float64 references; torch and CuPy in and out, streams, copies,
workspace reuse and error messages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import vsfast
from conftest import EPS, orthonormality_error, random_orthonormal, rank_bounds, with_spectrum
from test_chain import CHAINS, check_forward_of_reconstruct, forward_reference, make_chain
from test_spaces import _check_four_spaces, check_project_matches_reference, matrices
from test_svd import SHAPES, check_rsvd_exact_on_low_rank, spectral_error
from vsfast._backends import gpu as _gpu

DTYPES = [np.float32, np.float64]


def _gpu_skip_reason() -> str:
    if _gpu._cuda is None:
        return f"vsfast._cuda is not built or does not load ({_gpu.IMPORT_ERROR or 'no module'})"
    if _gpu._cuda.device_count() == 0:
        return f"no CUDA device ({_gpu._cuda.unavailable_reason()})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return ""


gpu = pytest.mark.skipif(bool(_gpu_skip_reason()), reason=_gpu_skip_reason() or "GPU present")


def _nvcc() -> bool:
    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def cuda(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def host(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# --- without a GPU ------------------------------------------------------------------------------

def test_cuda_module_is_built_where_nvcc_is():
    if not _nvcc() or os.environ.get("VSFAST_CUDA", "AUTO").upper() == "OFF":
        pytest.skip("no nvcc on this machine (or VSFAST_CUDA=OFF): the CUDA module is not expected")
    assert _gpu._cuda is not None, f"nvcc is present but vsfast._cuda did not build or load: {_gpu.IMPORT_ERROR}"


def test_cuda_module_reports_a_missing_device_cleanly():
    if _gpu._cuda is None:
        pytest.skip(f"vsfast._cuda is not built: {_gpu.IMPORT_ERROR}")
    count = _gpu._cuda.device_count()
    assert isinstance(count, int) and count >= 0
    assert vsfast.cuda_available() == (count > 0)
    if count == 0:
        reason = _gpu._cuda.unavailable_reason()
        assert reason
        with pytest.raises(ValueError, match="CUDA device index"):
            _gpu._cuda.svd_workspace("float32", 0, 1, 4, 4)
    with pytest.raises((TypeError, ValueError)):
        _gpu._cuda.svd_workspace("float16", 0, 1, 4, 4)


def test_import_vsfast_stays_free_of_torch_and_cupy():
    code = "import sys, vsfast; assert 'torch' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vsfast_imports_without_a_loadable_cuda_module():
    code = ("import sys; sys.modules['vsfast._cuda'] = None\n"  # any import of it now fails
            "import numpy as np, vsfast\n"
            "assert not vsfast.cuda_available()\n"
            "assert 'built without its CUDA module' in vsfast._backends.gpu.IMPORT_ERROR, vsfast._backends.gpu.IMPORT_ERROR\n"
            "assert vsfast.rsvd(np.eye(4), 2)[1].shape == (2,)")
    subprocess.run([sys.executable, "-c", code], check=True)


class _FakeGpuArray:
    """An object that says it lives on the GPU (as a CuPy or Numba array would)."""

    __cuda_array_interface__ = {"shape": (3, 3), "typestr": "<f4", "data": (0, False), "version": 3}


def test_gpu_array_without_the_cuda_module_is_refused(monkeypatch):
    monkeypatch.setattr(_gpu, "_cuda", None)
    with pytest.raises(TypeError, match="without its CUDA module"):
        vsfast.rsvd(_FakeGpuArray(), 1)
    with pytest.raises(TypeError, match="without its CUDA module"):
        vsfast.project(_FakeGpuArray(), np.eye(3))


def test_foreign_gpu_array_needs_cupy():
    if _gpu._cuda is None:
        pytest.skip(f"vsfast._cuda is not built: {_gpu.IMPORT_ERROR}")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(TypeError, match="needs CuPy"):
            vsfast.svd(_FakeGpuArray())
    else:
        pytest.skip("CuPy is installed: a foreign array would be read through it")


def test_gpu_benchmark_exits_cleanly_without_a_gpu():
    if vsfast.cuda_available():
        pytest.skip("a GPU is present: scripts/gpu-check.sh runs the benchmark")
    script = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "cuda.py")
    out = subprocess.run([sys.executable, script, "--quick"], capture_output=True, text=True, check=True)
    assert "no GPU to measure on" in out.stdout


def test_gpu_precision_setting():
    assert vsfast.get_gpu_precision() in ("float32", "tf32")
    with pytest.raises(ValueError, match="precision"):
        vsfast.set_gpu_precision("bf16")


# --- on a GPU: against the CPU core and float64 references --------------------------------------

@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(40, 300), (300, 40)])
@pytest.mark.parametrize("spectrum", ["fast", "slow", "lowrank", "cond1e12"])
def test_gpu_svd_matches_float64_reference_and_cpu(rng, dtype, shape, spectrum):
    a, s_true = with_spectrum(rng, *shape, spectrum)
    u, s, vh = vsfast.svd(cuda(a.astype(dtype)))
    assert all(isinstance(t, torch.Tensor) and t.is_cuda for t in (u, s, vh))
    u, s, vh = host(u), host(s), host(vh)
    assert u.dtype == s.dtype == vh.dtype == dtype
    q = min(shape)
    assert u.shape == (shape[0], q) and s.shape == (q,) and vh.shape == (q, shape[1])
    tol = 10 * max(shape) * EPS[dtype] * s_true[0]
    np.testing.assert_allclose(s, s_true, rtol=0, atol=tol)
    np.testing.assert_allclose(s, vsfast.svd(a.astype(dtype))[1], rtol=0, atol=tol)
    assert spectral_error(a, u, s, vh) <= tol
    assert orthonormality_error(u) <= 10 * max(shape) * EPS[dtype]
    assert orthonormality_error(vh.T) <= 10 * max(shape) * EPS[dtype]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 30, 20), (7, 20, 12), (3, 12, 20), (4, 1, 9), (3, 40, 50), (3, 50, 40)])
def test_gpu_svd_batch_matches_single(rng, dtype, shape):
    """Matrices of at most 32 x 32 go through gesvdjBatched, larger ones through one Jacobi SVD
    per matrix."""
    a = rng.standard_normal(shape).astype(dtype)
    u, s, vh = (host(t) for t in vsfast.svd(cuda(a)))
    tol = 10 * max(shape[1:]) * EPS[dtype] * np.abs(s).max()
    for i in range(shape[0]):
        np.testing.assert_allclose(s[i], np.linalg.svd(a[i].astype(np.float64), compute_uv=False), atol=tol)
        approx = (u[i].astype(np.float64) * s[i]) @ vh[i]
        np.testing.assert_allclose(approx, a[i], atol=tol)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (1, 40), (40, 1)])
def test_gpu_rsvd_exact_on_low_rank(rng, dtype, shape):
    check_rsvd_exact_on_low_rank(rng, dtype, shape, place=cuda, host=host)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(400, 150), (150, 400)])
@pytest.mark.parametrize("spectrum", ["fast", "slow", "cond1e12"])
def test_gpu_rsvd_error_no_worse_than_torch_or_cpu(rng, dtype, shape, spectrum):
    """Median over seeds within 10 % of torch.svd_lowrank's error on the same GPU, and of the CPU
    core's; never below the optimal sigma_{k+1}."""
    a, s_true = with_spectrum(rng, *shape, spectrum)
    k, p, q = 20, 10, 2
    ad = a.astype(dtype)
    at = cuda(ad)
    ours, theirs, cpu = [], [], []
    for seed in range(7):
        ours.append(spectral_error(a, *(host(t) for t in vsfast.rsvd(at, k, oversample=p, power_iters=q, seed=seed))))
        cpu.append(spectral_error(a, *vsfast.rsvd(ad, k, oversample=p, power_iters=q, seed=seed)))
        torch.manual_seed(seed)
        tu, ts, tv = torch.svd_lowrank(at, q=k + p, niter=q)
        theirs.append(spectral_error(a, host(tu[:, :k]), host(ts[:k]), host(tv[:, :k]).T))
    floor = s_true[k] if k < len(s_true) else 0.0
    slack = 10 * max(shape) * EPS[dtype] * s_true[0]
    assert min(ours) >= floor * (1 - 1e-6) - slack
    assert np.median(ours) <= 1.10 * np.median(theirs) + slack
    assert np.median(ours) <= 1.10 * np.median(cpu) + slack


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_rsvd_singular_values_and_vectors_accurate_on_fast_decay(rng, dtype):
    a, s_true = with_spectrum(rng, 500, 300, "fast")
    u, s, vh = (host(t) for t in vsfast.rsvd(cuda(a.astype(dtype)), 10))
    np.testing.assert_allclose(s, s_true[:10], rtol=100 * EPS[dtype] * s_true[0] / s_true[9])
    u_ref, _, vh_ref = np.linalg.svd(a, full_matrices=False)
    signs = np.sign(np.sum(u.astype(np.float64) * u_ref[:, :10], axis=0))
    np.testing.assert_allclose(u * signs, u_ref[:, :10], atol=2000 * EPS[dtype])
    np.testing.assert_allclose(vh.T * signs, vh_ref[:10].T, atol=2000 * EPS[dtype])


@gpu
@pytest.mark.parametrize("shape", [(6, 60, 90), (40, 20, 30)])
def test_gpu_rsvd_batch_matches_single_and_is_seeded(rng, shape):
    a = cuda(rng.standard_normal(shape).astype(np.float32))
    u, s, vh = vsfast.rsvd(a, 8, seed=3)
    for i in range(0, shape[0], 7):
        ui, si, vhi = vsfast.rsvd(a[i], 8, seed=3)
        np.testing.assert_allclose(host(si), host(s[i]), rtol=1e-5)
        approx, single = (u[i] * s[i]) @ vh[i], (ui * si) @ vhi
        np.testing.assert_allclose(host(approx), host(single), atol=1e-5 * float(s[i][0]))
    again = vsfast.rsvd(a, 8, seed=3)
    for x, y in zip(again, (u, s, vh)):
        assert torch.equal(x, y)  # the same seed gives bitwise the same result
    assert not torch.equal(vsfast.rsvd(a, 8, seed=4)[0], u)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_rsvd_mixed_batch_with_householder_fallbacks_matches_single(rng, dtype):
    """A zero and a rank-1 matrix between normal ones: their sketches' Gram matrices are singular,
    so they take the Householder QR fallback inside the batched CholeskyQR, and the others not."""
    a = rng.standard_normal((4, 60, 90))
    a[1] = 0
    a[2] = np.outer(rng.standard_normal(60), rng.standard_normal(90))
    a = a.astype(dtype)
    u, s, vh = (host(t) for t in vsfast.rsvd(cuda(a), 8, seed=5))
    for i in range(a.shape[0]):
        ui, si, vhi = (host(t) for t in vsfast.rsvd(cuda(a[i]), 8, seed=5))
        tol = 100 * max(a.shape[1:]) * EPS[dtype] * max(float(np.abs(si).max()), 1.0)
        np.testing.assert_allclose(s[i], si, rtol=0, atol=tol)
        np.testing.assert_allclose((u[i] * s[i]) @ vh[i], (ui * si) @ vhi, rtol=0, atol=tol)
        assert orthonormality_error(u[i]) <= tol and orthonormality_error(vh[i].T) <= tol
    assert not s[1].any()
    np.testing.assert_allclose(s[2][0], np.linalg.norm(a[2].astype(np.float64), 2), rtol=100 * EPS[dtype])
    assert np.abs(s[2][1:]).max() <= 100 * max(a.shape[1:]) * EPS[dtype] * s[2][0]


@pytest.fixture
def jacobi_gives_up():
    """One sweep per Jacobi SVD, far from convergence at working precision: every gesvdj and
    gesvdjBatched call reports failure and the QR-iteration fallback (gesvd) does the work. Without
    the fallback the results would be a single sweep's, off by far more than the tolerances."""
    _gpu._cuda._set_jacobi_max_sweeps(1)
    yield
    _gpu._cuda._set_jacobi_max_sweeps(100)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(60, 40), (40, 60), (3, 40, 50), (4, 20, 12)])
def test_gpu_svd_falls_back_to_qr_iteration_when_jacobi_does_not_converge(rng, dtype, shape, jacobi_gives_up):
    a = rng.standard_normal(shape).astype(dtype)
    u, s, vh = (host(t) for t in vsfast.svd(cuda(a)))
    batch = a.reshape(-1, *shape[-2:])
    u, s, vh = u.reshape(-1, *u.shape[-2:]), s.reshape(-1, s.shape[-1]), vh.reshape(-1, *vh.shape[-2:])
    for i in range(batch.shape[0]):
        ref = np.linalg.svd(batch[i].astype(np.float64), compute_uv=False)
        tol = 10 * max(shape[-2:]) * EPS[dtype] * ref[0]
        np.testing.assert_allclose(s[i], ref, rtol=0, atol=tol)
        assert spectral_error(batch[i], u[i], s[i], vh[i]) <= tol
        assert orthonormality_error(u[i]) <= 10 * max(shape[-2:]) * EPS[dtype]
        assert orthonormality_error(vh[i].T) <= 10 * max(shape[-2:]) * EPS[dtype]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_rsvd_and_pinv_fall_back_to_qr_iteration(rng, dtype, jacobi_gives_up):
    a, s_true = with_spectrum(rng, 200, 150, "fast")
    u, s, vh = (host(t) for t in vsfast.rsvd(cuda(np.stack([a, a]).astype(dtype)), 10))
    for i in range(2):
        np.testing.assert_allclose(s[i], s_true[:10], rtol=100 * EPS[dtype] * s_true[0] / s_true[9])
        assert spectral_error(a, u[i], s[i], vh[i]) <= 1.1 * s_true[10] + 30 * 200 * EPS[dtype] * s_true[0]
    w = rng.standard_normal((50, 40)).astype(dtype)
    ref = np.linalg.pinv(w.astype(np.float64))
    np.testing.assert_allclose(host(vsfast.pinv(cuda(w))), ref, rtol=0, atol=1e3 * EPS[dtype] * np.abs(ref).max())


@gpu
@settings(max_examples=int(os.environ.get("VSFAST_GPU_EXAMPLES", "60")), deadline=None)
@given(matrices())
def test_gpu_property_rsvd_and_spaces(case):
    """Rank-deficient and zero matrices: the CholeskyQR fallback and the rank rule."""
    w, x, rank = case
    dtype = w.dtype.type
    k = max(1, min(w.shape) // 2)
    tol = 100 * max(w.shape) * EPS[dtype]
    u, s, vh = (host(t) for t in vsfast.rsvd(cuda(w), k, oversample=3, power_iters=1))
    assert orthonormality_error(u) <= tol and orthonormality_error(vh.T) <= tol
    assert np.all(np.diff(s.astype(np.float64)) <= tol * max(s[0], 1e-30)) and np.all(s >= 0)
    sp = vsfast.spaces(cuda(w))
    low, high = rank_bounds(w)
    assert low <= sp.rank <= high
    signal, residual = (host(t) for t in vsfast.project(cuda(x), sp))
    scale = max(np.abs(x).max(), 1e-30)
    np.testing.assert_allclose(signal.astype(np.float64) + residual, x, rtol=0, atol=4 * EPS[dtype] * scale)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(10, 784), (784, 10), (64, 64), (1, 30), (30, 1)])
@pytest.mark.parametrize("spectrum", ["fast", "lowrank", "cond1e12"])
def test_gpu_spaces_exact(rng, dtype, shape, spectrum):
    a, _ = with_spectrum(rng, *shape, spectrum)
    w = a.astype(dtype)
    sp = vsfast.spaces(cuda(w))
    assert isinstance(sp, vsfast.Spaces) and sp.method == "exact" and sp.dtype == dtype
    low, high = rank_bounds(w)
    assert low <= sp.rank <= high
    s_ref = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    err = 10 * max(shape) * EPS[dtype] * s_ref[0]
    np.testing.assert_allclose(host(sp.singular_values), s_ref, rtol=0, atol=err)
    assert isinstance(sp.rejected, torch.Tensor) and sp.rejected.is_cuda

    class OnHost:  # the CPU test's property checks, on host copies of the bases
        rank, nullity, _s = sp.rank, sp.nullity, host(sp._s)
        signal, signal_out = host(sp.signal), host(sp.signal_out)
        rejected, rejected_out = host(sp.rejected), host(sp.rejected_out)

    _check_four_spaces(w, OnHost, 50 * max(shape) * EPS[dtype])


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_spaces_randomized_matches_exact_top_k_and_batches(rng, dtype):
    a, _ = with_spectrum(rng, 300, 900, "fast")
    w = cuda(a.astype(dtype))
    exact, fast = vsfast.spaces(w, k=12, method="exact"), vsfast.spaces(w, k=12)
    assert fast.method == "randomized" and fast.rank == exact.rank == 12
    for attr in ("signal", "signal_out"):
        pa, pb = host(getattr(exact, attr)).astype(np.float64), host(getattr(fast, attr)).astype(np.float64)
        assert np.linalg.norm(pa @ pa.T - pb @ pb.T, 2) <= 1e4 * EPS[dtype]
    batch = vsfast.spaces(cuda(rng.standard_normal((3, 8, 20)).astype(dtype)))
    assert len(batch) == 3 and all(sp.rank == 8 and sp.signal.is_cuda for sp in batch)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_project_matches_reference(rng, dtype):
    check_project_matches_reference(rng, dtype, place=cuda, host=host)


@gpu
@pytest.mark.parametrize("inputs", [1, 5000])
def test_gpu_project_through_the_smaller_complement_and_plain_bases(rng, inputs):
    w = rng.standard_normal((300, 400))
    sp = vsfast.spaces(cuda(w))
    x = rng.standard_normal((inputs, 400))
    signal, residual = (host(t) for t in vsfast.project(cuda(x), sp))
    assert ("_rejected_rows" in sp.__dict__) == (inputs == 5000)
    v = np.linalg.svd(w)[2][:300].T
    np.testing.assert_allclose(signal, x @ v @ v.T, atol=1e-12)
    np.testing.assert_allclose(signal + residual, x, atol=1e-13)
    y = rng.standard_normal((7, 300))
    s_out, r_out = vsfast.project(cuda(y), sp, side="output")
    s_plain, _ = vsfast.project(cuda(y), sp.signal_out)
    np.testing.assert_allclose(host(s_plain), host(s_out), atol=1e-13)
    imgs = cuda(rng.standard_normal((2, 3, 400)))
    s3, r3 = vsfast.project(imgs, sp)
    assert s3.shape == imgs.shape
    np.testing.assert_allclose(host(s3 + r3), host(imgs), atol=1e-13)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(20, 50), (50, 20), (1, 9), (9, 1), (4, 6, 9)])
def test_gpu_pinv_matches_numpy(rng, dtype, shape):
    a = (with_spectrum(rng, *shape, "lowrank")[0] if len(shape) == 2 else rng.standard_normal(shape))
    w = a.astype(dtype)
    p = vsfast.pinv(cuda(w))
    assert p.shape == shape[:-2] + (shape[-1], shape[-2]) and p.is_cuda
    ref = np.linalg.pinv(w.astype(np.float64), rcond=max(shape[-2:]) * EPS[dtype])
    np.testing.assert_allclose(host(p), ref, rtol=0, atol=1e3 * EPS[dtype] * np.abs(ref).max())
    np.testing.assert_allclose(host(p), vsfast.pinv(w), rtol=0, atol=1e3 * EPS[dtype] * np.abs(ref).max())


@gpu
@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_gpu_forward_of_reconstruct_is_identity(rng, name, dtype, tol):
    layers, y, chain, x = check_forward_of_reconstruct(rng, name, dtype, tol, place=cuda, host=host)
    assert isinstance(chain, vsfast.Chain) and x.is_cuda
    x_cpu, _ = vsfast.reconstruct(layers, y)
    np.testing.assert_allclose(host(x), x_cpu, rtol=0, atol=100 * tol * np.abs(x_cpu).max())


@gpu
def test_gpu_reference_and_clamping(rng):
    layers = make_chain(rng, [200, 100, 50, 10], ["selu", "tanh", "identity"])
    gpu_layers = [(cuda(w), cuda(b), a) for w, b, a in layers]
    ref = rng.random((3, 200))
    y = forward_reference(layers, ref)
    chain = vsfast.Chain(gpu_layers)
    x_all, clamped = chain.reconstruct(cuda(y), reference=cuda(ref), reference_layers="all")
    assert clamped == (0, 0, 0)
    np.testing.assert_allclose(host(x_all), ref, atol=1e-10)
    x_first, _ = chain.reconstruct(cuda(y), reference=cuda(ref[0]))
    np.testing.assert_allclose(forward_reference(layers, host(x_first)), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(x_first), vsfast.Chain(layers).reconstruct(y, reference=ref[0])[0], atol=1e-10)
    tanh_layers = make_chain(rng, [20, 8], ["tanh"])
    yt = forward_reference(tanh_layers, rng.random((4, 20)))
    yt[0, :3] = 1.5
    with pytest.warns(vsfast.RangeWarning, match="layer 0: 3"):
        x, clamped = vsfast.reconstruct([(cuda(w), cuda(b), a) for w, b, a in tanh_layers], cuda(yt))
    assert clamped == (3,) and torch.isfinite(x).all()


# --- numerics at the edges (tests/test_edges.py on the GPU) --------------------------------------

@gpu
@pytest.mark.parametrize("dtype, value", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_gpu_subnormal_singular_values_do_not_count(dtype, value):
    """Their reciprocals overflow: they are treated as zero, so pinv stays finite; the chain's
    ranks follow the same rule as spaces'."""
    w = (np.eye(3) * value).astype(dtype)
    assert w[0, 0] > 0
    sp = vsfast.spaces(cuda(w), rtol=0.0, atol=0.0)
    assert sp.rank == 0 and sp.condition_number == np.inf
    assert not host(vsfast.pinv(cuda(w), atol=0.0)).any()
    mixed = np.diag([1.0, value, 0.5]).astype(dtype)
    assert vsfast.spaces(cuda(mixed), rtol=0.0, atol=0.0).rank == 2
    assert vsfast.Chain([(cuda(mixed), None, None)], rtol=0.0, atol=0.0).ranks == (2,)
    assert vsfast.Chain([(cuda(w), None, None)], rtol=0.0, atol=0.0).ranks == (0,)


@gpu
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_gpu_extreme_magnitudes_in_float32(rng, scale):
    """Rescaled by a power of two (exact) where Gram matrices and Jacobi rotations would underflow
    or overflow: the same answer as at unit scale, alone and beside a matrix at unit scale."""
    a, s = with_spectrum(rng, 60, 40, "fast")
    u, got, vh = (host(t) for t in vsfast.rsvd(cuda((a * scale).astype(np.float32)), 5))
    np.testing.assert_allclose(got / scale, s[:5], rtol=1e-4)
    assert np.isfinite(u).all() and np.isfinite(vh).all()
    both = np.stack([a * scale, a]).astype(np.float32)
    _, got2, _ = (host(t) for t in vsfast.rsvd(cuda(both), 5))
    np.testing.assert_allclose(got2[0] / scale, s[:5], rtol=1e-4)
    np.testing.assert_allclose(got2[1], s[:5], rtol=1e-4)
    _, s1, _ = (host(t) for t in vsfast.svd(cuda((a * scale).astype(np.float32))))
    np.testing.assert_allclose(s1[:5] / scale, s[:5], rtol=1e-4)
    b, _ = with_spectrum(rng, 60, 40, np.linspace(2, 1, 40))  # well conditioned: float32 keeps every value
    p = host(vsfast.pinv(cuda((b * scale).astype(np.float32))))
    ref = np.linalg.pinv(b * scale)
    np.testing.assert_allclose(p, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@gpu
def test_gpu_results_beyond_the_dtype_are_overflow_errors(rng):
    big = (random_orthonormal(rng, 6, 1) @ random_orthonormal(rng, 6, 1).T * 3e38 * 1.5).astype(np.float64)
    a = cuda(np.clip(big * 4, -3e38, 3e38).astype(np.float32))  # finite entries, sigma_1 beyond float32
    for call in (lambda: vsfast.svd(a), lambda: vsfast.rsvd(a, 1), lambda: vsfast.spaces(a)):
        with pytest.raises(OverflowError, match="overflows float32"):
            call()
    assert host(vsfast.svd(a.double())[1])[0] > 3.4e38  # float64 holds it
    chain = vsfast.Chain([(cuda(np.full((2, 2), 3e38, np.float32)), None, None)])
    with pytest.raises(OverflowError, match="the chain's output overflows float32"):
        chain.forward(cuda(np.ones((1, 2), np.float32)))
    tiny = vsfast.Chain([(cuda(np.eye(2, dtype=np.float32) * 1e-30), None, None)])
    with pytest.raises(OverflowError, match="the reconstructed input overflows float32"):
        tiny.reconstruct(cuda(np.full((1, 2), 1e10, np.float32)))


# --- interop --------------------------------------------------------------------------------------

class _RecordingModule:
    """vsfast._cuda, recording the arguments of every call it passes on."""

    def __init__(self, module):
        self._module, self.calls = module, {}

    def __getattr__(self, name):
        function = getattr(self._module, name)

        def record(*args, **kwargs):
            self.calls[name] = args
            return function(*args, **kwargs)

        return record


@gpu
def test_gpu_results_keep_kind_device_and_dtype_without_copying_inputs(rng, monkeypatch):
    """C-contiguous float32/float64 inputs reach the kernels by their own device pointers."""
    a = cuda(rng.standard_normal((64, 48)).astype(np.float32))
    x = cuda(rng.standard_normal((10, 48)).astype(np.float32))
    recorder = _RecordingModule(_gpu._cuda)
    monkeypatch.setattr(_gpu, "_cuda", recorder)
    u, s, vh = vsfast.rsvd(a, 5)
    vsfast.svd(a)
    vsfast.pinv(a)
    vsfast.project(x, vh.T)
    a_argument = 5  # (dtype, device, stream, workspace, workspace_bytes, A, ...)
    for name in ("rsvd", "svd", "pinv"):
        assert recorder.calls[name][a_argument] == a.data_ptr(), name
    assert recorder.calls["project"][a_argument] == x.data_ptr()
    for t in (u, s, vh):
        assert isinstance(t, torch.Tensor) and t.device == a.device and t.dtype == torch.float32
    # Non-contiguous views are made contiguous, with the same results.
    at = cuda(np.ascontiguousarray(host(a).T)).T
    assert not at.is_contiguous()
    np.testing.assert_allclose(host(vsfast.svd(at)[1]), host(vsfast.svd(a)[1]), rtol=1e-6)


@gpu
def test_gpu_work_runs_on_the_callers_stream(rng):
    a0 = cuda(rng.standard_normal((2000, 1500)).astype(np.float32))
    expected = vsfast.rsvd(a0 * 2, 16, seed=1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        a = a0 * 2  # queued on the side stream: vsfast must run after it, on it
        got = vsfast.rsvd(a, 16, seed=1)
        signal, residual = vsfast.project(a, vsfast.spaces(a, k=16))
    stream.synchronize()
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(signal + residual, a0 * 2, rtol=0, atol=1e-5)


@gpu
@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="torch's caching allocator is off (as under compute-sanitizer)")
def test_gpu_workspace_comes_from_the_caching_allocator(rng):
    a = cuda(rng.standard_normal((8, 512, 700)).astype(np.float32))
    vsfast.rsvd(a, 32)
    torch.cuda.synchronize()
    segments = torch.cuda.memory_stats()["segment.all.allocated"]
    for _ in range(20):
        vsfast.rsvd(a, 32)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["segment.all.allocated"] == segments


@gpu
def test_gpu_threads_get_their_own_handles(rng):
    a = cuda(rng.standard_normal((4, 300, 400)).astype(np.float32))
    expected = vsfast.rsvd(a, 10, seed=2)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = vsfast.rsvd(a, 10, seed=2)
            torch.cuda.current_stream().synchronize()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        for x, y in zip(r, expected):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@gpu
def test_gpu_cupy_in_cupy_out(rng):
    cupy = pytest.importorskip("cupy")
    a = rng.standard_normal((80, 60)).astype(np.float32)
    ca = cupy.asarray(a)
    u, s, vh = vsfast.rsvd(ca, 6)
    assert all(isinstance(t, cupy.ndarray) for t in (u, s, vh)) and u.dtype == np.float32
    np.testing.assert_allclose(cupy.asnumpy(s), vsfast.rsvd(a, 6)[1], rtol=1e-4)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        signal, residual = vsfast.project(ca, cupy.asarray(np.linalg.svd(a)[2][:6].T.copy()))
    stream.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(signal + residual), a, atol=1e-5)
    with pytest.raises(TypeError, match="torch tensor"):
        vsfast.project(ca, cuda(np.eye(60, dtype=np.float32)))


@gpu
def test_gpu_argument_errors(rng):
    a = cuda(rng.standard_normal((20, 10)))
    with pytest.raises(TypeError, match="basis: on the CPU"):
        vsfast.project(a, np.eye(10))
    with pytest.raises(TypeError, match="basis: Spaces computed on the CPU"):
        vsfast.project(a, vsfast.spaces(rng.standard_normal((4, 10))))
    with pytest.raises(TypeError, match="float32, float64 or integers"):
        vsfast.svd(a.half())
    with pytest.raises(ValueError, match="finite"):
        vsfast.rsvd(a * float("nan"), 2)
    with pytest.raises(ValueError, match="k: expected"):
        vsfast.rsvd(a, 11)
    w = cuda(rng.standard_normal((8, 10)))
    with pytest.raises(TypeError, match="layers\\[1\\].weight: on the CPU"):
        vsfast.Chain([(w, None, "tanh"), (np.eye(8), None, None)])
    chain = vsfast.Chain([(w, None, "tanh")])
    with pytest.raises(TypeError, match="dtype"):
        chain.reconstruct(cuda(np.zeros((2, 8), np.float32)))
    with pytest.raises(ValueError, match="rows of 8 values"):
        chain.reconstruct(cuda(np.zeros((2, 5))))
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="device"):
            vsfast.project(a, a.to("cuda:1")[:10, :3])


@gpu
def test_gpu_tf32_is_opt_in_and_its_accuracy_bounded(rng):
    """TF32 products (10-bit mantissas) only when asked for; then the rank-k error stays within a
    few 1e-3 of sigma_1 on a well-separated spectrum."""
    a, s_true = with_spectrum(rng, 1024, 768, "fast")
    at = cuda(a.astype(np.float32))
    default = spectral_error(a, *(host(t) for t in vsfast.rsvd(at, 16)))
    vsfast.set_gpu_precision("tf32")
    try:
        fast = spectral_error(a, *(host(t) for t in vsfast.rsvd(at, 16)))
    finally:
        vsfast.set_gpu_precision("float32")
    assert default <= s_true[16] + 1e3 * EPS[np.float32] * s_true[0]
    assert fast <= s_true[16] + 5e-3 * s_true[0]


@gpu
def test_gpu_warns_nothing_on_in_range_targets(rng):
    w = cuda(rng.standard_normal((8, 10)))
    chain = vsfast.Chain([(w, None, "tanh")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain.reconstruct(cuda(np.zeros((2, 8))))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_numpy_conventions(rng, dtype):
    """The public layer's numpy conventions hold on the GPU as on the CPU: stacks of any depth,
    svd's full_matrices and compute_uv, svdvals, integer input computed in float64."""
    a = rng.standard_normal((2, 3, 9, 6)).astype(dtype)
    eps = EPS[dtype]
    values = vsfast.svd(cuda(a), compute_uv=False)
    assert values.is_cuda and values.shape == (2, 3, 6)
    np.testing.assert_allclose(host(values), np.linalg.svd(a.astype(np.float64), compute_uv=False),
                               rtol=0, atol=100 * eps * np.abs(a).sum())
    np.testing.assert_allclose(host(vsfast.svdvals(cuda(a))), host(values), rtol=0, atol=10 * eps * float(values.max()))
    u, s, vh = vsfast.svd(cuda(a), full_matrices=True)
    assert (u.shape, s.shape, vh.shape) == ((2, 3, 9, 9), (2, 3, 6), (2, 3, 6, 6)) and u.is_cuda
    uh = host(u)
    np.testing.assert_allclose(np.swapaxes(uh, -1, -2) @ uh, np.broadcast_to(np.eye(9), (2, 3, 9, 9)), atol=100 * eps)
    counts = torch.arange(12, device="cuda").reshape(4, 3)
    assert vsfast.svd(counts).S.dtype == torch.float64
