"""vsfast: the vector-space view of neural-network layers, fast.

Every layer is a linear map between signal spaces. Its SVD gives four spaces (signal, signal
output, rejected signal, rejected signal output); inputs split into what a layer keeps and what it
rejects; pseudoinverses and inverse activations, chained backwards, compute inputs that produce
chosen outputs. The heavy work runs in a compiled core (``vsfast._core``), and for torch CUDA
tensors and CuPy arrays in its GPU twin (``vsfast._cuda``) where that was built.
"""

from .analysis import LayerAnalysis, Report, analyze
from .inverse import Inversion, invert
from .linalg import (
    Chain,
    LinAlgError,
    RangeWarning,
    Reconstruction,
    Solution,
    Spaces,
    get_num_threads,
    pinv,
    project,
    reconstruct,
    rsvd,
    set_num_threads,
    spaces,
    svd,
)
from ._gpu import cuda_available, get_gpu_precision, set_gpu_precision

from ._version import __version__

__all__ = [
    "Chain", "Inversion", "LayerAnalysis", "Report", "analyze", "invert", "LinAlgError", "RangeWarning", "Reconstruction", "Solution", "Spaces",
    "get_num_threads", "pinv", "project", "reconstruct", "rsvd", "set_num_threads", "spaces", "svd",
]
__all__ += ["cuda_available", "get_gpu_precision", "set_gpu_precision"]
