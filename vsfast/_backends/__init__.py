"""The one seam between vsfast's public functions and the code that computes.

Two backends expose the same primitives under the same names (see :mod:`.cpu` for the list):
``cpu`` serves numpy arrays, array-likes and CPU torch tensors through ``vsfast._core``; ``gpu``
serves torch CUDA tensors and CuPy arrays through ``vsfast._cuda``. :func:`select` is the only
place that decides which one a call goes to. Neither backend imports :mod:`vsfast.linalg`: the
public layer validates, the backends convert and compute.
"""

from __future__ import annotations

from typing import Any

from . import cpu, gpu

__all__ = ["cpu", "gpu", "select"]


def select(**arguments: Any):
    """The backend for a call with these (named) array arguments: the GPU one as soon as one of
    them lives on a GPU, else the CPU one. A GPU argument without a usable CUDA module is a
    TypeError naming it and saying why the module is missing."""
    for name, value in arguments.items():
        if gpu.is_gpu(value):
            if gpu.available_module() is None:
                raise TypeError(f"{name}: got {gpu.describe(value)}, but vsfast was built without its CUDA module "
                                f"(vsfast._cuda: {gpu.IMPORT_ERROR}); move it to the CPU first")
            return gpu
    return cpu
