"""The GPU backend: torch CUDA tensors and CuPy arrays, computed by ``vsfast._cuda``.

The same primitives, under the same names, as :mod:`vsfast._backends.cpu` (its docstring lists
them). Arrays cross by device pointer, without copies when they are C-contiguous float32/float64;
results are allocated by the caller's framework on the caller's device, and the work runs on its
current stream. The scratch memory every call needs is sized by ``vsfast._cuda`` and allocated by
the framework too, so it comes from torch's or CuPy's caching allocator rather than from a
cudaMalloc per call.

Neither torch nor CuPy is imported here unless the caller already did: an array of theirs cannot
exist otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from . import cpu

name = "gpu"


def _import_error(exc: Exception) -> str:
    """Why the CUDA module is unavailable. An absent one would otherwise read as Python's
    misleading "partially initialized module (most likely due to a circular import)"."""
    if importlib.util.find_spec("vsfast._cuda") is None:
        return "vsfast was built without its CUDA module (no nvcc or CUDA libraries at build time)"
    return f"{type(exc).__name__}: {exc}"


try:  # built only where nvcc and the CUDA libraries were found; loads without a driver
    from .. import _cuda
except (ImportError, OSError, RuntimeError) as exc:  # never let it break `import vsfast`
    _cuda = None
    IMPORT_ERROR = _import_error(exc)
else:
    IMPORT_ERROR = ""

_PRECISIONS = ("float32", "tf32")
_precision = os.environ.get("VSFAST_GPU_PRECISION", "float32")
if _precision not in _PRECISIONS:
    warnings.warn(f"VSFAST_GPU_PRECISION={_precision!r} is not one of {_PRECISIONS}; using float32", RuntimeWarning,
                  stacklevel=2)
    _precision = "float32"


def available_module():
    """The CUDA module, or None where it is not built or does not load."""
    return _cuda


def cuda_available() -> bool:
    """Whether vsfast's CUDA module is built and sees at least one device."""
    return _cuda is not None and _cuda.device_count() > 0


def set_gpu_precision(precision: str) -> None:
    """Arithmetic of the float32 products over the input on the GPU: ``"float32"`` (default, the
    accuracy of the CPU core) or ``"tf32"`` (tensor cores with 10-bit mantissas: faster on large
    randomized SVDs, with errors near 1e-3 relative; see docs/gpu.md). Also set by the environment
    variable VSFAST_GPU_PRECISION. float64 is never affected."""
    global _precision
    if precision not in _PRECISIONS:
        raise ValueError(f"precision: expected one of {_PRECISIONS}, got {precision!r}")
    _precision = precision


def get_gpu_precision() -> str:
    return _precision


# --- frameworks -----------------------------------------------------------------------------------

