"""vsfast: the vector-space view of neural-network layers, fast.

Every layer is a linear map between signal spaces. Its SVD gives four spaces (signal, signal
output, rejected signal, rejected signal output); inputs split into what a layer keeps and what it
rejects; pseudoinverses and inverse activations, chained backwards, compute inputs that produce
chosen outputs. The heavy work runs in a compiled core (``vsfast._core``), and for torch CUDA
tensors and CuPy arrays in its GPU twin (``vsfast._cuda``) where that was built.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .analysis import LayerAnalysis, Report, analyze
from .attribution import signal_attribution
from .config import get_num_threads, set_num_threads, show_config
from .inverse import Inversion, invert
from .linalg import (
    BoxSolution,
    Chain,
    LinAlgError,
    Projection,
    RangeWarning,
    Reconstruction,
    Solution,
    Spaces,
    SVDResult,
    pinv,
    project,
    reconstruct,
    rsvd,
    spaces,
    svd,
    svdvals,
)
from .operators import conv_spectrum, jacobian_spaces
from ._backends.gpu import cuda_available, get_gpu_precision, set_gpu_precision
from .config import _register_with_threadpoolctl

_register_with_threadpoolctl()

__all__ = [
    "BoxSolution", "Chain", "Inversion", "LayerAnalysis", "LinAlgError", "Projection", "RangeWarning",
    "Reconstruction", "Report", "SVDResult", "Solution", "Spaces", "analyze", "conv_spectrum",
    "cuda_available", "get_gpu_precision", "get_num_threads", "invert", "jacobian_spaces", "pinv", "project",
    "reconstruct", "rsvd", "set_gpu_precision", "set_num_threads", "show_config", "signal_attribution", "spaces",
    "svd", "svdvals", "__version__",
]

# Submodules that need optional extras (matplotlib; torch and pooch for the paper's MNIST
# application; Dask) load on first use (PEP 562), so that `import vsfast` needs only numpy and the core.
_LAZY_SUBMODULES = ("distributed", "mnist", "report", "viz")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
