"""Packaging: the version's one source, and the build backend's plan for the CUDA module.

The plan (backend/vsfast_cuda_plan.py) decides which nvcc builds vsfast._cuda and which
cuBLAS/cuSOLVER wheels the build and the wheel need; these tests drive it with a stand-in nvcc
that reports a chosen CUDA release.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import stat
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import vsfast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
import vsfast_cuda_plan as plan  # noqa: E402


def test_version_has_one_source():
    source = (ROOT / "vsfast" / "_version.py").read_text()
    written = re.findall(r"^__version__ = \"(.+)\"$", source, re.MULTILINE)
    assert written == [vsfast.__version__]
    assert str(Version(vsfast.__version__)) == vsfast.__version__  # a normalized PEP 440 version
    assert importlib.metadata.version("vsfast") == vsfast.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=", pyproject, re.MULTILINE), "pyproject.toml writes the version too"


@pytest.fixture
def cuda_env(monkeypatch, tmp_path):
    """No VSFAST_* or CUDA variables, no nvcc on PATH, no default toolkit: each test adds its own."""
    for name in ("VSFAST_CUDA", "VSFAST_CUDA_SITE", "CMAKE_CUDA_COMPILER", "CUDACXX", "CUDA_HOME",
                 "CUDA_PATH"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(plan, "DEFAULT_CUDA_ROOT", str(tmp_path / "no-cuda"))
    return tmp_path


def fake_nvcc(directory: Path, output: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    nvcc = directory / "nvcc"
    lines = " ".join(f"'{line}'" for line in output.splitlines())
    nvcc.write_text(f"#!/bin/sh\nprintf '%s\\n' {lines}\n")  # a shell builtin: PATH may hold nothing
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return nvcc


def release(major: int, minor: int) -> str:
    return ("nvcc: NVIDIA (R) Cuda compiler driver\n"
            f"Cuda compilation tools, release {major}.{minor}, V{major}.{minor}.88")


@pytest.mark.parametrize("major,minor", [(12, 4), (12, 9), (13, 0), (13, 2)])
def test_build_takes_the_libraries_of_nvccs_release(cuda_env, monkeypatch, major, minor):
    nvcc = fake_nvcc(cuda_env / "bin", release(major, minor))
    monkeypatch.setenv("PATH", str(nvcc.parent))
    p = plan.cuda_plan()
    assert p.nvcc == str(nvcc) and p.version == (major, minor)
    assert p.cmake_defines() == {"cmake.define.VSFAST_CUDA": "ON", "cmake.define.CMAKE_CUDA_COMPILER": str(nvcc)}
    (build,) = map(Requirement, p.build_requires())
    assert build.name == "cuda-toolkit" and build.extras == {"cublas", "cusolver"}
    # The newest release of nvcc's major version that is no newer than nvcc, and nothing else.
    assert build.specifier.contains(f"{major}.0.0") and build.specifier.contains(f"{major}.{minor}.9")
    assert not build.specifier.contains(f"{major}.{minor + 1}.0")
    assert not build.specifier.contains(f"{major - 1}.9.0")
    # At run time, the wheels that hold the libraries the module links: any release with their sonames
    # (libcublas.so.12/13, libcusolver.so.11/12), so that torch's exact pins satisfy them.
    cublas, cusolver = map(Requirement, p.run_requires())
    suffix = "-cu12" if major == 12 else ""
    assert (cublas.name, cusolver.name) == (f"nvidia-cublas{suffix}", f"nvidia-cusolver{suffix}")
    for req, lib_major in ((cublas, major), (cusolver, major - 1)):  # the wheels follow the sonames
        assert req.specifier.contains(f"{lib_major}.0.0.1") and req.specifier.contains(f"{lib_major}.99.1")
        assert not req.specifier.contains(f"{lib_major + 1}.0.0") and not req.specifier.contains(f"{lib_major - 1}.9.9")
        assert req.marker.evaluate({"sys_platform": "linux"}) and not req.marker.evaluate({"sys_platform": "win32"})


def test_the_cuda_extra_names_the_cuda_13_wheels():
    extra = {"extra": "cuda", "sys_platform": "linux"}
    declared = [Requirement(r) for r in importlib.metadata.requires("vsfast")]
    cuda = sorted(str(r.name) + str(r.specifier) for r in declared if r.marker and r.marker.evaluate(extra)
                  and not r.marker.evaluate({**extra, "extra": "none"}))
    planned = sorted(str(r.name) + str(r.specifier) for r in map(Requirement, plan.CudaPlan(
        nvcc="nvcc", version=(13, 0)).run_requires()))
    assert cuda == planned


def test_where_nvcc_is_looked_for(cuda_env, monkeypatch):
    assert plan.find_nvcc() is None
    home = fake_nvcc(cuda_env / "home" / "bin", release(13, 0))
    monkeypatch.setenv("CUDA_HOME", str(home.parent.parent))
    assert plan.find_nvcc() == str(home)
    on_path = fake_nvcc(cuda_env / "path", release(13, 0))
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert plan.find_nvcc() == str(on_path)  # PATH before CUDA_HOME
    named = fake_nvcc(cuda_env / "named", release(12, 8))
    monkeypatch.setenv("CUDACXX", str(named))
    assert plan.find_nvcc() == str(named)  # CUDACXX before PATH
    chosen = fake_nvcc(cuda_env / "chosen", release(12, 6))
    settings = {"cmake.define.CMAKE_CUDA_COMPILER": str(chosen)}
    assert plan.find_nvcc(settings) == str(chosen)  # the build's own compiler before all
    assert plan.cuda_plan(settings).version == (12, 6)


def test_default_toolkit_is_found(cuda_env, monkeypatch):
    nvcc = fake_nvcc(cuda_env / "toolkit" / "bin", release(13, 0))
    monkeypatch.setattr(plan, "DEFAULT_CUDA_ROOT", str(nvcc.parent.parent))
    assert plan.find_nvcc() == str(nvcc)


def test_no_nvcc_leaves_cmake_to_decide(cuda_env):
    p = plan.cuda_plan()
    assert p == plan.CudaPlan() and p.build_requires() == [] and p.run_requires() == []
    assert p.cmake_defines() == {}


def test_off_builds_no_cuda_module_whatever_nvcc_there_is(cuda_env, monkeypatch):
    nvcc = fake_nvcc(cuda_env / "bin", release(13, 0))
    monkeypatch.setenv("PATH", str(nvcc.parent))
    monkeypatch.setenv("VSFAST_CUDA", "off")
    assert plan.cuda_plan() == plan.CudaPlan()
    # A config setting overrides the environment, both ways.
    assert plan.cuda_plan({"cmake.define.VSFAST_CUDA": "ON"}).nvcc == str(nvcc)
    monkeypatch.setenv("VSFAST_CUDA", "ON")
    assert plan.cuda_plan({"cmake.define.VSFAST_CUDA": ["AUTO", "OFF"]}) == plan.CudaPlan()


def test_cuda_site_replaces_the_wheels(cuda_env, monkeypatch):
    nvcc = fake_nvcc(cuda_env / "bin", release(13, 0))
    monkeypatch.setenv("PATH", str(nvcc.parent))
    monkeypatch.setenv("VSFAST_CUDA_SITE", str(cuda_env / "site-packages"))
    p = plan.cuda_plan()
    assert p.nvcc == str(nvcc) and p.build_requires() == [] and p.run_requires() == []
    assert p.cmake_defines()["cmake.define.VSFAST_CUDA"] == "ON"


def test_a_release_without_wheels_builds_against_the_toolkit(cuda_env, monkeypatch):
    nvcc = fake_nvcc(cuda_env / "bin", release(11, 8))
    monkeypatch.setenv("PATH", str(nvcc.parent))
    p = plan.cuda_plan()
    assert p.version == (11, 8) and p.build_requires() == [] and p.run_requires() == []
    assert p.cmake_defines()["cmake.define.VSFAST_CUDA"] == "ON"


def test_bad_settings_say_what_was_expected(cuda_env, monkeypatch):
    monkeypatch.setenv("VSFAST_CUDA", "yes")
    with pytest.raises(SystemExit, match="VSFAST_CUDA must be AUTO, ON or OFF, got 'YES'"):
        plan.cuda_plan()
    monkeypatch.delenv("VSFAST_CUDA")
    monkeypatch.setenv("CUDACXX", str(cuda_env / "missing" / "nvcc"))
    with pytest.raises(SystemExit, match="is not an executable"):
        plan.cuda_plan()
    monkeypatch.setenv("CUDACXX", str(fake_nvcc(cuda_env / "odd", "nvcc: no release here")))
    with pytest.raises(SystemExit, match="no CUDA release in the output"):
        plan.cuda_plan()


@pytest.mark.skipif(importlib.util.find_spec("scikit_build_core") is None,
                    reason="the build backend needs scikit-build-core (a build requirement)")
def test_a_cuda_wheel_depends_on_its_libraries_and_an_sdist_leaves_them_open(cuda_env, monkeypatch):
    import vsfast_backend

    nvcc = fake_nvcc(cuda_env / "bin", release(13, 0))
    monkeypatch.setenv("PATH", str(nvcc.parent))
    runtime = vsfast_backend.CudaRuntime()
    runtime.build_state("sdist")
    assert runtime.dynamic_metadata({}, {}) == {"dependencies": []}
    assert runtime.dynamic_wheel({}) == {"dependencies": True}
    for state in ("wheel", "metadata_wheel", "editable"):
        runtime.build_state(state)
        assert runtime.dynamic_metadata({}, {}) == {"dependencies": plan.cuda_plan().run_requires()}
    monkeypatch.setenv("VSFAST_CUDA", "OFF")
    assert runtime.dynamic_metadata({}, {}) == {"dependencies": []}
