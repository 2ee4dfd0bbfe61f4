"""What a wheel build does about vsfast._cuda: the nvcc to use and the cuBLAS/cuSOLVER wheels.

Used by the build backend (vsfast_backend.py); standard library only, so that the tests import it
without the build requirements.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Mapping, Optional

ConfigSettings = Optional[Mapping[str, Any]]

# Per CUDA major version whose cuBLAS/cuSOLVER PyPI has (as cuda-toolkit extras, for the build) and
# whose wheels' layout and library names cmake/cuda.cmake knows: the wheels that hold the libraries
# vsfast._cuda loads, libcublas.so.N and libcusolver.so.M, any release with those sonames. Run-time
# requirements name these wheels rather than cuda-toolkit: torch pins an exact cuda-toolkit, and a
# range over cuda-toolkit beside it made pip backtrack torch to a build without CUDA, while ranges
# over these wheels resolve to the releases torch's pin chose (pip 23.2 and 26.3, torch 2.14).
RUNTIME_WHEELS = {
    12: ("nvidia-cublas-cu12>=12,<13", "nvidia-cusolver-cu12>=11,<12"),
    13: ("nvidia-cublas>=13,<14", "nvidia-cusolver>=12,<13"),
}
# Where a CUDA toolkit lives when neither PATH nor CUDA_HOME/CUDA_PATH says.
DEFAULT_CUDA_ROOT = "/usr/local/cuda"


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
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), DEFAULT_CUDA_ROOT):
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
                and self.version is not None and self.version[0] in RUNTIME_WHEELS)

    def build_requires(self) -> list[str]:
        if not self.wheels:
            return []
        major, minor = self.version
        return [f"cuda-toolkit[cublas,cusolver]>={major}.0,<{major}.{minor + 1}"]

    def run_requires(self) -> list[str]:
        if not self.wheels:
            return []
        return [f"{wheel}; sys_platform == 'linux'" for wheel in RUNTIME_WHEELS[self.version[0]]]

    def cmake_defines(self) -> dict[str, str]:
        if self.nvcc is None:
            return {}
        return {"cmake.define.VSFAST_CUDA": "ON", "cmake.define.CMAKE_CUDA_COMPILER": self.nvcc}


def cuda_plan(config_settings: ConfigSettings = None) -> CudaPlan:
    """The plan for these config settings and this environment (VSFAST_CUDA, nvcc, VSFAST_CUDA_SITE)."""
    if _cuda_mode(config_settings) == "OFF":
        return CudaPlan()
    nvcc = find_nvcc(config_settings)
    if nvcc is None:
        return CudaPlan()
    return CudaPlan(nvcc=nvcc, version=nvcc_version(nvcc),
                    own_libraries=bool(_setting(config_settings, "VSFAST_CUDA_SITE")))


def log(plan: CudaPlan) -> None:
    """One line in the build's log (pip -v) saying how vsfast._cuda is built."""
    if plan.nvcc is None:
        return
    major, minor = plan.version
    source = ", ".join(plan.build_requires()) or "VSFAST_CUDA_SITE or the CUDA toolkit"
    print(f"vsfast: building vsfast._cuda with nvcc {major}.{minor} ({plan.nvcc}), cuBLAS/cuSOLVER "
          f"from {source}", file=sys.stderr)
