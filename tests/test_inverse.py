"""vsfast.invert: exact inputs for chosen outputs through invertible chains, the reference's role,
the range repair, gradient search for other models, and the target helpers."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import vsfast  # noqa: E402
from vsfast.inverse import class_targets, invert, onehot_targets  # noqa: E402
from conftest import needs_mnist  # noqa: E402


def relative(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def torch_outputs(model, x) -> np.ndarray:
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x), dtype=dtype)).double().numpy()


@pytest.fixture(scope="module")
def mnist_train():
    from vsfast import mnist

    return mnist.load("train")


@pytest.fixture(scope="module")
def paper(mnist_train):
    """The shipped models and the paper's per-class targets for each."""
    from vsfast.mnist import models

    images, labels = mnist_train
    result = {}
    for name in ("fcnn1", "fcnn5"):
        model = models.load(name)
        result[name] = (model, class_targets(torch_outputs(model, images), labels))
    return result


# ----------------------------------------------------------------------------- targets


def test_class_targets_are_the_papers_max_and_min():
    rng = np.random.default_rng(0)
    outputs, labels = rng.standard_normal((300, 4)), np.arange(300) % 4
    targets = class_targets(outputs, labels)
    assert targets.shape == (4, 4)
    for c in range(4):
        own = outputs[labels == c]
        expected = own.min(axis=0)
        expected[c] = own[:, c].max()
        np.testing.assert_array_equal(targets[c], expected)
    several = class_targets(outputs, labels, high=[90, 99])
    assert several.shape == (8, 4)
    np.testing.assert_allclose(several[1, 0], np.percentile(outputs[labels == 0, 0], 99))
    np.testing.assert_allclose(several[1, 1], np.percentile(outputs[labels == 0, 1], 1))
    with pytest.raises(ValueError, match="percentiles"):
        class_targets(outputs, labels, high=101)
    with pytest.raises(ValueError, match="no example of class 3"):
        class_targets(outputs[labels < 3], labels[labels < 3])


def test_onehot_targets():
    t = onehot_targets(3, high=5, low=-1)
    np.testing.assert_array_equal(t, [[5, -1, -1], [-1, 5, -1], [-1, -1, 5]])


# ----------------------------------------------------------------------------- pinv


def random_chain(activation: nn.Module, seed: int = 0, widths=(30, 20, 12, 5)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation)
    return nn.Sequential(*layers)


@pytest.mark.filterwarnings("ignore::vsfast.RangeWarning")  # some minimum-norm preimages need the repair
@pytest.mark.parametrize("activation", [nn.SELU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.ELU(), nn.Sigmoid()])
@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_pinv_reproduces_reachable_targets(activation, dtype, bound):
    model = random_chain(activation)
    x = np.random.default_rng(1).standard_normal((16, 30))
    y = torch_outputs(model.double(), x)
    result = invert(model.float(), y, method="pinv", dtype=dtype)
    assert result.method == "pinv" and result.inputs.shape == (16, 30) and result.inputs.dtype == dtype
    assert np.all(result.error <= bound)
    np.testing.assert_allclose(relative(result.outputs, y), result.error, rtol=1e-6, atol=1e-12)
    # The model itself (float32 here) agrees to its own precision.
    assert np.all(relative(torch_outputs(model.float(), result.inputs), y) <= 1e-4)
    # A reachable target can still have a minimum-norm preimage out of range: then repaired.
    assert np.all(result.reached)
    assert np.all((result.iterations == 0) | (result.clamped[0] + result.clamped[1] > 0))


@pytest.mark.filterwarnings("ignore::vsfast.RangeWarning")
@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_repair_moves_only_the_first_layers_row_space(dtype, bound):
    """Targets of a tanh chain beyond what the minimum-norm preimage can reach: the repair
    reaches them from a reference and keeps the reference's part in the first layer's null space."""
    model = random_chain(nn.Tanh(), seed=5).double()
    rng = np.random.default_rng(5)
    x = 3 * rng.standard_normal((12, 30))  # deep in tanh's saturation
    y = torch_outputs(model, x)
    reference = rng.standard_normal((12, 30))
    result = invert(model, y, method="pinv", reference=reference, dtype=dtype)
    assert np.sum(result.iterations > 0) >= 6 and np.all(result.error <= bound)
    w = model[0].weight.detach().numpy()
    _, kept = vsfast.project(reference, vsfast.spaces(w))
    _, moved = vsfast.project(result.inputs.astype(np.float64), vsfast.spaces(w))
    np.testing.assert_allclose(moved, kept, atol=10 * np.finfo(dtype).eps * np.abs(result.inputs).max())


