"""Reading torch models as chains, and inverting them exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vsfast
from vsfast.nn import chain_layers


def _net(*acts):
    torch.manual_seed(0)
    widths = [40, 30, 20, 10][: len(acts) + 1]
    mods: list[nn.Module] = [nn.Flatten()]
    for (n, m), act in zip(zip(widths[:-1], widths[1:]), acts):
        mods.append(nn.Linear(n, m))
        if act is not None:
            mods.append(act)
    return nn.Sequential(*mods).double().eval()


@pytest.mark.parametrize("acts", [
    (nn.SELU(), nn.Tanh(), None),
    (nn.ELU(alpha=0.7), nn.LeakyReLU(0.3), nn.Sigmoid()),
    (nn.SELU(), nn.Dropout(0.5), None),
])
def test_chain_of_torch_model_inverts_it(acts):
    model = _net(*acts)
    x0 = torch.rand(6, 1, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x0)
    x, clamped = vsfast.reconstruct(chain_layers(model), y)
    assert clamped == (0,) * len(chain_layers(model))
    with torch.no_grad():
        back = model(x.reshape(x0.shape))
    assert torch.linalg.norm(back - y) / torch.linalg.norm(y) < 1e-10


def test_chain_layers_reads_parameters():
    layers = chain_layers(_net(nn.ELU(alpha=0.7), nn.LeakyReLU(0.3), None))
    assert [a for _, _, a in layers] == [("elu", 0.7), ("leaky_relu", pytest.approx(0.3)), "identity"]
    assert layers[0][0].shape == (30, 40)
    assert chain_layers(_net(nn.SELU()), dtype=torch.float32)[0][0].dtype == torch.float32


@pytest.mark.parametrize("model,match", [
    (_net(nn.ReLU()), "ReLU.*not an invertible activation"),
    (_net(nn.LeakyReLU(0.0)), "LeakyReLU.*not an invertible"),
    (nn.Sequential(nn.SELU(), nn.Linear(3, 2)), "does not follow a Linear"),
    (nn.Sequential(nn.Linear(3, 3), nn.SELU(), nn.Tanh()), "does not follow a Linear"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), "Conv2d"),
    (nn.Linear(3, 2), "nn.Sequential"),
    (nn.Sequential(nn.Flatten()), "at least one Linear"),
])
def test_chain_layers_refuses_non_invertible(model, match):
    with pytest.raises(ValueError, match=match):
        chain_layers(model)


def test_chain_layers_keeps_a_module_used_twice():
    act = nn.Tanh()  # one instance between both pairs of layers
    model = nn.Sequential(nn.Linear(6, 5), act, nn.Linear(5, 4), act, nn.Linear(4, 3))
    assert [spec for _, _, spec in chain_layers(model)] == ["tanh", "tanh", "identity"]
