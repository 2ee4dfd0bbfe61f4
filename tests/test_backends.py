"""The one seam: the CPU and GPU backends expose the same primitives under the same names and
signatures, the seam alone picks one, and no backend reaches up into the public layer."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import vsfast
from vsfast import _backends
from vsfast._backends import cpu, gpu

BACKENDS = Path(vsfast.__file__).parent / "_backends"


def test_the_backends_mirror_each_other():
    assert cpu.__all__, "the CPU backend lists its primitives"
    for name in cpu.__all__:
        assert name in gpu.__all__, f"the GPU backend lacks {name}"
        assert _parameters(getattr(cpu, name)) == _parameters(getattr(gpu, name)), name


def _parameters(fn) -> list[tuple]:
    """Names, kinds and defaults: what a caller relies on (annotations name each side's arrays)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found |= {f"{base}.{alias.name}" if not node.module else base for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize("module", ["__init__.py", "cpu.py", "gpu.py"])
def test_no_backend_imports_the_public_layer(module):
    imports = _imports(BACKENDS / module)
    for public in ("linalg", "analysis", "inverse", "config"):
        assert not any(i.endswith(public) for i in imports), f"{module} imports {public}: {sorted(imports)}"


def test_the_seam_picks_the_cpu_for_host_arrays():
    import torch

    assert _backends.select(A=np.ones((2, 2)), B=[[1.0]], C=torch.ones(2)) is cpu


def test_the_seam_names_a_gpu_argument_it_cannot_serve(monkeypatch):
    class DeviceArray:
        __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False), "version": 3}

    monkeypatch.setattr(gpu, "_cuda", None)
    with pytest.raises(TypeError, match="weight: got a GPU array .* without its CUDA module"):
        _backends.select(X=np.ones(2), weight=DeviceArray())


def test_public_functions_hold_no_backend_branches():
    """The public layer asks the seam (or a Spaces'/Chain's own backend), never tests for a GPU."""
    source = (Path(vsfast.__file__).parent / "linalg.py").read_text()
    assert "_cuda" not in source and "wants(" not in source
