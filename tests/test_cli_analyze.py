"""``vsfast analyze TARGET`` on checkpoints, torchvision models and a user's own factory, its
files, its one-line errors (exit 1; 2 for usage) with nothing written, ``vsfast bench``, and the
command without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vsfast import cli

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    tensors = {"layer.0.weight": torch.randn(24, 16), "layer.0.bias": torch.randn(24),
               "conv.weight": torch.randn(6, 2, 3, 3), "layer.1.weight": torch.randn(8, 24)}
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(tensors, path)
    return path


def analyze(*args: str) -> int:
    return cli.main(["analyze", *args])


def test_checkpoint_to_files(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    assert analyze(str(checkpoint), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "3 matrices of" in printed and f"report: {(out / 'report.html').resolve()}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["layers.csv", "layers.json", "report.html", "spectra_1.png"]
    data = json.loads((out / "layers.json").read_text())
    assert [layer["layer"] for layer in data["layers"]] == ["conv.weight", "layer.0.weight", "layer.1.weight"]
    assert data["skipped"] == [{"name": "layer.0.bias", "reason": "1-D"}]
    header = (out / "layers.csv").read_text().splitlines()[0].split(",")
    assert {"sigma_max", "frobenius_norm", "stable_rank", "effective_rank", "alpha"} <= set(header)
    page = (out / "report.html").read_text()
    assert "stable_rank" in page and "effective_rank" in page and "data:image/png;base64," in page


def test_torchvision_and_factory_targets(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    out = tmp_path / "tv"
    assert analyze("torchvision:squeezenet1_1", "--out", str(out), "--k", "8") == 0
    rows = json.loads((out / "layers.json").read_text())["layers"]
    assert len(rows) == 26 and all(row["k"] <= 8 for row in rows)

    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        import torch
        def build():
            return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    np.save(tmp_path / "inputs.npy", np.random.default_rng(0).random((10, 5)).astype(np.float32))
    assert analyze("mynet:build", "--out", "mine", "--data", "inputs.npy", "--batch-size", "3") == 0
    layers = json.loads((tmp_path / "mine" / "layers.json").read_text())["layers"]
    assert [layer["layer"] for layer in layers] == ["0", "2"] and len(layers[0]["rejected_fraction"]) == 10

    weights = tmp_path / "w.safetensors"
    torch.manual_seed(3)
    state = {"0.weight": torch.ones(7, 5), "0.bias": torch.zeros(7), "2.weight": torch.randn(3, 7),
             "2.bias": torch.zeros(3)}
    safetensors_torch.save_file(state, weights)
    assert analyze("mynet:build", "--weights", str(weights), "--out", "loaded") == 0
    layers = json.loads((tmp_path / "loaded" / "layers.json").read_text())["layers"]
    assert layers[0]["rank"] == 1 and layers[0]["sigma_max"] == pytest.approx(np.sqrt(35), rel=1e-6)
    capsys.readouterr()


def run(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsfast", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def broken_inputs(tmp_path: Path, checkpoint: Path) -> list[tuple[list[str], str]]:
    """(arguments, the one line expected on stderr) for every kind of bad input."""
    raw = checkpoint.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-3])
    (tmp_path / "corrupt.safetensors").write_bytes(raw[:8] + b"[" + raw[9:])
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    shards = tmp_path / "shards"
    shards.mkdir()
    safetensors_torch.save_file({"a": torch.ones(2, 2)}, shards / "one.safetensors")
    (shards / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}))
    (tmp_path / "raising.py").write_text("raise ZeroDivisionError('at import')\n")
    return [
        (["cut.safetensors"], "cut.safetensors: truncated: tensor"),
        (["corrupt.safetensors"], "corrupt.safetensors: corrupt safetensors header: not JSON"),
        (["model.pt"], "model.pt: not a state dict: torch.load(weights_only=True) refuses it "
                       "(it pickles torch.nn.modules.linear.Linear)"),
        (["shards"], f"{Path('shards') / 'model.safetensors.index.json'}: shard two.safetensors is missing"),
        (["torchvision:vgg99"], "torchvision:vgg99: no such torchvision model"),
        (["raising:build"], "raising:build: importing raising failed (ZeroDivisionError: at import)"),
        (["missing/model.safetensors"], "missing/model.safetensors: no such file or directory"),
    ]


def test_bad_input_is_one_line_exit_1_and_nothing_written(tmp_path, checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    for args, message in broken_inputs(tmp_path, checkpoint):
        assert analyze(*args, "--out", "out") == 1, args
        out, err = capsys.readouterr()
        assert err.startswith(f"vsfast: error: {message}") and err.count("\n") == 1, (args, err)
        assert out == ""
        assert not (tmp_path / "out").exists(), args


def test_bench_shapes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "48x96", "2x32x40", "--k", "8", "--rounds", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random 48x96" in printed and f"results: {out.resolve()}" in printed
    data = json.loads(out.read_text())
    assert data["command"] == f"vsfast bench 48x96 2x32x40 --k 8 --rounds 1 --out {out}"
    assert data["machine"]["cpu"] and data["machine"]["usable_cores"] >= 1
    first = data["results"][0]
    assert first["shape"] == [48, 96] and first["k"] == 8
    assert first["speedup_vs_svd_lowrank"] == pytest.approx(first["torch_svd_lowrank_s"] / first["vsfast_rsvd_s"])
    assert 0 <= first["vsfast_rsvd_error"] < 1 and "speedup_vs_linalg_svd" in first
    assert cli.main(["bench", "48xx96", "--out", str(out)]) == 1


def test_without_torch_or_matplotlib(tmp_path, checkpoint):
    """torch and matplotlib hidden from the process (vsfast's own dependencies only): a
    safetensors checkpoint is still analysed, without figures; what needs torch says so in one
    line."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        sys.modules["torch"] = sys.modules["matplotlib"] = None  # importing them raises ImportError
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    done = run("analyze", str(checkpoint), "--out", "out", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "figures left out: they need matplotlib (pip install vsfast[viz])" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["layers.csv", "layers.json", "report.html"]
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "w.pt")
    for target, what in [("w.pt", "reading a torch checkpoint (w.pt)"),
                         ("torchvision:resnet18", "loading torchvision:resnet18")]:
        done = run("analyze", target, "--out", "none", cwd=tmp_path, env=env)
        assert done.returncode == 1
        assert done.stderr == f"vsfast: error: {what} needs torch: pip install vsfast[torch]\n"
