"""Conversion between the caller's arrays (numpy, torch) and the C-contiguous float32/float64
numpy arrays the compiled core takes, and back. What comes in as torch goes out as torch."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Wrap = Callable[[np.ndarray], Any]


def _torch_tensor_type():
    torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
    return torch.Tensor if torch is not None else None


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _to_torch(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


def is_tensor(x: Any) -> bool:
    tensor = _torch_tensor_type()
    return tensor is not None and isinstance(x, tensor)


def values(x: Any) -> np.ndarray:
    """x's values as a numpy array, whatever their dtype: array-likes as they are, tensors
    detached and moved to the CPU. For arguments that are data, not operands of the core."""
    if is_tensor(x) and x.device.type == "meta":
        raise TypeError("expected data, got a tensor on the meta device (shapes only, no values)")
    return np.asarray(x.detach().cpu() if is_tensor(x) else x)


def to_numpy(x: Any, name: str) -> tuple[np.ndarray, Wrap]:
    """The numpy view of x (no copy where possible) and the function that turns results back
    into x's kind. Raises TypeError for anything but a float32/float64 numpy array or CPU tensor."""
    if is_tensor(x):
        if x.device.type != "cpu":
            raise TypeError(
                f"{name}: got a tensor on {x.device}, but vsfast was built without its CUDA module "
                "(vsfast._cuda); move it to the CPU with .cpu()"
            )
        if x.is_complex() or not x.is_floating_point() or x.dtype.itemsize not in (4, 8):
            raise TypeError(f"{name}: expected a float32 or float64 tensor, got {x.dtype}")
        # Gradients do not flow through vsfast: it reads the values only.
        return x.detach().resolve_conj().resolve_neg().numpy(), _to_torch
    if hasattr(x, "__cuda_array_interface__"):
        raise TypeError(
            f"{name}: got a GPU array ({type(x).__module__}.{type(x).__name__}), but vsfast was built "
            "without its CUDA module (vsfast._cuda)"
        )
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {x.dtype}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x, _identity


def as_core_array(
    x: Any, name: str, *, ndims: tuple[int, ...], dtype: np.dtype | None = None
) -> tuple[np.ndarray, Wrap]:
    """x as a C-contiguous float32/float64 array with ndim in `ndims`, no dimension empty.

    `dtype` casts to that dtype (used where one argument's dtype follows another's)."""
    a, wrap = to_numpy(x, name)
    if a.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {wanted} array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {a.shape}")
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    return np.ascontiguousarray(a), wrap


def check_int(value: Any, name: str, *, low: int, high: int | None = None) -> int:
    """value as an int in [low, high], refusing bools, floats and anything else."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise ValueError(f"{name}: expected {bound}, got {value}")
    return value


def check_tolerance(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number or None, got {type(value).__name__}")
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value}")
    return value
