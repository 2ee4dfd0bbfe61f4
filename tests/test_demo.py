"""`vsfast demo` end to end on the real data and shipped weights: the three networks, the paper's
accuracy table, ResNet18's first convolution, layers mapped back to pixels, inputs in the box."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from vsfast.cli import main

pytestmark = pytest.mark.skipif(not os.environ.get("VSFAST_DATA") or not Path(os.environ["VSFAST_DATA"]).is_dir(),
                                reason="needs MNIST in VSFAST_DATA (the test command sets it)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("torchvision")
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text()), (out / "report.html").read_text()


def test_demo_covers_the_three_networks(demo):
    out, summary, page = demo
    fcnn1, fcnn5, resnet = summary["fcnn1"], summary["fcnn5"], summary["resnet18"]
    assert fcnn1["test_accuracy"] >= 0.92 and fcnn5["test_accuracy"] >= 0.97 and resnet["test_accuracy"] >= 0.99
    assert [row["rank"] for row in fcnn5["layers"]] == [512, 256, 128, 64, 10]
    assert fcnn1["layers"][0]["nullity"] == 774
    # A 10-dimensional signal space of 784 leaves most of a digit's energy in the rejected space.
    assert 0.5 < fcnn1["layers"][0]["rejected_fraction_median"] < 1.0
    # ResNet18: every Linear and Conv2d layer (20 convolutions, the fc layer), conv1 split on the digits.
    assert len(resnet["layers"]) == 21 and resnet["layers"][0]["layer"] == "conv1"
    assert "rejected_fraction_median" in resnet["layers"][0]
    flagged = {row["layer"] for row in resnet["layers"] if row["condition_number"] > 10}
    assert set(resnet["ill_conditioned"]) == flagged
    assert len(resnet["conv1"]["energy_top"]) == 8 and 0 < sum(resnet["conv1"]["energy_top"]) <= 1
    assert all(0 <= a < 180 for a in resnet["conv1"]["preferred_orientation_deg"])
    # Deeper layers see less of a digit: the signal's share falls from FCNN-5's first to its last layer.
    shares = fcnn5["pixels"]["signal_energy_share"]
    assert list(shares) == ["1", "3", "5", "7", "9"]
    assert min(shares["1"]) > max(shares["9"])


def test_demo_inverts_all_three(demo):
    out, summary, _ = demo
    for name in ("fcnn1", "fcnn5"):
        for inverse in summary[name]["inverse"].values():
            assert inverse["method"] == "pinv" and inverse["box"] == [0.0, 1.0]
            assert inverse["relative_output_error_max"] < 1e-10
            assert inverse["relative_output_error_float32_model"] < 1e-4
            assert inverse["predicted"] == list(range(10))
            assert len(inverse["feasible"]) == 10
            # Exactly the targets inside the box are feasible; the others say how far outside.
            assert [v == 0 for v in inverse["box_violation"]] == inverse["feasible"]
    assert all(summary["fcnn1"]["inverse"]["class-mean"]["feasible"])
    resnet = summary["resnet18"]["inverse"]["class-mean"]
    assert resnet["method"] == "optimize" and resnet["predicted"] == list(range(10))


def test_report_holds_the_papers_table_and_the_conv_figure(demo):
    out, summary, page = demo
    assert "The three networks: test accuracy" in page
    for paper, network in (("92 %", "FCNN-1"), ("97 %", "FCNN-5"), ("99 %", "ResNet18")):
        assert re.search(rf"<td>{network}</td><td>{paper}</td><td>\d\d\.\d\d %</td>", page), network
    assert "ResNet18: the spaces of every layer" in page and "ResNet18: the first convolution, conv1" in page
    assert "ResNet18: inputs for chosen outputs" in page and "mapped back to pixels" in page
    # FCNN-1: spectra, signal basis, rejected samples, decomposition, two inversions; FCNN-5 the
    # same and its layers mapped back to pixels; ResNet18: spectra, decomposition, conv1, pixels,
    # one inversion. Every figure is embedded in the page.
    assert page.count("data:image/png;base64,") == 6 + 7 + 5
    for name in ("fcnn1_spectra.png", "fcnn5_decomposition.png", "fcnn5_pixel_layers.png", "resnet18_conv1_kernels.png",
                 "resnet18_decomposition.png", "resnet18_pixel_layers.png", "resnet18_inverse_class-mean.png",
                 "fcnn1_inverse_class-mean.png", "fcnn5_inverse_minimum-norm.png", "fcnn5_layers.csv",
                 "resnet18_layers.csv", "fcnn5_inverse.json"):
        assert (out / name).stat().st_size > 500, name
    # Every figure is embedded under a caption that says what to look at.
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == page.count("data:image/png;base64,") and all(len(c) > 60 for c in captions)
