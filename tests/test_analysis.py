"""vsfast.analyze: per-layer spaces against float64 numpy, signal/residual splits of real inputs,
both views of a convolution, and the report's tables."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import vsfast  # noqa: E402
from vsfast.analysis import layer_matrix  # noqa: E402


def projector(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows.T @ rows


def reference_spaces(w: np.ndarray):
    """numpy float64: singular values, rank (matrix_rank's rule) and the row-space projector."""
    w = np.asarray(w, dtype=np.float64)
    _, s, vh = np.linalg.svd(w)
    rank = int(np.linalg.matrix_rank(w))
    return s, rank, projector(vh[:rank])


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding="same", dilation=2, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(6, 6, 2, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 5),
    ).double()


@pytest.mark.parametrize("conv_view", ["patch", "kernel"])
def test_spaces_match_float64_numpy_per_layer(conv_view):
    model = small_cnn()
    report = vsfast.analyze(model, conv_view=conv_view)
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert [layer.name for layer in report] == names
    for layer in report:
        w = layer_matrix(model.get_submodule(layer.name), layer.name, conv_view)[0].numpy()
        s, rank, proj = reference_spaces(w)
        assert layer.shape == w.shape
        assert layer.rank == rank and layer.nullity == w.shape[1] - rank
        np.testing.assert_allclose(layer.singular_values, s, rtol=1e-12, atol=1e-13 * s[0])
        np.testing.assert_allclose(projector(layer.spaces.signal_rows), proj, atol=1e-10)
        assert layer.condition_number == pytest.approx(s[0] / s[rank - 1], rel=1e-10)


def test_conv_views_have_the_right_shapes():
    conv = nn.Conv2d(3, 8, (5, 3))
    patch = vsfast.analyze(conv, conv_view="patch")[0]
    kernel = vsfast.analyze(conv, conv_view="kernel")[0]
    assert (patch.kind, patch.view, patch.shape, patch.weight_shape) == ("conv2d", "patch", (8, 45), (8, 3, 5, 3))
    assert (kernel.view, kernel.shape) == ("kernel", (24, 15))


@pytest.mark.parametrize("kwargs", [dict(stride=1, padding=0), dict(stride=2, padding=2, dilation=2),
                                    dict(stride=(1, 2), padding="valid")])
def test_patch_view_reproduces_the_convolution(kwargs):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, **kwargs).double()
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    w = layer_matrix(conv, "conv", "patch")[0]
    padding = (0, 0) if kwargs.get("padding") == "valid" else kwargs["padding"]
    patches = F.unfold(x, 3, dilation=kwargs.get("dilation", 1), padding=padding, stride=kwargs["stride"])
    out = conv(x)
    from_patches = (w @ patches + conv.bias[:, None]).reshape(out.shape)
    torch.testing.assert_close(from_patches, out, rtol=1e-12, atol=1e-12)


def test_signal_plus_residual_is_the_input_for_every_layer():
    model = small_cnn()
    x = torch.rand(7, 1, 12, 12, dtype=torch.float64)
    for view in ("patch", "kernel"):
        report = vsfast.analyze(model, x, conv_view=view)
        for layer in report:
            parts = layer.inputs
            assert parts.signal.shape == parts.inputs.shape == parts.residual.shape
            np.testing.assert_allclose(parts.signal + parts.residual, parts.inputs, atol=1e-12)
            assert parts.rejected_fraction.shape == (7,)
            assert np.all((parts.rejected_fraction >= 0) & (parts.rejected_fraction <= 1 + 1e-12))
    first = vsfast.analyze(model, x)[0].inputs
    np.testing.assert_array_equal(first.inputs, x.numpy())


def test_residual_of_non_overlapping_patches_is_invisible_to_the_layer():
    # Patches that tile the image: the convolution of the residual image is zero (no bias).
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 2, stride=2, bias=False).double()  # 3 outputs < 8 patch values: a null space
    x = torch.rand(4, 2, 6, 6, dtype=torch.float64)
    layer = vsfast.analyze(conv, x)[0]
    assert layer.nullity == 8 - 3
    residual = torch.from_numpy(layer.inputs.residual)
    assert conv(residual).abs().max() < 1e-12
    torch.testing.assert_close(conv(torch.from_numpy(layer.inputs.signal)), conv(x), rtol=1e-12, atol=1e-12)


