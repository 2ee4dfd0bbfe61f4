"""The compiled modules themselves: vsfast._core's svdvals, the exceptions and build_info() of both
modules, and the type stubs (vsfast/_core.pyi, vsfast/_cuda.pyi) against what the modules define."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import numpy as np
import pytest

import vsfast
from conftest import EPS, random_orthonormal, unaligned, with_spectrum
from vsfast import _core

DTYPES = [np.float32, np.float64]
SHAPES = [(120, 80), (80, 120), (64, 64), (1, 50), (50, 1), (1, 1)]


def _cuda_module():
    """vsfast._cuda, or None where it is not built or does not load."""
    try:
        return importlib.import_module("vsfast._cuda")
    except (ImportError, OSError, RuntimeError):
        return None


def svdvals_tolerance(a: np.ndarray, dtype) -> float:
    """A backward-stable SVD returns the exact singular values of A + E with ||E||_2 <= p(m, n)
    eps ||A||_2, so by Weyl's inequality each one is within that of the true one; p(m, n) = 10
    max(m, n) covers LAPACK's bidiagonalisation and divide and conquer with room to spare. A float32
    input is compared with the float64 SVD of the same (exactly representable) values: eps is
    float32's, the reference's own error 1e9 times smaller."""
    largest = float(np.linalg.svd(a.astype(np.float64), compute_uv=False)[..., 0].max())  # over a batch
    return 10 * max(a.shape[-2:]) * float(EPS[dtype]) * largest


# --- svdvals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spectrum", ["fast", "slow", "lowrank", "cond1e12"])
def test_svdvals_matches_numpy_in_float64(rng, dtype, shape, spectrum):
    a64, _ = with_spectrum(rng, *shape, spectrum)
    a = a64.astype(dtype)
    s = _core.svdvals(a)
    reference = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert s.dtype == dtype and s.shape == (min(shape),)
    assert np.all(np.diff(s.astype(np.float64)) <= 0), "singular values must come in descending order"
    np.testing.assert_allclose(s, reference, rtol=0, atol=svdvals_tolerance(a, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_svdvals_of_a_batch_are_those_of_each_matrix(rng, dtype):
    a = rng.standard_normal((5, 30, 17)).astype(dtype)
    s = _core.svdvals(a)
    assert s.shape == (5, 17) and s.dtype == dtype
    for b in range(5):
        np.testing.assert_array_equal(s[b], _core.svdvals(np.ascontiguousarray(a[b])))
    np.testing.assert_allclose(s, np.linalg.svd(a.astype(np.float64), compute_uv=False), rtol=0,
                               atol=svdvals_tolerance(a, dtype))


def test_svdvals_agree_with_svd(rng):
    a, _ = with_spectrum(rng, 40, 25, "cond1e12")
    np.testing.assert_allclose(_core.svdvals(a), _core.svd(a)[1], rtol=0, atol=svdvals_tolerance(a, np.float64))


def test_svdvals_refuses_bad_input():
    with pytest.raises(ValueError, match="A: expected finite values"):
        _core.svdvals(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="A: expected finite values"):
        _core.svdvals(np.stack([np.eye(3), np.full((3, 3), np.inf)]))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.svdvals(np.asfortranarray(np.ones((3, 4))))
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.svdvals(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        _core.svdvals(np.ones(4))
    with pytest.raises(ValueError, match="non-empty"):
        _core.svdvals(np.ones((0, 4)))
    with pytest.raises(ValueError, match="A: expected an aligned array"):
        _core.svdvals(unaligned(np.ones((3, 4))))


def test_svdvals_beyond_float32_are_overflow_errors(rng):
    # Finite entries whose largest singular value (about 4.5e38) exceeds float32's range.
    rank_one = random_orthonormal(rng, 6, 1) @ random_orthonormal(rng, 6, 1).T
    a = np.clip(rank_one * 3e38 * 6, -3e38, 3e38).astype(np.float32)
    assert np.all(np.isfinite(a)) and np.linalg.norm(a.astype(np.float64), 2) > np.finfo(np.float32).max
    with pytest.raises(OverflowError, match="A's largest singular value overflows float32"):
        _core.svdvals(a)
    s = _core.svdvals(a.astype(np.float64))  # the same matrix fits float64
    assert s[0] > np.finfo(np.float32).max


# --- svdvals_gram: a float32 matrix's singular values from its float64 Gram matrix ---------------

GRAM_SHAPES = SHAPES + [(600, 70), (70, 600), (257, 256)]  # across the 256-wide panels, with a rest


def gram_tolerance(a: np.ndarray) -> float:
    """The bound on |s_gram^2 - s^2|: the float64 Gram matrix's entries are dot products of length
    max(m, n) of exact float64 products, each off by max(m, n) eps64 ||A||_F^2 at most, and dsyevd
    is backward stable (p(q) eps64 ||G||_2 <= p(q) eps64 ||A||_F^2 with q = min(m, n)); 10 (max(m, n)
    + min(m, n)) eps64 ||A||_F^2 covers both with the svdvals tests' slack factor."""
    frobenius2 = float(np.sum(a.astype(np.float64) ** 2))
    return 10 * (sum(a.shape[-2:])) * float(EPS[np.float64]) * frobenius2


