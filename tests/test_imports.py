"""The package's layout: the toolkit never imports the paper's MNIST application (vsfast.mnist) or
torch, the subpackages that need extras load on first use, and the library configures no logging."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def python(code: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_toolkit_modules_import_neither_the_application_nor_torch():
    done = python("""
        import importlib, pkgutil, sys
        import vsfast

        assert "vsfast.mnist" not in sys.modules and "torch" not in sys.modules, "import vsfast"
        imported = []
        for module in pkgutil.iter_modules(vsfast.__path__):
            if module.name in ("mnist", "__main__"):
                continue
            try:
                importlib.import_module(f"vsfast.{module.name}")
            except ModuleNotFoundError as exc:  # a module of an optional extra that is not installed
                assert not exc.name.startswith("vsfast"), exc
                continue
            imported.append(module.name)
            for forbidden in ("vsfast.mnist", "torch"):
                assert forbidden not in sys.modules, f"vsfast.{module.name} imports {forbidden}"
        print(" ".join(imported))
    """)
    imported = done.stdout.split()
    assert {"linalg", "analysis", "inverse", "nn", "viz", "report", "cli"} <= set(imported)


def test_toolkit_sources_import_the_application_nowhere():
    """Also inside functions, which importing the modules does not run."""
    import vsfast

    pattern = re.compile(r"^\s*(from\s+(\.|vsfast)\s+import\s+.*\bmnist\b|from\s+(\.|vsfast\.)mnist\b|"
                         r"import\s+vsfast\.mnist\b)", re.MULTILINE)
    for path in Path(vsfast.__file__).parent.glob("*.py"):
        if path.name == "cli.py":  # the command runs the application's jobs
            continue
        found = pattern.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.name} imports the application: {found.group(0).strip()}"


def test_subpackages_load_on_first_use():
    pytest.importorskip("torch")
    python("""
        import sys
        import vsfast

        assert {"mnist", "viz", "report"} <= set(dir(vsfast))
        assert vsfast.mnist.load.__module__ == "vsfast.mnist.data"
        assert "torch" not in sys.modules, "vsfast.mnist and its data need numpy only"
        assert vsfast.mnist.models.load("fcnn1").card["model"] == "fcnn1"
        assert "torch" in sys.modules
        assert vsfast.viz.image_grid and vsfast.report.write_html and vsfast.mnist.report.analyze_model
        for module, name in ((vsfast, "nope"), (vsfast.mnist, "nope")):
            try:
                getattr(module, name)
            except AttributeError as exc:
                assert f"has no attribute 'nope'" in str(exc)
            else:
                raise AssertionError(f"{module.__name__}.nope")
    """)


def test_the_library_configures_no_logging():
    python("""
        import logging
        import vsfast, vsfast.mnist, vsfast.mnist.data, vsfast.viz, vsfast.report, vsfast.cli

        assert logging.getLogger().handlers == [], "the root logger"
        assert logging.getLogger("vsfast").handlers == [], "the vsfast logger"
    """)