def test_a_layer_that_rejects_a_known_direction_shows_it():
    rng = np.random.default_rng(3)
    n = 16
    d = rng.standard_normal(n)
    d /= np.linalg.norm(d)
    w = rng.standard_normal((6, n)) @ (np.eye(n) - np.outer(d, d))  # d is in the null space
    model = nn.Sequential(nn.Linear(n, 6, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w))
    e = np.linalg.qr(w.T)[0][:, 0]  # a direction the layer keeps
    x = np.stack([d, e, 3 * d + 4 * e])
    layer = vsfast.analyze(model, torch.from_numpy(x))["0"]
    assert layer.rank == 6 and layer.nullity == n - 6
    np.testing.assert_allclose(layer.inputs.residual, np.stack([d, 0 * d, 3 * d]), atol=1e-12)
    np.testing.assert_allclose(layer.rejected_fraction, [1.0, 0.0, 9 / 25], atol=1e-12)


def test_equal_shapes_share_a_batched_call_and_stay_distinct():
    torch.manual_seed(4)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(3)]).double()
    with torch.no_grad():
        model[1].weight[:, :4] = 0  # rank 12
    report = vsfast.analyze(model)
    for layer, module in zip(report, model):
        s, rank, proj = reference_spaces(module.weight.detach().numpy())
        assert layer.rank == rank
        np.testing.assert_allclose(layer.singular_values, s, rtol=1e-12, atol=1e-12)
    assert [layer.rank for layer in report] == [16, 12, 16]


def test_top_k_randomized_matches_the_leading_singular_values():
    torch.manual_seed(5)
    layer = nn.Linear(300, 200, bias=False).double()
    rng = np.random.default_rng(5)
    u, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    v, _ = np.linalg.qr(rng.standard_normal((300, 200)))
    s = 2.0 ** -np.arange(200)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy((u * s) @ v.T))
    entry = vsfast.analyze(layer, k=10)[0]
    assert entry.spaces.method == "randomized" and entry.singular_values.shape == (10,)
    np.testing.assert_allclose(entry.singular_values, s[:10], rtol=1e-10)
    small = vsfast.analyze(nn.Linear(8, 4), k=10)[0]  # k beyond the layer: all of it, exactly
    assert small.spaces.method == "exact" and small.singular_values.shape == (4,)


def test_float32_weights_within_float32_accuracy():
    torch.manual_seed(6)
    layer = nn.Linear(784, 64)
    entry = vsfast.analyze(layer)[0]
    assert entry.spaces.dtype == np.float32
    s, rank, proj = reference_spaces(layer.weight.detach().double().numpy())
    # Backward-stable SVD: |s_i - s~_i| <= c * eps32 * s_1, c a small multiple of sqrt(size).
    np.testing.assert_allclose(entry.singular_values, s, atol=50 * np.finfo(np.float32).eps * s[0])
    assert vsfast.analyze(layer, dtype=np.float64)[0].spaces.dtype == np.float64


def test_grouped_convolution_is_block_diagonal_in_the_patch_view():
    torch.manual_seed(7)
    conv = nn.Conv2d(4, 8, 3, groups=2).double()
    w = conv.weight.detach().numpy()
    blocks = [w[:4].reshape(4, -1), w[4:].reshape(4, -1)]
    whole = np.zeros((8, 36))
    whole[:4, :18], whole[4:, 18:] = blocks
    layer = vsfast.analyze(conv)[0]
    assert layer.shape == (8, 36) and layer.kind == "conv2d"
    np.testing.assert_allclose(layer.singular_values, np.linalg.svd(whole, compute_uv=False), rtol=1e-12)
    np.testing.assert_allclose(projector(layer.spaces.signal_rows), reference_spaces(whole)[2], atol=1e-10)
    assert vsfast.analyze(conv, conv_view="kernel")[0].shape == (16, 9)


