"""The GPU path: torch CUDA tensors and CuPy arrays in and out of ``vsfast._cuda``.

The public functions of :mod:`vsfast.linalg` send GPU arguments here. Arrays cross by device
pointer, without copies when they are C-contiguous float32/float64; results are allocated by the
caller's framework on the caller's device, and the work runs on its current stream. The scratch
memory every call needs is sized by ``vsfast._cuda`` and allocated by the framework too, so it comes
from torch's or CuPy's caching allocator rather than from a cudaMalloc per call.

Neither torch nor CuPy is imported here unless the caller already did: an array of theirs cannot
exist otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from . import _core
from ._arrays import check_int, check_tolerance
from .linalg import Chain, RangeWarning, Reconstruction, Spaces, _activation, _leading, _rsvd_params, _spaces_request


def _import_error(exc: Exception) -> str:
    """Why the CUDA module is unavailable. An absent one would otherwise read as Python's
    misleading "partially initialized module (most likely due to a circular import)"."""
    if importlib.util.find_spec(f"{__package__}._cuda") is None:
        return "vsfast was built without its CUDA module (no nvcc or CUDA libraries at build time)"
    return f"{type(exc).__name__}: {exc}"


try:  # built only where nvcc and the CUDA libraries were found; loads without a driver
    from . import _cuda
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


def cuda_available() -> bool:
    """Whether vsfast's CUDA module is built and sees at least one device."""
    return _cuda is not None and _cuda.device_count() > 0


