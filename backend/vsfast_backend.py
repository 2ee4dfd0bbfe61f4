"""vsfast's build backend: scikit-build-core, plus the CUDA libraries that a CUDA build needs.

pip builds a package in an isolated environment that holds only its build requirements. Where nvcc
exists, vsfast._cuda also needs cuBLAS and cuSOLVER, which the CUDA toolkit often lacks (a
compiler-only install) and which torch's nvidia wheels carry but the isolated build cannot see.
scikit-build-core's static build requirements cannot depend on whether nvcc exists, so this module
wraps ``scikit_build_core.build``:

- Where VSFAST_CUDA is not OFF and nvcc is found (``CMAKE_CUDA_COMPILER``, ``$CUDACXX``, ``PATH``,
  ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, ``/usr/local/cuda/bin``), building a wheel also requires
  ``cuda-toolkit[cublas,cusolver]`` of nvcc's CUDA version (its newest release no newer than nvcc),
  which cmake/cuda.cmake finds in the build environment; CMake runs with that nvcc and with
  VSFAST_CUDA=ON, so a CUDA module that fails to build fails the build instead of leaving a
  CPU-only wheel. VSFAST_CUDA_SITE (a site-packages holding the libraries) replaces that
  requirement.
- As a ``[[tool.dynamic-metadata]]`` provider (:class:`CudaRuntime`), it adds the wheels that hold
  those libraries (nvidia-cublas and nvidia-cusolver of that CUDA major version) to the
  dependencies of a wheel that links them: the module finds them in site-packages at run time.

Without nvcc, CMake decides: a CPU-only build with a status line, or an error where an NVIDIA GPU
is present. VSFAST_CUDA and VSFAST_CUDA_SITE are read from ``-C cmake.define.NAME=VALUE`` (pip's
``--config-settings``) or else from the environment.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from scikit_build_core import build as _skbuild
from scikit_build_core.build import *  # noqa: F403 -- every hook not redefined here

from vsfast_cuda_plan import ConfigSettings, cuda_plan, log

__all__ = list(_skbuild.__all__)

# The config settings of the hook in progress, for CudaRuntime: scikit-build-core calls the metadata
# provider from inside the hook, in this process, with the project's settings only.
_hook_settings: ConfigSettings = None


def _with_plan(config_settings: ConfigSettings) -> dict[str, Any]:
    """The config settings with the plan's CMake definitions added (a user's own definitions win)."""
    global _hook_settings
    _hook_settings = config_settings
    plan = cuda_plan(config_settings)
    log(plan)
    return {**plan.cmake_defines(), **(config_settings or {})}


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    return [*_skbuild.get_requires_for_build_wheel(config_settings),
            *cuda_plan(config_settings).build_requires()]


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> list[str]:
    return [*_skbuild.get_requires_for_build_editable(config_settings),
            *cuda_plan(config_settings).build_requires()]


def build_wheel(wheel_directory: str, config_settings: ConfigSettings = None,
                metadata_directory: Optional[str] = None) -> str:
    return _skbuild.build_wheel(wheel_directory, _with_plan(config_settings), metadata_directory)


def build_editable(wheel_directory: str, config_settings: ConfigSettings = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _skbuild.build_editable(wheel_directory, _with_plan(config_settings), metadata_directory)


if "prepare_metadata_for_build_wheel" in __all__:

    def prepare_metadata_for_build_wheel(metadata_directory: str,
                                         config_settings: ConfigSettings = None) -> str:
        return _skbuild.prepare_metadata_for_build_wheel(metadata_directory, _with_plan(config_settings))

    def prepare_metadata_for_build_editable(metadata_directory: str,
                                            config_settings: ConfigSettings = None) -> str:
        return _skbuild.prepare_metadata_for_build_editable(metadata_directory,
                                                            _with_plan(config_settings))


class CudaRuntime:
    """Dynamic-metadata provider: a wheel holding vsfast._cuda depends on the libraries it links."""

    def __init__(self) -> None:
        self._state = "wheel"

    def build_state(self, build_state: str) -> None:
        self._state = build_state

    def dynamic_metadata(self, settings: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
        if settings:
            raise ValueError(f"vsfast_backend:CudaRuntime takes no settings, got {sorted(settings)}")
        if self._state == "sdist":  # an sdist builds anywhere: its wheels decide
            return {"dependencies": []}
        return {"dependencies": cuda_plan(_hook_settings).run_requires()}

    def dynamic_wheel(self, settings: Mapping[str, Any]) -> dict[str, bool]:
        """The sdist marks its dependencies dynamic: a wheel built from it may add the CUDA ones."""
        return {"dependencies": True}