def test_bad_arguments():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        vsfast.analyze(np.eye(3))
    with pytest.raises(ValueError, match="no weight matrix"):
        vsfast.analyze(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="conv_view"):
        vsfast.analyze(nn.Linear(3, 2), conv_view="pixel")
    with pytest.raises(ValueError, match="cannot run on a batch of shape"):
        vsfast.analyze(nn.Linear(3, 2), torch.ones(4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        vsfast.analyze(nn.Linear(3, 2), torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="params"):
        vsfast.analyze(nn.Linear(3, 2), params="some")
    with pytest.raises(ValueError, match="checkpoint holds weights only"):
        vsfast.analyze("model.safetensors", torch.ones(2, 3))


def test_model_mode_is_restored():
    model = small_cnn().train()
    vsfast.analyze(model, torch.rand(2, 1, 12, 12, dtype=torch.float64))
    assert model.training


def test_report_tables_and_json(tmp_path):
    model = small_cnn()
    report = vsfast.analyze(model, torch.rand(3, 1, 12, 12, dtype=torch.float64))
    rows = report.to_rows()
    assert len(rows) == len(report) == 6
    assert {"layer", "rank", "nullity", "condition_number", "energy_kept", "rejected_fraction_median"} <= rows[0].keys()
    data = json.loads(report.to_json())
    assert [entry["layer"] for entry in data["layers"]] == [layer.name for layer in report]
    assert len(data["layers"][0]["rejected_fraction"]) == 3
    report.to_csv(tmp_path / "layers.csv")
    assert (tmp_path / "layers.csv").read_text().splitlines()[0].startswith("layer,kind,view")
    with pytest.raises(KeyError, match="no analysed layer"):
        report["nope"]


def test_rank_zero_layer_is_reported_not_nan():
    layer = nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    report = vsfast.analyze(layer, torch.ones(2, 5))
    entry = report[0]
    assert entry.rank == 0 and math.isinf(entry.condition_number)
    np.testing.assert_array_equal(entry.rejected_fraction, [1.0, 1.0])
    assert json.loads(report.to_json())["layers"][0]["condition_number"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.to_rows()


# ----------------------------------------------------------------------------- every weight matrix


def singular_values(w) -> np.ndarray:
    return np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)


def test_attention_query_key_value_are_found_apart():
    torch.manual_seed(8)
    model = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).double()
    report = vsfast.analyze(model)
    names = [layer.name for layer in report]
    assert names == ["self_attn.in_proj_weight[q]", "self_attn.in_proj_weight[k]", "self_attn.in_proj_weight[v]",
                     "self_attn.out_proj", "linear1", "linear2"]
    w = model.self_attn.in_proj_weight.detach().numpy()
    for i, part in enumerate("qkv"):
        layer = report[f"self_attn.in_proj_weight[{part}]"]
        assert layer.kind == "attention" and layer.shape == (16, 16) and layer.weight_shape == (48, 16)
        np.testing.assert_allclose(layer.singular_values, singular_values(w[16 * i:16 * (i + 1)]), rtol=1e-12)
    separate = nn.MultiheadAttention(8, 2, kdim=5, vdim=3)
    shapes = {layer.name: layer.shape for layer in vsfast.analyze(separate)}
    assert shapes == {"q_proj_weight": (8, 8), "k_proj_weight": (8, 5), "v_proj_weight": (8, 3), "out_proj": (8, 8)}


@pytest.mark.parametrize("module, matrix", [
    (nn.Conv1d(3, 4, 5), lambda w: w.reshape(4, 15)),
    (nn.Conv3d(2, 3, (2, 3, 2)), lambda w: w.reshape(3, 24)),
    (nn.ConvTranspose2d(4, 6, 3), lambda w: w.reshape(4, 54).T),
    (nn.ConvTranspose1d(4, 6, 3, groups=2),
     lambda w: np.block([[w[:2].reshape(2, 9).T, np.zeros((9, 2))], [np.zeros((9, 2)), w[2:].reshape(2, 9).T]])),
    (nn.Embedding(20, 6), lambda w: w),
])
def test_layer_types_as_their_exact_matrices(module, matrix):
    torch.manual_seed(9)
    module = module.double()
    expected = matrix(module.weight.detach().numpy())
    layer = vsfast.analyze(module)[0]
    assert layer.shape == expected.shape
    np.testing.assert_allclose(layer.singular_values, singular_values(expected), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(projector(layer.spaces.signal_rows), reference_spaces(expected)[2], atol=1e-10)


def test_transposed_convolution_is_its_patch_map_painted_back():
    # conv_transpose2d(x, W) = fold(W_patch @ (each input position's channels)): the patch view
    # is the exact map from an input position to the output patch it adds to.
    torch.manual_seed(10)
    conv = nn.ConvTranspose2d(3, 2, 3, stride=2, bias=False).double()
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    w = layer_matrix(conv, "t", "patch")[0]
    painted = w @ x.reshape(3, -1)
    out = F.fold(painted.unsqueeze(0), output_size=(9, 11), kernel_size=3, stride=2)
    torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)


def test_recurrent_weights_ties_and_what_is_left_out():
    torch.manual_seed(11)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.rnn = nn.LSTM(4, 5)
            self.pos = nn.Parameter(torch.randn(1, 7, 4))
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight  # tied

    net = Net()
    report = vsfast.analyze(net)
    assert [layer.name for layer in report] == ["embed", "rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    skipped = dict(report.skipped)
    assert skipped["head"] == "the same tensor as embed.weight"
    assert "params='all'" in skipped["pos"] and skipped["rnn.bias_ih_l0"] == "1-D"
    everything = vsfast.analyze(net, params="all")
    assert everything["pos"].shape == (7, 4)  # the leading axis of size 1 dropped
    np.testing.assert_allclose(everything["pos"].singular_values, singular_values(net.pos.detach()[0]), rtol=1e-5)


def test_spaces_wait_for_their_first_use_unless_asked_for():
    model = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 20), nn.Linear(20, 20)).double()
    layer = vsfast.analyze(model)[0]
    assert layer._spaces is None
    sp = layer.spaces
    assert layer.spaces is sp and sp.rank == layer.rank
    np.testing.assert_allclose(np.asarray(sp.singular_values), layer.singular_values, rtol=1e-12)
    eager = vsfast.analyze(model, bases=True)
    assert all(entry._spaces is not None for entry in eager)
    for entry, module in zip(eager, model):
        assert isinstance(entry.spaces.signal, torch.Tensor)  # the weights' kind
        np.testing.assert_allclose(projector(entry.spaces.signal_rows),
                                   reference_spaces(module.weight.detach().numpy())[2], atol=1e-10)
    with pytest.raises(ValueError, match="bases: a checkpoint holds weights only"):
        vsfast.analyze("model.safetensors", bases=True)