def set_gpu_precision(precision: str) -> None:
    """Arithmetic of the float32 products over the input on the GPU: ``"float32"`` (default, the
    accuracy of the CPU core) or ``"tf32"`` (tensor cores with 10-bit mantissas: faster on large
    randomized SVDs, with errors near 1e-3 relative; see the README). Also set by the environment
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


def _torch_cuda_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and x.device.type == "cuda"


def is_gpu(x: Any) -> bool:
    """A torch CUDA tensor or an object exposing ``__cuda_array_interface__`` (CuPy, Numba...)."""
    return _torch_cuda_tensor(x) or (not _is_torch(x) and hasattr(x, "__cuda_array_interface__"))


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def wants(*args: Any) -> bool:
    """Whether a call with these arguments goes to the GPU. Without the CUDA module the CPU path
    runs and refuses GPU arrays with its own message."""
    return _cuda is not None and any(is_gpu(a) for a in args)


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


def operand(x: Any, name: str, *, ndims: Sequence[int], dtype: str | None = None, like=None):
    """x as a C-contiguous float32/float64 device array, and its framework. `like` is the
    framework the other arguments use: x must be of the same kind on the same device."""
    if like is not None and not is_gpu(x):
        raise TypeError(f"{name}: on {_where(x)}, but the other arguments are {like.kind}s on CUDA device "
                        f"{like.index}; move it there first")
    fw = _framework_of(x, name)
    if like is not None:
        if fw.kind != like.kind:
            raise TypeError(f"{name}: a {fw.kind}, but the other arguments are {like.kind}s")
        if fw.index != like.index:
            raise ValueError(f"{name}: on CUDA device {fw.index}, but the other arguments are on device {like.index}")
        fw = like
    if isinstance(fw, _CuPy) and not isinstance(x, fw.cupy.ndarray):
        x = fw.cupy.asarray(x)
    if fw.dtype_name(x) is None:
        raise TypeError(f"{name}: expected a float32 or float64 array, got {x.dtype}")
    if x.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {wanted} array, got shape {tuple(x.shape)}")
    if any(d == 0 for d in x.shape):
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {tuple(x.shape)}")
    return fw.prepare(x, dtype), fw


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


# --- operations -----------------------------------------------------------------------------------

def _rsvd_arrays(a, fw, k: int, oversample: int, power_iters: int, seed: int):
    *lead, m, n = a.shape
    batch = int(np.prod(lead)) if lead else 1
    dtype = fw.dtype_name(a)
    u, s, vh = fw.empty((*lead, m, k), dtype), fw.empty((*lead, k), dtype), fw.empty((*lead, k, n), dtype)
    ws = _Workspace(fw, _cuda.rsvd_workspace(dtype, fw.index, batch, m, n, k, oversample, power_iters))
    _cuda.rsvd(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, k, oversample, power_iters, seed,
               _precision == "tf32", fw.ptr(u), fw.ptr(s), fw.ptr(vh), ws.extra)
    return u, s, vh


def _svd_arrays(a, fw):
    *lead, m, n = a.shape
    batch, q = (int(np.prod(lead)) if lead else 1), min(m, n)
    dtype = fw.dtype_name(a)
    u, s, vh = fw.empty((*lead, m, q), dtype), fw.empty((*lead, q), dtype), fw.empty((*lead, q, n), dtype)
    ws = _Workspace(fw, _cuda.svd_workspace(dtype, fw.index, batch, m, n))
    _cuda.svd(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, fw.ptr(u), fw.ptr(s), fw.ptr(vh))
    return u, s, vh


def _pinv_arrays(a, fw, rtol, atol, *, transposed: bool = False, with_vh: bool = False):
    """Pseudoinverses (or their transposes) and ranks, both left on the device; with_vh adds the
    right singular vectors of the same SVD."""
    *lead, m, n = a.shape
    batch = int(np.prod(lead)) if lead else 1
    dtype = fw.dtype_name(a)
    out = fw.empty((*lead, m, n) if transposed else (*lead, n, m), dtype)
    ranks = fw.empty((batch,), "int64")
    vh = fw.empty((*lead, min(m, n), n), dtype) if with_vh else None
    ws = _Workspace(fw, _cuda.pinv_workspace(dtype, fw.index, batch, m, n))
    _cuda.pinv(dtype, *_call_args(fw, ws), fw.ptr(a), batch, m, n, rtol, atol, transposed, fw.ptr(out),
               fw.ptr(ranks), fw.ptr(vh) if with_vh else 0)
    return out, ranks, vh


def rsvd(A: Any, k: int, *, oversample: int = 10, power_iters: int = 2, seed: int = 0):
    a, fw = operand(A, "A", ndims=(2, 3))
    k = check_int(k, "k", low=1, high=min(a.shape[-2:]))
    return _rsvd_arrays(a, fw, k, *_rsvd_params(oversample, power_iters, seed, min(a.shape[-2:])))


def svd(A: Any):
    return _svd_arrays(*operand(A, "A", ndims=(2, 3)))


def pinv(W: Any, *, rtol: float | None = None, atol: float | None = None):
    w, fw = operand(W, "W", ndims=(2, 3))
    return _pinv_arrays(w, fw, check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol"))[0]


class GpuSpaces(Spaces):
    """:class:`Spaces` whose bases live on the GPU, as arrays of the caller's framework. The
    rejected bases, built only on request, are completed on the CPU in float64 (as for CPU
    spaces) and moved to the device once."""

    def __init__(self, u, s, vh, rank: int, shape: tuple[int, int], method: str, fw, s_host: np.ndarray):
        super().__init__(u, s, vh, rank, shape, method, lambda a: a)
        self._fw = fw
        self._s_host = s_host

    @property
    def dtype(self) -> np.dtype:
        return self._s_host.dtype

    @property
    def condition_number(self) -> float:
        return float(self._s_host[0] / self._s_host[self.rank - 1]) if self.rank else float("inf")

    @property
    def energy_kept(self) -> float:
        s = self._s_host.astype(np.float64)
        total = float(np.sum(s**2))
        return float(np.sum(s[: self.rank] ** 2) / total) if total else 0.0

    @property
    def signal_out_rows(self):
        return self._fw.contiguous(self._u[:, : self.rank].T)

    def _complement_on_device(self, rows, d: int):
        host = self._fw.to_numpy(rows).astype(np.float64)
        return self._fw.from_numpy(_core.complement(host, d).astype(self.dtype, copy=False))

    @cached_property
    def _rejected_rows(self):
        return self._complement_on_device(self.signal_rows, self.shape[1])

    @cached_property
    def _rejected_out_rows(self):
        return self._complement_on_device(self.signal_out_rows, self.shape[0])


def spaces(W: Any, *, k: int | None = None, rtol: float | None = None, atol: float | None = None,
           method: str = "auto", oversample: int = 10, power_iters: int = 2, seed: int = 0):
    w, fw = operand(W, "W", ndims=(2, 3))
    m, n = w.shape[-2:]
    k, rtol, atol, chosen, params = _spaces_request(m, n, k, rtol, atol, method, oversample, power_iters, seed)
    if chosen == "randomized":
        u, s, vh = _rsvd_arrays(w, fw, k, *params)
    else:
        u, s, vh = _leading(_svd_arrays(w, fw), k)
    s_host = np.ascontiguousarray(fw.to_numpy(s))
    ranks = _core.rank(s_host, m, n, rtol, atol)
    if w.ndim == 2:
        return GpuSpaces(u, s, vh, ranks, (m, n), chosen, fw, s_host)
    return [GpuSpaces(u[i], s[i], vh[i], ranks[i], (m, n), chosen, fw, s_host[i]) for i in range(w.shape[0])]


def _project_rows(x, fw, rows):
    """(signal, residual) of the rows of x (..., d) against the orthonormal rows (r x d)."""
    d = x.shape[-1]
    count = int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1
    dtype = fw.dtype_name(x)
    signal, residual = fw.empty(x.shape, dtype), fw.empty(x.shape, dtype)
    r = rows.shape[0]
    ws = _Workspace(fw, _cuda.project_workspace(dtype, fw.index, count, d, r))
    _cuda.project(dtype, *_call_args(fw, ws), fw.ptr(x), count, d, fw.ptr(rows) if r else 0, r, fw.ptr(signal),
                  fw.ptr(residual))
    return signal, residual


def project(X: Any, basis: Any, *, side: str = "input"):
    x, fw = operand(X, "X", ndims=tuple(range(1, 33)))
    swap = False
    if isinstance(basis, Spaces):
        if side not in ("input", "output"):
            raise ValueError(f"side: expected 'input' or 'output', got {side!r}")
        if not isinstance(basis, GpuSpaces):
            raise TypeError(f"basis: Spaces computed on the CPU, but X is a {fw.kind} on CUDA device {fw.index}; "
                            "compute the spaces of the weight on the GPU")
        if (basis._fw.kind, basis._fw.index) != (fw.kind, fw.index):
            raise TypeError(f"basis: spaces of a {basis._fw.kind} on CUDA device {basis._fw.index}, but X is a "
                            f"{fw.kind} on CUDA device {fw.index}")
        rows, swap = basis._projection_rows(side, inputs=int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1)
        rows = basis._fw.prepare(rows, fw.dtype_name(x))  # may have no rows (rank 0)
    else:
        cols, _ = operand(basis, "basis", ndims=(2,), dtype=fw.dtype_name(x), like=fw)
        rows = fw.contiguous(cols.T)
    if rows.shape[1] != x.shape[-1]:
        raise ValueError(f"X: expected a last dimension of {rows.shape[1]} (the basis vectors' length), "
                         f"got shape {tuple(x.shape)}")
    kept, rest = _project_rows(x, fw, rows)
    return (rest, kept) if swap else (kept, rest)


class GpuChain(Chain):
    """:class:`Chain` on the GPU: every layer's factors, (W^+)^T and its signal basis, computed on
    the device once; each reconstruction is then one fused inverse-activation pass and one matrix
    product per layer on the caller's stream."""

    def __init__(self, layers: Sequence[Any], *, dtype: Any = None, rtol: float | None = None,
                 atol: float | None = None):
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise TypeError("layers: expected a non-empty sequence of (W, b, activation) triples")
        rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
        fw = None
        name = None if dtype is None else np.dtype(dtype).name
        self._arrays, specs = [], []
        for i, layer in enumerate(layers):
            if not isinstance(layer, (tuple, list)) or len(layer) != 3:
                raise TypeError(f"layers[{i}]: expected a (W, b, activation) triple, got {type(layer).__name__}")
            w, fw = operand(layer[0], f"layers[{i}].weight", ndims=(2,), dtype=name, like=fw)
            name = fw.dtype_name(w)
            b = None if layer[1] is None else operand(layer[1], f"layers[{i}].bias", ndims=(1,), dtype=name,
                                                      like=fw)[0]
            if b is not None and b.shape[0] != w.shape[0]:
                raise ValueError(f"layers[{i}].bias: expected {w.shape[0]} values, got shape {tuple(b.shape)}")
            act, param = _activation(layer[2], i)
            pinv_t, ranks, vh = _pinv_arrays(w, fw, rtol, atol, transposed=True, with_vh=True)
            rank = int(fw.to_numpy(ranks)[0])
            signal_rows = vh[:rank]  # leading rows: contiguous
            self._arrays.append((w, b, pinv_t, signal_rows))
            m, n = w.shape
            specs.append((m, n, fw.ptr(w), 0 if b is None else fw.ptr(b), fw.ptr(pinv_t),
                          fw.ptr(signal_rows) if rank else 0, rank, act, param))
        for i in range(1, len(specs)):
            if specs[i][1] != specs[i - 1][0]:
                raise ValueError(f"layers: layer {i} takes {specs[i][1]} inputs but layer {i - 1} gives "
                                 f"{specs[i - 1][0]} outputs")
        self._fw, self._specs = fw, specs
        self.dtype = np.dtype(name)
        self.activations = tuple((s[7], s[8]) for s in specs)
        self._ranks = tuple(s[6] for s in specs)

    def solve(self, Y: Any, **kwargs: Any):
        raise TypeError("Chain.solve runs on the CPU: build the Chain from CPU arrays (numpy or CPU tensors)")

    @property
    def ranks(self) -> tuple[int, ...]:
        return self._ranks

    @property
    def input_dim(self) -> int:
        return self._specs[0][1]

    @property
    def output_dim(self) -> int:
        return self._specs[-1][0]

    def _rows(self, X: Any, name: str, width: int, *, cast: bool = False):
        x, _ = operand(X, name, ndims=(1, 2), dtype=self.dtype.name if cast else None, like=self._fw)
        if self._fw.dtype_name(x) != self.dtype.name:
            raise TypeError(f"{name}: expected the chain's dtype {self.dtype}, got {x.dtype}")
        if x.shape[-1] != width:
            raise ValueError(f"{name}: expected rows of {width} values, got shape {tuple(x.shape)}")
        return x.reshape(-1, width), x.ndim == 1

    def reconstruct(self, Y: Any, *, reference: Any = None, reference_layers: str = "first") -> Reconstruction:
        if reference_layers not in ("all", "first"):
            raise ValueError(f"reference_layers: expected 'all' or 'first', got {reference_layers!r}")
        y, single = self._rows(Y, "Y", self.output_dim)
        ref = None if reference is None else self._rows(reference, "reference", self.input_dim, cast=True)[0]
        fw, dtype, rows = self._fw, self.dtype.name, y.shape[0]
        ref_rows = 0 if ref is None else ref.shape[0]
        if ref_rows not in (0, 1, rows):
            raise ValueError(f"reference: expected 1 or {rows} rows of {self.input_dim} values, got shape "
                             f"{tuple(ref.shape)}")
        every = reference_layers == "all"
        x = fw.empty((rows, self.input_dim), dtype)
        ws = _Workspace(fw, _cuda.reconstruct_workspace(dtype, fw.index, self._specs, rows, ref_rows, every))
        clamped = _cuda.reconstruct(dtype, *_call_args(fw, ws), self._specs, fw.ptr(y), rows,
                                    0 if ref is None else fw.ptr(ref), ref_rows, every, fw.ptr(x))
        clamped = tuple(int(c) for c in clamped)
        if any(clamped):
            where = ", ".join(f"layer {i}: {c}" for i, c in enumerate(clamped) if c)
            warnings.warn(f"targets outside the activation range were clamped ({where})", RangeWarning,
                          stacklevel=3)
        return Reconstruction(x[0] if single else x, clamped)

    def forward(self, X: Any):
        x, single = self._rows(X, "X", self.input_dim)
        fw, dtype, rows = self._fw, self.dtype.name, x.shape[0]
        y = fw.empty((rows, self.output_dim), dtype)
        ws = _Workspace(fw, _cuda.forward_workspace(dtype, fw.index, self._specs, rows))
        _cuda.forward(dtype, *_call_args(fw, ws), self._specs, fw.ptr(x), rows, fw.ptr(y))
        return y[0] if single else y


def wants_layers(layers: Any) -> bool:
    """Whether a chain's layers are on the GPU (judged by the first weight)."""
    if _cuda is None or not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)) or not layers:
        return False
    first = layers[0]
    return isinstance(first, (tuple, list)) and len(first) == 3 and is_gpu(first[0])


def reconstruct(layers: Sequence[Any], Y: Any, *, reference: Any = None, reference_layers: str = "first",
                rtol: float | None = None, atol: float | None = None) -> Reconstruction:
    y, fw = operand(Y, "Y", ndims=(1, 2))
    chain = GpuChain(layers, dtype=fw.dtype_name(y), rtol=rtol, atol=atol)
    return chain.reconstruct(y, reference=reference, reference_layers=reference_layers)


__all__ = ["cuda_available", "set_gpu_precision", "get_gpu_precision", "GpuSpaces", "GpuChain", "IMPORT_ERROR"]
