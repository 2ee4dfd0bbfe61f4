"""Checks of scalar arguments and the reading of data arguments, shared by every public module
(the conversion of array operands belongs to the backends, :mod:`vsfast._backends`)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch_tensor_type():
    torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
    return torch.Tensor if torch is not None else None


def is_tensor(x: Any) -> bool:
    tensor = _torch_tensor_type()
    return tensor is not None and isinstance(x, tensor)


def values(x: Any) -> np.ndarray:
    """x's values as a numpy array, whatever their dtype: array-likes as they are, tensors
    detached and moved to the CPU. For arguments that are data, not operands of the core."""
    if is_tensor(x) and x.device.type == "meta":
        raise TypeError("expected data, got a tensor on the meta device (shapes only, no values)")
    return np.asarray(x.detach().cpu() if is_tensor(x) else x)


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
