"""vsfast's run-time configuration: its thread count (also through threadpoolctl) and
:func:`show_config`, the report to paste into a bug report."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

from . import _backends, _core
from ._arrays import check_int

__all__ = ["get_num_threads", "set_num_threads", "show_config"]


def get_num_threads() -> int:
    """Threads vsfast's kernels use (default: the CPUs OpenBLAS detects, or VSFAST_NUM_THREADS)."""
    return _core.get_num_threads()


def set_num_threads(threads: int) -> None:
    """Set the threads vsfast's kernels use. Results are bitwise the same on any thread count.
    ``threadpoolctl.threadpool_limits(n, user_api="vsfast")`` sets the same count."""
    _core.set_num_threads(check_int(threads, "threads", low=1))


def _register_with_threadpoolctl() -> None:
    """Make vsfast's pool one of the thread pools threadpoolctl lists and limits: it finds the
    compiled core among the loaded libraries by its file name and its two exported C symbols."""
    try:
        import threadpoolctl
    except ImportError:  # an optional integration: nothing to register with
        return
    if not hasattr(threadpoolctl, "register"):  # before threadpoolctl 3.5
        return

    class VsfastController(threadpoolctl.LibController):
        user_api = "vsfast"
        internal_api = "vsfast"
        filename_prefixes = ("_core",)
        check_symbols = ("vsfast_get_num_threads", "vsfast_set_num_threads")

        def get_num_threads(self) -> int:
            return self.dynlib.vsfast_get_num_threads()

        def set_num_threads(self, num_threads: int) -> None:
            self.dynlib.vsfast_set_num_threads(int(num_threads))

        def get_version(self) -> str:
            return _version()

    threadpoolctl.register(VsfastController)


def _version() -> str:
    from . import __version__

    return __version__


def _distribution(name: str) -> str | None:
    """An installed distribution's version, without importing it (torch takes seconds)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_state() -> dict[str, Any]:
    gpu = _backends.gpu
    module = gpu.available_module()
    if module is None:
        return {"built": False, "why": gpu.IMPORT_ERROR}
    state = {"built": True, "precision": gpu.get_gpu_precision(), **module.build_info()}
    if not state["device_count"]:
        state["why"] = module.unavailable_reason()
    return state


def config() -> dict[str, Any]:
    """What :func:`show_config` prints, as a dict."""
    return {
        "vsfast": _version(),
        "python": f"{sys.version.split()[0]} ({platform.platform()})",
        "dependencies": {name: _distribution(name) for name in ("numpy", "scipy-openblas32", "torch", "cupy-cuda13x",
                                                                "threadpoolctl")},
        "threads": get_num_threads(),
        "core": _core.build_info(),
        "cuda": _cuda_state(),
    }


def _lines(value: Any, indent: str = "") -> list[str]:
    if not isinstance(value, dict):
        return [f"{value}"]
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines += [f"{indent}{key}:"] + _lines(item, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {'not installed' if item is None else item}")
    return lines


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Print vsfast's configuration: versions, the compiled core's build (compiler, OpenBLAS, SIMD
    features of this CPU), its threads, and the CUDA module's state (or why it is missing).
    ``mode="dicts"`` returns it instead, as numpy.show_config does."""
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode: expected 'stdout' or 'dicts', got {mode!r}")
    info = config()
    if mode == "dicts":
        return info
    print("\n".join(_lines(info)))
    return None