def test_reference_fills_the_rejected_space_only():
    model = random_chain(nn.LeakyReLU(0.2)).double()  # unbounded range: the direct chain is exact
    x = np.random.default_rng(2).standard_normal((4, 30))
    y = torch_outputs(model, x)
    plain = invert(model, y, method="pinv")
    guided = invert(model, y, method="pinv", reference=x)
    assert np.all(guided.error <= 1e-10) and np.all(guided.iterations == 0)
    # The two answers differ by a vector of the first layer's null space: the reference's part there.
    w = model[0].weight.detach().numpy()
    difference = guided.inputs - plain.inputs
    np.testing.assert_allclose(difference @ w.T, 0, atol=1e-10)
    _, rejected = vsfast.project(x, vsfast.spaces(w))
    np.testing.assert_allclose(difference, rejected, atol=1e-10)
    # Minimum norm: the plain answer has no part in that null space.
    np.testing.assert_allclose(vsfast.project(plain.inputs, vsfast.spaces(w))[1], 0, atol=1e-10)


@pytest.mark.filterwarnings("ignore::vsfast.RangeWarning")
def test_auto_picks_pinv_for_chains_and_optimize_otherwise():
    y = np.zeros((1, 5)) + 0.1
    assert invert(random_chain(nn.Tanh()), y).method == "pinv"
    relu = random_chain(nn.ReLU())
    assert invert(relu, y, max_iter=5, box=None).method == "optimize"
    with pytest.raises(ValueError, match="not an invertible activation"):
        invert(relu, y, method="pinv")


@needs_mnist
@pytest.mark.parametrize("name", ["fcnn1", "fcnn5"])
@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_paper_targets_are_reproduced_exactly(paper, name, dtype, bound, mnist_train):
    model, targets = paper[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vsfast.RangeWarning)
        result = invert(model, targets, method="pinv", reference="class-mean", data=mnist_train, dtype=dtype,
                        box=None)
    assert result.inputs.dtype == dtype and np.all(result.error <= bound), result.error
    # Through the float32 torch model itself.
    assert np.all(relative(torch_outputs(model, result.inputs), targets) <= 1e-4)
    assert torch_outputs(model, result.inputs).argmax(axis=1).tolist() == list(range(10))


