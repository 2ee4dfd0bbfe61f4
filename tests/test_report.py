"""Figures, the self-contained report page, `vsfast analyze`, and the page as a browser shows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
from torch import nn  # noqa: E402

import vsfast  # noqa: E402
from vsfast import viz  # noqa: E402
from vsfast.cli import main  # noqa: E402
from vsfast.report import Section, write_html  # noqa: E402
from conftest import needs_mnist  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_figures_of_a_small_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 10))
    x = torch.rand(4, 1, 28, 28)
    report = vsfast.analyze(model, x)
    kernels = vsfast.analyze(model[0], conv_view="kernel")[0]
    dense = vsfast.spaces(np.random.default_rng(0).standard_normal((10, 784)))
    figures = {
        "spectra.png": viz.spectra(report),
        "basis.png": viz.signal_basis(dense),
        "rejected.png": viz.rejected_samples(dense),
        "decomposition.png": viz.decomposition(report[0].inputs.inputs, report[0].inputs.signal,
                                               report[0].inputs.residual, labels=list("abcd")),
        "kernels.png": viz.conv_kernels(model[0].weight, kernels.spaces),
    }
    for name, fig in figures.items():
        viz.save(fig, tmp_path / name)
        width, height = png_size(tmp_path / name)
        assert width > 200 and height > 100


def test_figures_leave_the_callers_backend_and_pyplot_alone(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import matplotlib
        import numpy as np

        matplotlib.use("pdf")
        from vsfast import viz

        fig = viz.image_grid(np.random.default_rng(0).random((4, 8, 8)), title="grid")
        viz.save(fig, {str(tmp_path / "grid.png")!r})
        assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules, "viz went through pyplot"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert done.returncode == 0, done.stderr
    width, height = png_size(tmp_path / "grid.png")
    assert width > 200 and height > 100


def test_page_embeds_its_figures_and_escapes_text(tmp_path):
    viz.save(viz.image_grid(np.random.default_rng(1).random((3, 8, 8))), tmp_path / "grid.png")
    section = Section("<layers>", ["a < b & c"], [{"layer": "x", "rank": 3, "condition": float("inf")}],
                      [("grid.png", "a grid")])
    page = write_html(tmp_path / "report.html", "title", [section]).read_text()
    assert page.count("data:image/png;base64,") == 1
    assert "&lt;layers&gt;" in page and "a &lt; b &amp; c" in page and "<td>inf</td>" in page
    assert not re.search(r"src=['\"](?!data:)", page), "every image is embedded"


@needs_mnist
def test_cli_analyze_writes_figures_tables_and_page(tmp_path, capsys):
    assert main(["analyze", "fcnn5", "--out", str(tmp_path), "--inputs", "50"]) == 0
    assert str((tmp_path / "report.html").resolve()) in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    layers = summary["fcnn5"]["layers"]
    assert [layer["rank"] for layer in layers] == [512, 256, 128, 64, 10]
    assert len(layers[0]["rejected_fraction"]) == 50
    for name in ("spectra", "signal_basis", "rejected", "decomposition"):
        png_size(tmp_path / f"fcnn5_{name}.png")
    assert (tmp_path / "fcnn5_layers.csv").read_text().count("\n") == 6


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["analyze", "fcnn1", "--out", str(tmp_path), "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert "vsfast analyze: error: argument --k: expected a positive integer, got 0" in err
    assert "Traceback" not in err


def chromium() -> str | None:
    return next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (Debian's chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    # A page with one figure of saturated colours among grey text: the screenshot must show them.
    torch.manual_seed(0)
    report = vsfast.analyze(nn.Sequential(nn.Linear(784, 10)))
    viz.save(viz.signal_basis(report[0].spaces, count=10), tmp_path / "basis.png")
    page = write_html(tmp_path / "report.html", "render check", [Section("basis", ["text"], report.to_rows(),
                                                                          [("basis.png", "basis")])])
    shot = tmp_path / "shot.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,900", f"--screenshot={shot}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120,
                   # A sanitizer runtime preloaded into this process is not Chromium's business.
                   env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 0.05, "the screenshot is blank"
    # The figure's diverging colour map: clearly red or clearly blue pixels, which text never has.
    coloured = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.3
    assert coloured.mean() > 0.01, "the figure does not show"