@pytest.mark.parametrize("shape", GRAM_SHAPES)
@pytest.mark.parametrize("spectrum", ["fast", "slow", "lowrank", "cond1e12"])
def test_svdvals_gram_within_the_gram_bound(rng, shape, spectrum):
    a = with_spectrum(rng, *shape, spectrum)[0].astype(np.float32)
    s = _core.svdvals_gram(a).astype(np.float64)
    reference = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert s.shape == (min(shape),) and np.all(np.diff(s) <= 0)
    # the Gram bound, then the rounding of each value to float32 (2 eps32 relative in s^2)
    excess = np.abs(s**2 - reference**2) - (gram_tolerance(a) + 2 * float(EPS[np.float32]) * reference**2)
    assert np.all(excess <= 0), f"beyond the bound by {excess.max():.3g}"


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (600, 70)])
@pytest.mark.parametrize("spectrum", ["fast", "cond1e12"])
def test_svdvals_gram_is_closer_than_float32_gesdd_above_the_rank_tolerance(rng, shape, spectrum):
    # What the route is for: every value a float32 rank counts comes out closer than sgesdd's.
    a = with_spectrum(rng, *shape, spectrum)[0].astype(np.float32)
    reference = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    counted = reference > max(shape) * float(EPS[np.float32]) * reference[0]
    assert counted.sum() >= 5 and not counted.all()
    error = {name: np.max(np.abs(s.astype(np.float64) - reference)[counted] / reference[counted])
             for name, s in (("gram", _core.svdvals_gram(a)), ("gesdd", _core.svdvals(a)))}
    assert error["gram"] <= error["gesdd"], error


def test_svdvals_gram_of_a_batch_are_those_of_each_matrix(rng):
    a = rng.standard_normal((5, 300, 40)).astype(np.float32)
    s = _core.svdvals_gram(a)
    assert s.shape == (5, 40) and s.dtype == np.float32
    for b in range(5):
        np.testing.assert_array_equal(s[b], _core.svdvals_gram(np.ascontiguousarray(a[b])))


