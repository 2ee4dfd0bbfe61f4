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
- As a ``[[tool.dynamic-metadata]]`` provider (:class:`CudaRuntime`), it adds the same libraries,
  any release of that CUDA major version, to the dependencies of a wheel that links them: the
  module finds them in site-packages at run time.

Without nvcc, CMake decides: a CPU-only build with a status line, or an error where an NVIDIA GPU
is present. VSFAST_CUDA and VSFAST_CUDA_SITE are read from ``-C cmake.define.NAME=VALUE`` (pip's
``--config-settings``) or else from the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Mapping, Optional

from scikit_build_core import build as _skbuild
from scikit_build_core.build import *  # noqa: F403 -- every hook not redefined here

__all__ = list(_skbuild.__all__)

ConfigSettings = Optional[Mapping[str, Any]]

# The CUDA major versions whose cuBLAS/cuSOLVER PyPI has as cuda-toolkit extras.
_WHEEL_MAJORS = (12, 13)


def _setting(config_settings: ConfigSettings, name: str) -> str:
    """A CMake variable as the build will see it: a -C cmake.define.NAME, else the environment."""
    value = (config_settings or {}).get(f"cmake.define.{name}")
    if isinstance(value, list):  # the same key given several times: the last one counts
        value = value[-1] if value else None
    if value is None:
        value = os.environ.get(name, "")
    return str(value).strip()


def _cuda_mode(config_settings: ConfigSettings) -> str:
    mode = (_setting(config_settings, "VSFAST_CUDA") or "AUTO").upper()
    if mode not in ("AUTO", "ON", "OFF"):
        raise SystemExit(f"vsfast: VSFAST_CUDA must be AUTO, ON or OFF, got {mode!r}")
    return mode


def find_nvcc(config_settings: ConfigSettings = None) -> Optional[str]:
    """The nvcc that the build would use, or None. A named compiler that is missing is an error."""
    for named in (_setting(config_settings, "CMAKE_CUDA_COMPILER"), os.environ.get("CUDACXX", "")):
        if named:
            found = shutil.which(named)
            if found is None:
                raise SystemExit(f"vsfast: the CUDA compiler {named!r} (CMAKE_CUDA_COMPILER or CUDACXX) "
                                 "is not an executable")
            return found
    candidates = [shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(os.path.join(root, "bin", "nvcc"))
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def nvcc_version(nvcc: str) -> tuple[int, int]:
    """(major, minor) of the CUDA release that nvcc belongs to, from ``nvcc --version``."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise SystemExit(f"vsfast: {nvcc} --version failed: {err}") from None
    match = re.search(r"release (\d+)\.(\d+)", out)
    if match is None:
        raise SystemExit(f"vsfast: no CUDA release in the output of {nvcc} --version:\n{out}")
    return int(match[1]), int(match[2])


@dataclasses.dataclass(frozen=True)
class CudaPlan:
    """What a wheel build does about vsfast._cuda."""

    nvcc: Optional[str] = None  # build with this compiler; None: CMake decides (no nvcc, or OFF)
    version: Optional[tuple[int, int]] = None
    own_libraries: bool = False  # VSFAST_CUDA_SITE names the libraries: no wheels to add

    @property
    def wheels(self) -> bool:
        """Whether cuBLAS/cuSOLVER come from the cuda-toolkit wheels."""
        return (self.nvcc is not None and not self.own_libraries
                and self.version is not None and self.version[0] in _WHEEL_MAJORS)

    def build_requires(self) -> list[str]:
        if not self.wheels:
            return []
        major, minor = self.version
        return [f"cuda-toolkit[cublas,cusolver]>={major}.0,<{major}.{minor + 1}"]

    def run_requires(self) -> list[str]:
        if not self.wheels:
            return []
        return [f"cuda-toolkit[cublas,cusolver]=={self.version[0]}.*; sys_platform == 'linux'"]

    def cmake_defines(self) -> dict[str, str]:
        if self.nvcc is None:
            return {}
        return {"cmake.define.VSFAST_CUDA": "ON", "cmake.define.CMAKE_CUDA_COMPILER": self.nvcc}


def cuda_plan(config_settings: ConfigSettings = None) -> CudaPlan:
    if _cuda_mode(config_settings) == "OFF":
        return CudaPlan()
    nvcc = find_nvcc(config_settings)
    if nvcc is None:
        return CudaPlan()
    return CudaPlan(nvcc=nvcc, version=nvcc_version(nvcc),
                    own_libraries=bool(_setting(config_settings, "VSFAST_CUDA_SITE")))


def _log(plan: CudaPlan) -> None:
    if plan.nvcc is None:
        return
    major, minor = plan.version
    source = ", ".join(plan.build_requires()) or "VSFAST_CUDA_SITE or the CUDA toolkit"
    print(f"vsfast: building vsfast._cuda with nvcc {major}.{minor} ({plan.nvcc}), cuBLAS/cuSOLVER "
          f"from {source}", file=sys.stderr)


# The config settings of the hook in progress, for CudaRuntime: scikit-build-core calls the metadata
# provider from inside the hook, in this process, with the project's settings only.
_hook_settings: ConfigSettings = None


def _with_plan(config_settings: ConfigSettings) -> dict[str, Any]:
    """The config settings with the plan's CMake definitions added (a user's own definitions win)."""
    global _hook_settings
    _hook_settings = config_settings
    plan = cuda_plan(config_settings)
    _log(plan)
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