class _Torch:
    """torch CUDA tensors on one device."""

    kind = "torch tensor"

    def __init__(self, device_index: int):
        import torch

        self.torch = torch
        self.index = device_index
        self.device = torch.device("cuda", device_index)

    def dtype_name(self, a) -> str | None:
        return {self.torch.float32: "float32", self.torch.float64: "float64"}.get(a.dtype)

    def prepare(self, a, dtype: str | None):
        a = a.detach().resolve_conj().resolve_neg()
        if dtype is not None and self.dtype_name(a) != dtype:
            a = a.to(getattr(self.torch, dtype))
        return a.contiguous()

    def empty(self, shape, dtype: str):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=self.device)

    def ptr(self, a) -> int:
        return a.data_ptr()

    def stream(self) -> int:
        return self.torch.cuda.current_stream(self.device).cuda_stream

    def contiguous(self, a):
        return a.contiguous()

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def from_numpy(self, a: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def is_integral(self, a) -> bool:
        return not a.is_floating_point() and not a.is_complex()

    def concat(self, arrays, axis: int):
        return self.torch.cat(arrays, dim=axis)


class _CuPy:
    """CuPy arrays (and other ``__cuda_array_interface__`` objects, viewed through CuPy)."""

    kind = "CuPy array"

    def __init__(self, device_index: int):
        import cupy

        self.cupy = cupy
        self.index = device_index

    def dtype_name(self, a) -> str | None:
        return {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}.get(np.dtype(a.dtype))

    def prepare(self, a, dtype: str | None):
        with self.cupy.cuda.Device(self.index):
            if dtype is not None and self.dtype_name(a) != dtype:
                a = a.astype(dtype)
            return self.cupy.ascontiguousarray(a)

    def empty(self, shape, dtype: str):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.empty(tuple(shape), dtype=dtype)

    def ptr(self, a) -> int:
        return a.data.ptr

    def stream(self) -> int:
        with self.cupy.cuda.Device(self.index):
            return self.cupy.cuda.get_current_stream().ptr

    def contiguous(self, a):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.ascontiguousarray(a)

    def to_numpy(self, a) -> np.ndarray:
        return self.cupy.asnumpy(a)

    def from_numpy(self, a: np.ndarray):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.asarray(a)

    def is_integral(self, a) -> bool:
        return np.dtype(a.dtype).kind in "biu"

    def concat(self, arrays, axis: int):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.concatenate(arrays, axis=axis)


def _torch_cuda_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and x.device.type == "cuda"


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_gpu(x: Any) -> bool:
    """A torch CUDA tensor or an object exposing ``__cuda_array_interface__`` (CuPy, Numba...)."""
    return _torch_cuda_tensor(x) or (not _is_torch(x) and hasattr(x, "__cuda_array_interface__"))


def describe(x: Any) -> str:
    """What x is and where, for messages."""
    if _is_torch(x):
        return f"a tensor on {x.device}"
    return f"a GPU array ({type(x).__module__}.{type(x).__name__})"


def _where(x: Any) -> str:
    if _is_torch(x):
        return str(x.device)
    if hasattr(x, "__cuda_array_interface__"):
        return "a CUDA device"
    return "the CPU"


def _framework_of(x: Any, name: str):
    if _torch_cuda_tensor(x):
        return _Torch(x.device.index if x.device.index is not None else 0)
    if not _is_torch(x) and hasattr(x, "__cuda_array_interface__"):
        try:
            import cupy
        except ImportError:
            raise TypeError(f"{name}: a GPU array of type {type(x).__name__} needs CuPy to be read by vsfast; "
                            "pass a torch CUDA tensor or a CuPy array") from None
        if not isinstance(x, cupy.ndarray):
            x = cupy.asarray(x)  # a view, no copy
        return _CuPy(x.device.id)
    raise TypeError(f"{name}: expected a torch CUDA tensor or a CuPy array, got {type(x).__name__} on {_where(x)}")


def _float_dtype(fw, a, name: str) -> str:
    """The dtype the call computes in, as numpy.linalg chooses it: float32/float64 as they are,
    integers and booleans as float64; float16, complex and the rest refused."""
    dtype = fw.dtype_name(a)
    if dtype is not None:
        return dtype
    if fw.is_integral(a):
        return "float64"
    raise TypeError(f"{name}: expected real numbers (float32, float64 or integers), got dtype {a.dtype}")


def asarray(x: Any, name: str, dtype: Any = None, like: Any = None):
    """x as a C-contiguous float32/float64 device array and the function that turns results back
    into x's kind (the identity: results are made by x's framework on x's device). `like`, an
    array returned before, names the framework and device the other arguments use: x must be of
    the same kind on the same device."""
    like_fw = None if like is None else _framework_of(like, "like")
    if like_fw is not None and not is_gpu(x):
        raise TypeError(f"{name}: on {_where(x)}, but the other arguments are {like_fw.kind}s on CUDA device "
                        f"{like_fw.index}; move it there first")
    fw = _framework_of(x, name)
    if like_fw is not None:
        if fw.kind != like_fw.kind:
            raise TypeError(f"{name}: a {fw.kind}, but the other arguments are {like_fw.kind}s")
        if fw.index != like_fw.index:
            raise ValueError(f"{name}: on CUDA device {fw.index}, but the other arguments are on device "
                             f"{like_fw.index}")
    if isinstance(fw, _CuPy) and not isinstance(x, fw.cupy.ndarray):
        x = fw.cupy.asarray(x)
    target = np.dtype(dtype).name if dtype is not None else None
    computed = _float_dtype(fw, x, name)
    return fw.prepare(x, target or computed), _identity


def _identity(a):
    return a


class _Workspace:
    """The scratch memory of one call, from the framework's allocator: released (back to its cache)
    when the call returns, after all its work was queued on the caller's stream."""

    def __init__(self, fw, nbytes: int):
        self.nbytes = int(nbytes)
        self.buffer = fw.empty((self.nbytes,), "uint8") if self.nbytes else None
        self.ptr = fw.ptr(self.buffer) if self.nbytes else 0
        self._fw, self._extra = fw, []

    def extra(self, nbytes: int) -> int:
        """More scratch memory during the call, for the rare needs that depend on the data (a
        rescaled copy of the input); released with the rest."""
        self._extra.append(self._fw.empty((int(nbytes),), "uint8"))
        return self._fw.ptr(self._extra[-1])


def _call_args(fw, ws: _Workspace) -> tuple:
    return fw.index, fw.stream(), ws.ptr, ws.nbytes


def _batch(a) -> tuple[list[int], int, int, int]:
    *lead, m, n = a.shape
    return list(lead), (int(np.prod(lead)) if lead else 1), m, n


# --- operations -----------------------------------------------------------------------------------

#: The method ``rsvd(method="auto")`` runs here: the GPU has subspace iteration only.
RSVD_METHOD = "subspace"


def _require_gpu_rsvd(method: str, precision: str, tol: float) -> None:
    """Refuse what only the CPU core runs, saying so; the GPU's own reduced precision is TF32
    (:func:`set_gpu_precision`)."""
    if method != "subspace":
        raise TypeError(f"method={method!r} runs on the CPU; on the GPU use method='subspace' (or 'auto'), "
                        "or move A to the CPU")
    if tol:
        raise TypeError("power_iters='auto' runs on the CPU (block Krylov); on the GPU give a number of iterations")
    if precision == "bfloat16":
        raise TypeError("precision='bfloat16' runs on the CPU; on the GPU see vsfast.set_gpu_precision('tf32')")


def rsvd(a, k: int, oversample: int, power_iters: int, seed: int, method: str, precision: str, tol: float):
    _require_gpu_rsvd(method, precision, tol)
    fw = _framework_of(a, "A")
    lead, batch, m, n = _batch(a)
    dtype = fw.dtype_name(a)
    u, s, vh = fw.empty((*lead, m, k), dtype), fw.empty((*lead, k), dtype), fw.empty((*lead, k, n), dtype)
    ws = _Workspace(fw, _cuda.rsvd_workspace(dtype, fw.index, batch, m, n, k, oversample, power_iters))
    _cuda.rsvd(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, k, oversample, power_iters, seed,
               _precision == "tf32", fw.ptr(u), fw.ptr(s), fw.ptr(vh), ws.extra)
    return u, s, vh


def svd(a):
    fw = _framework_of(a, "A")
    lead, batch, m, n = _batch(a)
    q, dtype = min(m, n), fw.dtype_name(a)
    u, s, vh = fw.empty((*lead, m, q), dtype), fw.empty((*lead, q), dtype), fw.empty((*lead, q, n), dtype)
    ws = _Workspace(fw, _cuda.svd_workspace(dtype, fw.index, batch, m, n))
    _cuda.svd(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, fw.ptr(u), fw.ptr(s), fw.ptr(vh))
    return u, s, vh


def svdvals(a):
    fw = _framework_of(a, "A")
    lead, batch, m, n = _batch(a)
    dtype = fw.dtype_name(a)
    s = fw.empty((*lead, min(m, n)), dtype)
    ws = _Workspace(fw, _cuda.svdvals_workspace(dtype, fw.index, batch, m, n))
    _cuda.svdvals(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, fw.ptr(s))
    return s


def spectrum(a):
    """Singular values for a weight matrix's metrics: the Jacobi SVD's (svdvals), which already
    gives each to its dtype's relative precision; the CPU's Gram route answers gesdd's cost."""
    return svdvals(a)


def _pinv_arrays(a, rtol, atol, *, transposed: bool = False, with_vh: bool = False):
    """Pseudoinverses (or their transposes) and ranks, both left on the device; with_vh adds the
    right singular vectors of the same SVD."""
    fw = _framework_of(a, "W")
    lead, batch, m, n = _batch(a)
    dtype = fw.dtype_name(a)
    out = fw.empty((*lead, m, n) if transposed else (*lead, n, m), dtype)
    ranks = fw.empty((batch,), "int64")
    vh = fw.empty((*lead, min(m, n), n), dtype) if with_vh else None
    ws = _Workspace(fw, _cuda.pinv_workspace(dtype, fw.index, batch, m, n))
    _cuda.pinv(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, rtol, atol, transposed, fw.ptr(out),
               fw.ptr(ranks), fw.ptr(vh) if with_vh else 0)
    return out, ranks, vh


def pinv(a, rtol: float | None, atol: float | None):
    return _pinv_arrays(a, rtol, atol)[0]


# Ranks are decided on the host, from singular values already copied there, as on the CPU.
rank = cpu.rank


def complement(rows, d: int):
    """The complement's rows, completed on the host in float64 (as on the CPU) and moved to the
    device once."""
    fw = _framework_of(rows, "basis")
    host = cpu.complement(to_host(rows).astype(np.float64), d)
    return fw.from_numpy(host.astype(fw.dtype_name(rows), copy=False))


def project(x, rows):
    """(signal, residual) of the rows of x (count x d) against the orthonormal rows (r x d)."""
    fw = _framework_of(x, "X")
    count, d = x.shape
    dtype, r = fw.dtype_name(x), rows.shape[0]
    signal, residual = fw.empty(x.shape, dtype), fw.empty(x.shape, dtype)
    ws = _Workspace(fw, _cuda.project_workspace(dtype, fw.index, count, d, r))
    _cuda.project(dtype, *_call_args(fw, ws), fw.ptr(x), count, d, fw.ptr(rows) if r else 0, r, fw.ptr(signal),
                  fw.ptr(residual))
    return signal, residual


def to_host(a) -> np.ndarray:
    return np.ascontiguousarray(_framework_of(a, "array").to_numpy(a))


def concat(arrays, axis: int):
    fw = _framework_of(arrays[0], "array")
    return fw.concat(arrays, axis)


def contiguous(a):
    return _framework_of(a, "array").contiguous(a)


def transpose(a):
    """The matrices of a (..., M, N) transposed, C-contiguous."""
    return _framework_of(a, "array").contiguous(a.swapaxes(-1, -2))


def dtype_of(a) -> np.dtype:
    return np.dtype(_framework_of(a, "array").dtype_name(a))


class _Chain:
    """The GPU chain engine behind :class:`vsfast.Chain`, with the compiled CPU chain's interface:
    every layer's factors, (W^+)^T and its signal basis, computed on the device once; each
    reconstruction is then one fused inverse-activation pass and one matrix product per layer on
    the caller's stream."""

    def __init__(self, layers, rtol: float | None, atol: float | None):
        self._fw = _framework_of(layers[0][0], "layers[0].weight")
        self._arrays, specs = [], []
        for w, b, act, param in layers:
            pinv_t, ranks, vh = _pinv_arrays(w, rtol, atol, transposed=True, with_vh=True)
            rank = int(self._fw.to_numpy(ranks)[0])
            signal_rows = vh[:rank]  # leading rows: contiguous
            self._arrays.append((w, b, pinv_t, signal_rows))  # keeps the pointers below alive
            m, n = w.shape
            specs.append((m, n, self._fw.ptr(w), 0 if b is None else self._fw.ptr(b), self._fw.ptr(pinv_t),
                          self._fw.ptr(signal_rows) if rank else 0, rank, act, param))
        self._specs = specs
        self._dtype = self._fw.dtype_name(layers[0][0])
        self.ranks = [s[6] for s in specs]
        self.input_dim, self.output_dim = specs[0][1], specs[-1][0]

    def reconstruct(self, y, reference, every_layer: bool):
        fw, rows = self._fw, y.shape[0]
        ref_rows = 0 if reference is None else reference.shape[0]
        x = fw.empty((rows, self.input_dim), self._dtype)
        ws = _Workspace(fw, _cuda.reconstruct_workspace(self._dtype, fw.index, self._specs, rows, ref_rows,
                                                        every_layer))
        clamped = _cuda.reconstruct(self._dtype, *_call_args(fw, ws), self._specs, fw.ptr(y), rows,
                                    0 if reference is None else fw.ptr(reference), ref_rows, every_layer, fw.ptr(x))
        return x, clamped

    def solve(self, *args: Any):
        raise TypeError("Chain.solve runs on the CPU: build the Chain from CPU arrays (numpy or CPU tensors)")

    def solve_box(self, *args: Any):
        raise TypeError("Chain.solve_box runs on the CPU: build the Chain from CPU arrays (numpy or CPU tensors)")

    def forward(self, x):
        fw, rows = self._fw, x.shape[0]
        y = fw.empty((rows, self.output_dim), self._dtype)
        ws = _Workspace(fw, _cuda.forward_workspace(self._dtype, fw.index, self._specs, rows))
        _cuda.forward(self._dtype, *_call_args(fw, ws), self._specs, fw.ptr(x), rows, fw.ptr(y))
        return y


def chain(layers, rtol: float | None, atol: float | None) -> _Chain:
    return _Chain(layers, rtol, atol)


# The block steps of a distributed rsvd (cpu.py) run on the CPU: Dask's workers hold numpy blocks.
def _runs_on_the_cpu(name: str):
    raise TypeError(f"{name} runs on the CPU: vsfast.distributed works on dask arrays of numpy blocks")


def sketch(m: int, n: int, k: int, oversample: int, seed: int, dtype):
    _runs_on_the_cpu("sketch")


def block_largest(a, name: str) -> float:
    _runs_on_the_cpu("block_largest")


# A rule of the dtype, decided on the host as on the CPU.
block_exponent = cpu.block_exponent


def block_range(a, z, transposed: bool, exponent: int):
    _runs_on_the_cpu("block_range")


def block_corange(a, y, transposed: bool, exponent: int):
    _runs_on_the_cpu("block_corange")


def cholesky_factor(gram, near_identity: bool):
    _runs_on_the_cpu("cholesky_factor")


def solve_factor(y, r, with_gram: bool):
    _runs_on_the_cpu("solve_factor")


def householder_qr(y):
    _runs_on_the_cpu("householder_qr")


__all__ = ["asarray", "block_corange", "block_exponent", "block_largest", "block_range", "chain", "cholesky_factor",
           "complement", "concat", "contiguous", "dtype_of", "householder_qr", "pinv", "project", "rank", "rsvd",
           "sketch", "solve_factor", "spectrum", "svd", "svdvals", "to_host", "transpose", "cuda_available",
           "set_gpu_precision", "get_gpu_precision", "IMPORT_ERROR"]