def test_svdvals_gram_refuses_bad_input(rng):
    with pytest.raises(TypeError, match="float32 .float64 input takes svdvals"):
        _core.svdvals_gram(np.ones((3, 4)))
    with pytest.raises(ValueError, match="A: expected finite values"):
        _core.svdvals_gram(np.array([[1.0, np.nan], [0.0, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="A: expected an aligned array"):
        _core.svdvals_gram(unaligned(np.ones((3, 4), dtype=np.float32)))
    rank_one = random_orthonormal(rng, 6, 1) @ random_orthonormal(rng, 6, 1).T
    with pytest.raises(OverflowError, match="A's largest singular value overflows float32"):
        _core.svdvals_gram(np.clip(rank_one * 3e38 * 6, -3e38, 3e38).astype(np.float32))


def _gpu_or_skip():
    """vsfast._cuda and torch, where a CUDA device is there to run on."""
    cuda = _cuda_module()
    if cuda is None or cuda.device_count() == 0:
        pytest.skip("no CUDA device" if cuda is not None else "vsfast._cuda is not built")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return cuda, torch


def _cuda_svdvals(cuda, torch, a: np.ndarray):
    """_cuda.svdvals of the batch a (b, m, n) on device 0, by the binding's argument convention."""
    batch, m, n = a.shape
    dtype, device = a.dtype.name, torch.device("cuda", 0)
    at = torch.from_numpy(a).to(device)
    s = torch.empty((batch, min(m, n)), dtype=at.dtype, device=device)
    nbytes = cuda.svdvals_workspace(dtype, 0, batch, m, n)
    workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream
    cuda.svdvals(dtype, 0, stream, workspace.data_ptr(), nbytes, at.data_ptr(), batch, m, n, s.data_ptr())
    return s.cpu().numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 120, 80), (2, 80, 120), (5, 20, 20), (1, 1, 50), (2, 50, 1)])
def test_cuda_svdvals_match_the_cpu(rng, dtype, shape):
    cuda, torch = _gpu_or_skip()
    a = np.stack([with_spectrum(rng, *shape[1:], "cond1e12")[0] for _ in range(shape[0])]).astype(dtype)
    # Both within svdvals_tolerance of the exact values, so within twice that of each other.
    np.testing.assert_allclose(_cuda_svdvals(cuda, torch, a), _core.svdvals(a), rtol=0,
                               atol=2 * svdvals_tolerance(a, dtype))


def test_cuda_svdvals_refuse_what_the_cpu_refuses(rng):
    cuda, torch = _gpu_or_skip()
    with pytest.raises(ValueError, match="A: expected finite values"):
        _cuda_svdvals(cuda, torch, np.full((1, 3, 3), np.nan))
    rank_one = random_orthonormal(rng, 6, 1) @ random_orthonormal(rng, 6, 1).T
    big = np.clip(rank_one * 3e38 * 6, -3e38, 3e38).astype(np.float32)[None]
    with pytest.raises(OverflowError, match="A's largest singular value overflows float32"):
        _cuda_svdvals(cuda, torch, big)
    tiny = (rank_one * 1e-300)[None]  # rescaled before the Jacobi rotations, scaled back after
    np.testing.assert_allclose(_cuda_svdvals(cuda, torch, tiny), _core.svdvals(tiny), rtol=0,
                               atol=2 * svdvals_tolerance(tiny, np.float64))


# --- exceptions -------------------------------------------------------------------------------------

def test_linalg_error_is_numpys():
    assert issubclass(_core.LinAlgError, np.linalg.LinAlgError)
    assert issubclass(_core.LinAlgError, ValueError)  # as numpy's, and as it was before
    assert vsfast.LinAlgError is _core.LinAlgError
    cuda = _cuda_module()
    if cuda is not None:
        assert issubclass(cuda.LinAlgError, _core.LinAlgError)
        assert issubclass(cuda.LinAlgError, np.linalg.LinAlgError)
        assert issubclass(cuda.CudaError, RuntimeError)


# --- build_info ---------------------------------------------------------------------------------------