def test_metrics_in_the_rows():
    torch.manual_seed(12)
    layer = nn.Linear(60, 40).double()
    row = vsfast.analyze(layer).to_rows()[0]
    s = singular_values(layer.weight.detach())
    frob = np.linalg.norm(layer.weight.detach().numpy())
    assert row["sigma_max"] == pytest.approx(s[0], rel=1e-12)
    assert row["frobenius_norm"] == pytest.approx(frob, rel=1e-12)
    assert row["stable_rank"] == pytest.approx(frob**2 / s[0] ** 2, rel=1e-12)
    p = s / s.sum()
    assert row["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-10)
    assert math.isfinite(row["alpha"]) and row["k"] == 40


def test_default_k_is_the_whole_spectrum_up_to_the_limit(monkeypatch):
    from vsfast import analysis

    monkeypatch.setattr(analysis, "FULL_SPECTRUM_SIDE", 16)
    monkeypatch.setattr(analysis, "DEFAULT_K", 2)
    model = nn.Sequential(nn.Linear(16, 30), nn.Linear(60, 80))
    report = vsfast.analyze(model)
    assert [(layer.k, layer.method) for layer in report] == [(16, "exact"), (2, "randomized")]
    assert math.isnan(report[1].effective_rank) and math.isfinite(report[0].effective_rank)
    assert [(layer.k, layer.method) for layer in vsfast.analyze(model, k="all")] == [(16, "exact"), (60, "exact")]


def test_inputs_in_batches_give_the_same_split():
    model = small_cnn()
    x = torch.rand(9, 1, 12, 12, dtype=torch.float64)
    whole = vsfast.analyze(model, x, batch_size=100)
    batched = vsfast.analyze(model, x, batch_size=2, keep_inputs=3)
    for a, b in zip(whole, batched):
        np.testing.assert_allclose(b.rejected_fraction, a.rejected_fraction, rtol=1e-12, atol=1e-15)
        assert b.inputs.inputs.shape[0] == 3 and a.inputs.inputs.shape[0] == 9
        np.testing.assert_allclose(b.inputs.residual, a.inputs.residual[:3], atol=1e-13)


def test_inputs_of_attention_1d_and_transposed_convolutions_split_exactly():
    torch.manual_seed(13)
    attention = nn.MultiheadAttention(12, 3, batch_first=False).double()
    x = torch.randn(4, 5, 12, dtype=torch.float64)  # (batch, sequence, features)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention

        def forward(self, x):
            x = x.transpose(0, 1)  # attention without batch_first takes (sequence, batch, features)
            return self.attn(x, x, x)[0]

    with torch.no_grad():  # a rank-deficient query projection: part of every input is rejected
        attention.in_proj_weight[:12, :4] = 0
    layer = vsfast.analyze(Self(), x)["attn.in_proj_weight[q]"]
    assert layer.inputs.inputs.shape == (4, 5, 12)  # batch first
    wq = attention.in_proj_weight.detach()[:12]
    residual = torch.from_numpy(layer.inputs.residual)
    assert (residual @ wq.T).abs().max() < 1e-12 and layer.rejected_fraction.shape == (4,)

    conv = nn.Conv1d(2, 3, 2, stride=2, bias=False).double()  # 3 outputs < 4 patch values
    signal = torch.rand(3, 2, 8, dtype=torch.float64)
    parts = vsfast.analyze(conv, signal)[0].inputs
    assert conv(torch.from_numpy(parts.residual)).abs().max() < 1e-12

    up = nn.ConvTranspose2d(5, 2, 2, bias=False).double()  # 5 channels into 8 outputs per position
    with torch.no_grad():
        up.weight[4] = up.weight[0]  # channel 4 repeats channel 0: their difference is invisible
    pixels = torch.rand(2, 5, 3, 3, dtype=torch.float64)
    parts = vsfast.analyze(up, pixels)[0].inputs
    assert up(torch.from_numpy(parts.residual)).abs().max() < 1e-12
    np.testing.assert_allclose(parts.signal + parts.residual, pixels.numpy(), atol=1e-14)


gpu_torch = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@gpu_torch
@pytest.mark.skipif(not vsfast.cuda_available(), reason="needs vsfast's CUDA module")
def test_a_cuda_model_is_analysed_on_its_gpu():
    model = small_cnn()
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    on_cpu = vsfast.analyze(model, x, batch_size=2)
    on_gpu = vsfast.analyze(model.cuda(), x, batch_size=2)
    for a, b in zip(on_cpu, on_gpu):
        assert b.name == a.name and b.rank == a.rank
        np.testing.assert_allclose(b.singular_values, a.singular_values, rtol=1e-10, atol=1e-12 * a.sigma_max)
        np.testing.assert_allclose(b.rejected_fraction, a.rejected_fraction, atol=1e-10)
        assert b.spaces.signal.is_cuda


@gpu_torch
@pytest.mark.skipif(vsfast.cuda_available(), reason="vsfast's CUDA module is built")
def test_a_cuda_model_without_the_cuda_module_is_one_clear_error():
    with pytest.raises(TypeError, match="built without its CUDA module"):
        vsfast.analyze(nn.Linear(4, 3).cuda())
