"""signal_attribution against a dense float64 reference: (P x) * grad with P = pinv(W) W."""

from __future__ import annotations

import numpy as np
import pytest

from vsfast import signal_attribution

torch = pytest.importorskip("torch")


def fcnn(widths=(20, 8, 6, 3), seed=0):
    """A Flatten + Linear/SELU chain whose first layer has a 12-dimensional rejected space."""
    torch.manual_seed(seed)
    layers = [torch.nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.SELU()]
    return torch.nn.Sequential(*layers[:-1]).double()


def reference(model, x, target):
    xr = x.clone().requires_grad_(True)
    out = model(xr)
    grad, = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), xr)
    w = model[1].weight.detach().numpy()
    projector = np.linalg.pinv(w) @ w
    flat, g = x.flatten(1).numpy(), grad.flatten(1).numpy()
    return (flat @ projector) * g, flat * g


def test_signal_attribution_is_the_dense_reference_and_sums_like_gradient_times_input():
    model = fcnn()
    x = torch.randn(5, 4, 5, dtype=torch.float64)  # 20 values each
    target = torch.tensor([0, 1, 2, 0, 1])
    a = signal_attribution(model, x, target)
    ours, grad_times_input = reference(model, x, target)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_allclose(a.flatten(1).numpy(), ours, rtol=0, atol=1e-12)
    # completeness: the gradient lies in W's row space, so both attributions have the same total
    np.testing.assert_allclose(a.flatten(1).sum(1).numpy(), grad_times_input.sum(1), rtol=1e-10)
    assert not np.allclose(ours, grad_times_input)  # ... spread differently over the inputs


def test_moving_the_input_in_the_rejected_space_changes_nothing():
    model = fcnn()
    x = torch.randn(3, 20, dtype=torch.float64)
    w = model[1].weight.detach().numpy()
    null = np.linalg.svd(w)[2][8:]  # 12 rows spanning W's null space
    moved = x + torch.from_numpy(np.random.default_rng(0).standard_normal((3, 12)) @ null)
    target = model(x).argmax(1)
    np.testing.assert_allclose(signal_attribution(model, moved, target).numpy(),
                               signal_attribution(model, x, target).numpy(), rtol=0, atol=1e-12)
    _, before = reference(model, x, target)
    _, after = reference(model, moved, target)
    assert np.abs(after - before).max() > 1e-3  # gradient x input moves


def test_default_target_is_the_prediction():
    model = fcnn().float()
    x = torch.randn(4, 20)
    np.testing.assert_array_equal(signal_attribution(model, x).numpy(),
                                  signal_attribution(model, x, model(x).argmax(1)).numpy())


def test_bad_input():
    model = fcnn()
    x = torch.randn(2, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="x: expected a floating-point torch tensor"):
        signal_attribution(model, x.numpy())
    with pytest.raises(ValueError, match="target: expected one class"):
        signal_attribution(model, x, [0, 7])
    with pytest.raises(ValueError, match="does not read the input flattened"):
        signal_attribution(model, x, layer=model[3])
    with pytest.raises(ValueError, match="has no nn.Linear"):
        signal_attribution(torch.nn.Sequential(torch.nn.Flatten()), x)