@needs_mnist
@pytest.mark.parametrize("name", ["fcnn1", "fcnn5"])
def test_class_mean_reference_changes_the_picture_not_the_output(paper, name, mnist_train):
    model, targets = paper[name]
    images, labels = mnist_train
    means = np.stack([images[labels == c].mean(axis=0) for c in range(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vsfast.RangeWarning)
        plain = invert(model, targets, method="pinv", box=None)
        guided = invert(model, targets, method="pinv", reference="class-mean", data=mnist_train, box=None)
    assert np.all(plain.error <= 1e-10) and np.all(guided.error <= 1e-10)
    dist = lambda r: np.linalg.norm((r.inputs - means).reshape(10, -1), axis=1)  # noqa: E731
    assert np.all(dist(guided) <= dist(plain) + 1e-9) and dist(guided).mean() < 0.9 * dist(plain).mean()


@needs_mnist
def test_fcnn5_min_norm_preimage_leaves_selu_range_and_is_repaired(paper):
    model, targets = paper["fcnn5"]
    with pytest.warns(vsfast.RangeWarning, match="leaves the activation range"):
        result = invert(model, targets, method="pinv", box=None)
    assert result.clamped[0] > 0  # the direct chain needed SELU outputs below -lambda*alpha
    assert np.all(result.reached) and np.all(result.iterations > 0)


@needs_mnist
def test_nearest_output_reference_is_the_training_image_whose_output_is_nearest(paper, mnist_train):
    from vsfast.inverse import _reference

    model, targets = paper["fcnn1"]
    images, labels = mnist_train
    ref = _reference(model, "nearest-output", targets, mnist_train, np.float64)
    for c in range(10):
        members = images[labels == c]
        outputs = torch_outputs(model, members)
        best = members[np.argmin(np.linalg.norm(outputs - targets[c], axis=1))]
        np.testing.assert_array_equal(ref[c], best)


# ----------------------------------------------------------------------------- optimize


def test_optimize_reaches_targets_inside_the_box():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(6, 1, 28, 28)
    y = torch_outputs(model, x)
    result = invert(model, y, method="optimize", tol=1e-3, max_iter=2000, lr=0.02)
    assert result.method == "optimize" and result.inputs.shape == (6, 1, 28, 28)
    assert np.all(result.error <= 1e-3)
    assert result.inputs.min() >= 0 and result.inputs.max() <= 1
    assert np.all((result.iterations > 0) & (result.iterations <= 2000))
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_optimize_reports_unreached_targets():
    model = nn.Sequential(nn.Linear(4, 2), nn.Sigmoid())
    result = invert(model, np.array([[5.0, 5.0]]), method="optimize", max_iter=20)
    assert result.error[0] > 0.5 and result.iterations[0] == 20


# ----------------------------------------------------------------------------- errors


def test_bad_arguments():
    model = random_chain(nn.Tanh())
    with pytest.raises(ValueError, match="method"):
        invert(model, np.zeros((1, 5)), method="exact")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        invert(np.eye(3), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="rows of 5 outputs"):
        invert(model, np.zeros((2, 4)), method="pinv")
    with pytest.raises(ValueError, match="NaN"):
        invert(model, np.full((1, 5), np.nan))
    with pytest.raises(ValueError, match="reference: expected one input of shape"):
        invert(model, np.zeros((2, 5)), reference=np.zeros(7))
    with pytest.raises(ValueError, match="reference: expected an input"):
        invert(model, np.zeros((2, 5)), reference="median")
    with pytest.raises(ValueError, match=r"data: reference='class-mean' needs the \(inputs, labels\)"):
        invert(model, np.zeros((2, 5)), reference="class-mean")  # no data set is assumed
    with pytest.raises(ValueError, match="box"):
        invert(model, np.zeros((2, 5)), method="optimize", box=(1, 0))


def test_optimize_handles_batch_norm_in_eval_mode():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10))
    model.train()
    model(torch.rand(32, 1, 28, 28))  # batch-norm statistics away from their initial values
    stats = model[1].running_mean.clone()
    y = torch_outputs(model.eval(), torch.rand(4, 1, 28, 28))
    result = invert(model.train(), y, tol=1e-3, max_iter=3000, lr=0.02)
    assert result.method == "optimize" and np.all(result.reached)
    assert model.training and torch.equal(model[1].running_mean, stats)  # mode and statistics kept


@pytest.mark.slow
@needs_mnist
def test_resnet18_optimize_reaches_the_class_of_1000_targets(mnist_train):
    from vsfast.mnist import models

    images, labels = mnist_train
    model = models.load("resnet18")
    sample = np.random.default_rng(0).choice(len(images), 10_000, replace=False)
    targets = class_targets(torch_outputs(model, images[sample]), labels[sample], high=np.linspace(50, 99, 100))
    begin = time.perf_counter()
    result = invert(model, targets, reference="class-mean", data=mnist_train, max_iter=200, tol=1e-2)
    seconds = time.perf_counter() - begin
    predicted = torch_outputs(model, result.inputs).argmax(axis=1)
    hits = np.mean(predicted == np.repeat(np.arange(10), 100))
    print(f"\nResNet18, optimize, 1,000 targets: target class predicted for {hits:.1%}, relative output error "
          f"median {np.median(result.error):.2e} (max {result.error.max():.2e}), {np.mean(result.reached):.1%} "
          f"within tol 1e-2, median {np.median(result.iterations):.0f} iterations, {seconds:.0f} s")
    assert hits >= 0.99
    assert np.median(result.error) < 0.1
    assert result.inputs.min() >= 0 and result.inputs.max() <= 1