def test_core_build_info():
    info = _core.build_info()
    assert set(info) == {"compiler", "build_type", "cxx_flags", "compiled_for", "cpu_features", "blas_config",
                         "sanitizers", "threads"}
    assert info["compiler"] and info["compiler"] != "unknown"
    assert isinstance(info["cxx_flags"], str) and isinstance(info["build_type"], str)
    assert info["blas_config"].startswith("OpenBLAS"), info["blas_config"]
    assert isinstance(info["sanitizers"], bool)
    assert info["threads"] == _core.get_num_threads()
    assert all(isinstance(isa, str) for isa in info["compiled_for"])
    features = info["cpu_features"]
    assert all(isinstance(v, bool) for v in features.values())
    if "sse4.2" in features:  # x86: every extension the build asked for, the CPU must have
        assert set(features) >= {"sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bf16", "amx-tile"}
        assert all(features[isa] for isa in info["compiled_for"] if isa in features)
        # The hierarchy of the extensions, as CPUs implement them.
        assert not features["avx2"] or features["avx"]
        assert not features["avx512f"] or features["avx2"]


def test_cuda_build_info():
    cuda = _cuda_module()
    if cuda is None:
        pytest.skip("vsfast._cuda is not built")
    info = cuda.build_info()
    assert set(info) == {"cuda_runtime_built", "cuda_runtime", "cuda_driver", "nvcc", "architectures",
                         "cublas_built", "cublas", "cusolver_built", "cusolver", "device_count"}
    for key in ("cuda_runtime_built", "cuda_runtime", "nvcc", "cublas_built", "cusolver_built"):
        assert info[key][0].isdigit(), (key, info[key])
    # CMake's list: "80 90", or with the kind of code, "75-real ... 90-real 90-virtual" (PTX).
    assert re.fullmatch(r"\d+(-(real|virtual))?( \d+(-(real|virtual))?)*", info["architectures"]), info["architectures"]
    # The runtime is linked statically: the one running is the one built with.
    assert info["cuda_runtime"] == info["cuda_runtime_built"]
    assert info["device_count"] == cuda.device_count()
    assert (info["cuda_driver"] == "") == (info["device_count"] == 0 and "driver" in cuda.unavailable_reason())


# --- the type stubs ------------------------------------------------------------------------------------

def _split_top_level(text: str) -> list[str]:
    """Split a parameter list at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _runtime_parameters(function) -> list[str]:
    """Parameter names from pybind11's signature line, ``name(a: type, b: type = default) -> type``."""
    line = function.__doc__.splitlines()[0]
    inner = line[line.index("(") + 1: line.rindex(")", 0, line.rindex(" -> "))]
    return [p.split(":")[0].strip() for p in _split_top_level(inner)]


def _stub_parameters(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]


def _check_class(name: str, node: ast.ClassDef, runtime: type) -> None:
    """The stub's methods and properties are the class's, with the same parameter names."""
    if issubclass(runtime, BaseException):
        return
    members = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
    assert {m for m in members if not m.startswith("_")} == {m for m in vars(runtime) if not m.startswith("_")}, name
    for member, stub in members.items():
        if not isinstance(vars(runtime)[member], property):
            assert _stub_parameters(stub) == _runtime_parameters(vars(runtime)[member]), f"{name}.{member}"


@pytest.mark.parametrize("name", ["_core", "_cuda"])
def test_stubs_declare_what_the_module_defines(name):
    module = _core if name == "_core" else _cuda_module()
    if module is None:
        pytest.skip("vsfast._cuda is not built")
    tree = ast.parse(pathlib.Path(vsfast.__file__).with_name(f"{name}.pyi").read_text())
    nodes = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    # Private names absent at run time are the stub's own (TypedDicts of build_info's result).
    declared = {n for n in nodes if hasattr(module, n) or not n.startswith("_")}
    assert declared == {n for n in dir(module) if not n.startswith("__")}
    for attr in declared:
        if isinstance(nodes[attr], ast.FunctionDef):
            assert _stub_parameters(nodes[attr]) == _runtime_parameters(getattr(module, attr)), attr
        else:
            _check_class(attr, nodes[attr], getattr(module, attr))
