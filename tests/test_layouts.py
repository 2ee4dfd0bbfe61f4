"""Checkpoints as the libraries themselves write them, analysed: a transformers model saved in
shards by ``save_pretrained``, a torchvision model's state dict saved by ``torch.save``, a file
written by ``safetensors.torch.save_file``. Every tensor of two or more dimensions is reported,
its spectral norm within 1e-4 of float64 numpy's; the others are listed as skipped."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors import safe_open  # noqa: E402

import vsfast  # noqa: E402
from vsfast.analysis import analyze_tensor, matrix_views  # noqa: E402
from vsfast.checkpoint import list_tensors  # noqa: E402


def spectral_norm(t) -> float:
    return float(np.linalg.norm(np.asarray(t, dtype=np.float64), 2))


def check_every_tensor(report, tensors: dict[str, np.ndarray]) -> None:
    """Each >= 2-D float tensor is in the report as the matrices its rules give, with sigma_max
    within 1e-4 of float64 numpy's; every other tensor is among the skipped."""
    skipped = dict(report.skipped)
    for name, value in tensors.items():
        rule = matrix_views(name, value.shape)
        if value.ndim < 2 or value.dtype.kind != "f" or isinstance(rule, str):
            assert name in skipped, name
            continue
        for mv in rule:
            expected = spectral_norm(mv.take(value))
            assert report[mv.name].shape == mv.shape == mv.take(value).shape
            assert report[mv.name].sigma_max == pytest.approx(expected, rel=1e-4, abs=1e-30), mv.name
    assert len(report) + len(skipped) >= len(tensors)


def test_transformers_sharded_save_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=97, max_position_embeddings=24)
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()

    tensors = {}
    for shard in shards:  # what the files hold, read by the safetensors library
        with safe_open(shard, framework="np") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    assert {info.name for info in list_tensors(tmp_path)} == tensors.keys()
    report = vsfast.analyze(tmp_path)
    check_every_tensor(report, tensors)
    assert any(layer.name.endswith("attention.self.query.weight") for layer in report)
    assert [name for name, reason in report.skipped if reason == "1-D"]

    one = next(layer for layer in report if layer.name.endswith("intermediate.dense.weight"))
    (alone,) = analyze_tensor(tmp_path, one.name)
    np.testing.assert_array_equal(alone.singular_values, one.singular_values)
    assert alone.metrics == one.metrics


def test_torchvision_state_dict_saved_by_torch(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small()  # depthwise (C, 1, 3, 3) and 1x1 convolutions
    state = model.state_dict()
    torch.save(state, tmp_path / "mobilenet.pth")
    report = vsfast.analyze(tmp_path / "mobilenet.pth")
    tensors = {name: t.numpy() for name, t in state.items()}
    check_every_tensor(report, tensors)
    assert report["features.0.0.weight"].kind == "conv2d" and report["features.0.0.weight"].shape == (16, 27)
    assert dict(report.skipped)["features.0.1.num_batches_tracked"].startswith("a scalar")


def test_safetensors_save_file_in_every_float_dtype(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    tensors = {"f32": torch.randn(40, 30), "f64": torch.randn(20, 50, dtype=torch.float64),
               "f16": torch.randn(33, 17).half(), "bf16": torch.randn(25, 60).to(torch.bfloat16),
               "conv": torch.randn(8, 3, 5, 5), "bias": torch.randn(30), "steps": torch.tensor(3),
               "ids": torch.arange(12).reshape(3, 4)}
    save_file(tensors, tmp_path / "mixed.safetensors")
    report = vsfast.analyze(tmp_path / "mixed.safetensors")
    check_every_tensor(report, {name: t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
                                for name, t in tensors.items()})
    assert report["f64"].singular_values.dtype == np.float64 and report["bf16"].singular_values.dtype == np.float32
    assert dict(report.skipped)["ids"] == "dtype int64, not a floating-point weight"
    assert report.to_rows()[0].keys() >= {"sigma_max", "frobenius_norm", "stable_rank", "effective_rank", "alpha"}


def test_attention_in_a_checkpoint_is_split_into_query_key_value(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    layer = torch.nn.TransformerEncoderLayer(24, 4, dim_feedforward=48)
    save_file(layer.state_dict(), tmp_path / "enc.safetensors")
    report = vsfast.analyze(tmp_path / "enc.safetensors")
    w = layer.self_attn.in_proj_weight.detach().numpy()
    for i, part in enumerate("qkv"):
        entry = report[f"self_attn.in_proj_weight[{part}]"]
        assert entry.kind == "attention" and entry.shape == (24, 24)
        assert entry.sigma_max == pytest.approx(spectral_norm(w[24 * i:24 * (i + 1)]), rel=1e-5)


def test_matrix_rules():
    assert matrix_views("bias", (5,)) == "1-D"
    assert matrix_views("step", ()) == "a scalar"
    assert matrix_views("cls", (1, 1, 7))[0][:3] == ("cls", "matrix", "dense")  # a 1 x 7 row
    assert matrix_views("empty", (0, 4)).startswith("empty")
    (patch,) = matrix_views("conv.weight", (8, 3, 5, 5))
    assert (patch.kind, patch.view, patch.shape, patch.take(np.zeros((8, 3, 5, 5))).shape) == ("conv2d", "patch",
                                                                                                (8, 75), (8, 75))
    (kernel,) = matrix_views("conv.weight", (8, 3, 5, 5), "kernel")
    assert kernel.shape == kernel.take(np.zeros((8, 3, 5, 5))).shape == (24, 25)
    experts = matrix_views("model.layers.0.mlp.experts.gate_up_proj", (4, 64, 32))
    assert [e[0] for e in experts][-1].endswith("gate_up_proj[3]") and experts[0][1] == "stacked"
    wide = matrix_views("stack", (3, 300, 200))  # dimensions beyond a kernel's: a stack of matrices
    x = np.arange(3 * 300 * 200, dtype=np.float64).reshape(3, 300, 200)
    np.testing.assert_array_equal(wide[2].take(x), x[2])
    assert wide[2].shape == (300, 200) and len(wide) == 3
