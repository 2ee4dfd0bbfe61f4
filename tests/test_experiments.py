"""The experiment scripts of docs/experiments.md, at their reduced size: they run, write their
section and figure where told, and what they report holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_mnist

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def run(script: str, docs: Path) -> str:
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--quick", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_conv_operator(tmp_path):
    out = run("conv_operator.py", tmp_path)
    written = (tmp_path / "experiments.md").read_text()
    assert "<!-- conv_operator.py begin -->" in written and "`layer4.1.conv2`" in written
    assert (tmp_path / "figures" / "conv_operator.png").stat().st_size > 10_000
    # the norm bound holds in every layer, and on a 1 x 1 feature map a 3 x 3 kernel's centre is
    # all the operator reads (1 tap in 9)
    assert "within it in every layer: True" in out
    row = next(line for line in written.splitlines() if line.startswith("| `layer4.1.conv2`"))
    assert "| 1×1 | 11% |" in row


@needs_mnist
def test_residual_blocks(tmp_path):
    run("residual_blocks.py", tmp_path)
    written = (tmp_path / "experiments.md").read_text()
    assert (tmp_path / "figures" / "residual_blocks.png").stat().st_size > 10_000
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in written.splitlines() if line.startswith("| `layer")}
    assert set(rows) == {"`layer3.1`", "`layer4.0`", "`layer4.1`"}
    # an identity skip path: the block's Jacobian D (I + J_F) keeps more than its branch J_F alone
    for block in ("`layer3.1`", "`layer4.1`"):
        rank_block, rank_branch = (float(rows[block][i].split()[0]) for i in (2, 3))
        assert rank_block > rank_branch


def test_stability(tmp_path):
    run("stability.py", tmp_path)
    written = (tmp_path / "experiments.md").read_text()
    assert (tmp_path / "figures" / "stability.png").stat().st_size > 10_000
    rows = [line for line in written.splitlines() if line.startswith("| 1e+")]
    assert len(rows) == 6  # 3 condition numbers, 2 kinds of layer
    assert all(row.rstrip(" |").endswith("yes") for row in rows), "every angle within Wedin's bound"


@needs_mnist
def test_feature_importance(tmp_path):
    run("feature_importance.py", tmp_path)
    written = (tmp_path / "experiments.md").read_text()
    assert (tmp_path / "figures" / "feature_importance.png").stat().st_size > 10_000
    area = {row.split("|")[2].strip(): float(row.split("|")[-2]) for row in written.splitlines()
            if row.startswith("| fcnn5 |")}
    # both attributions beat random removal by far
    assert max(area["signal attribution"], area["gradient × input"]) < area["random"] / 2


@needs_mnist
def test_activations(tmp_path):
    run("activations.py", tmp_path)
    written = (tmp_path / "experiments.md").read_text()
    assert (tmp_path / "figures" / "activations.png").stat().st_size > 10_000
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in written.splitlines()
            if row.startswith(("| SELU", "| leaky", "| tanh", "| ReLU"))}
    for name in ("SELU", "leaky ReLU", "tanh"):  # every target reached through the chain, inside the box
        assert rows[name][2] == "pinv" and rows[name][3] == "100%" and float(rows[name][4]) <= 1e-4
    assert rows["ReLU"][2] == "optimize"
