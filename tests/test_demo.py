"""`vsfast demo` end to end on the real data and shipped weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vsfast.cli import main

pytestmark = pytest.mark.skipif(not os.environ.get("VSFAST_DATA") or not Path(os.environ["VSFAST_DATA"]).is_dir(),
                                reason="needs MNIST in VSFAST_DATA (the test command sets it)")


def test_demo_writes_a_consistent_summary_and_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert str((tmp_path / "report.html").resolve()) in capsys.readouterr().out
    fcnn1, fcnn5 = summary["fcnn1"], summary["fcnn5"]
    assert fcnn1["test_accuracy"] >= 0.92 and fcnn5["test_accuracy"] >= 0.97
    assert [row["rank"] for row in fcnn5["layers"]] == [512, 256, 128, 64, 10]
    assert fcnn1["layers"][0]["nullity"] == 774
    # A 10-dimensional signal space of 784 leaves most of a digit's energy in the rejected space.
    assert 0.5 < fcnn1["layers"][0]["rejected_fraction_median"] < 1.0
    for model in (fcnn1, fcnn5):
        for inverse in model["inverse"].values():
            assert inverse["method"] == "pinv"
            assert inverse["relative_output_error_max"] < 1e-10
            assert inverse["relative_output_error_float32_model"] < 1e-4
            assert inverse["predicted"] == list(range(10))
        inv = model["inverse"]
        assert inv["class-mean"]["distance_to_class_mean"] < inv["minimum-norm"]["distance_to_class_mean"]
    assert fcnn1["inverse"]["minimum-norm"]["clamped_per_layer"] == [0]
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 12
    for name in ("fcnn1_spectra.png", "fcnn5_decomposition.png", "fcnn1_inverse_class-mean.png",
                 "fcnn5_inverse_minimum-norm.png", "fcnn5_layers.csv", "fcnn5_inverse.json"):
        assert (tmp_path / name).stat().st_size > 500
