"""Inputs inside a box: Chain.solve_box and invert(..., box=...). The answers are checked by the
optimality (KKT) conditions of min ||x - a|| subject to f(x) = y and lo <= x <= hi, computed
here in float64 from the Jacobian torch gives: for a convex problem (one layer) they prove the
answer is the nearest, for a chain that it is a stationary point."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import vsfast  # noqa: E402
from vsfast import Chain  # noqa: E402
from vsfast._backends import gpu  # noqa: E402
from vsfast.inverse import class_targets, invert, model_outputs  # noqa: E402
from vsfast.nn import chain_layers  # noqa: E402
from conftest import needs_mnist  # noqa: E402


def chain_model(widths, activation=nn.SELU, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).double()


def forward(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x, np.float64))).numpy()


def jacobian(model, x) -> np.ndarray:
    return torch.autograd.functional.jacobian(lambda v: model(v[None])[0], torch.as_tensor(x, dtype=torch.float64)).numpy()


def kkt_residual(model, x, a, lo, hi) -> float:
    """How far x is from satisfying x = clip(a + J(x)^T lam, lo, hi) for the best multipliers lam:
    the stationarity residual on the free inputs (strictly inside the box), relative to ||x - a||,
    plus any sign violation of the bound multipliers on the inputs at a bound."""
    J = jacobian(model, x)
    free = (x > lo + 1e-9) & (x < hi - 1e-9)
    lam = np.linalg.lstsq(J[:, free].T, (x - a)[free], rcond=None)[0]
    u = a + J.T @ lam
    stationarity = np.linalg.norm((u - x)[free]) / max(np.linalg.norm(x - a), 1e-300)
    # At the upper bound the unconstrained optimum lies above it, at the lower bound below.
    wrong_side = np.concatenate([np.maximum(hi - u[x >= hi - 1e-9], 0), np.maximum(u[x <= lo + 1e-9] - lo, 0)])
    return stationarity + (wrong_side.max() if wrong_side.size else 0.0) / max(np.abs(u).max(), 1e-300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_layer_answer_is_the_nearest_point_of_the_box(dtype):
    """One linear layer: the problem is a convex quadratic program, solved in one step; the
    KKT conditions, which the answer meets, make it the unique nearest input."""
    rng = np.random.default_rng(0)
    model = chain_model((40, 6))
    x_true = rng.uniform(0, 1, (12, 40))
    y = forward(model, x_true)
    reference = rng.uniform(-0.5, 1.5, (12, 40))  # partly outside the box: the bounds bind
    chain = Chain(chain_layers(model, dtype=torch.float64 if dtype == np.float64 else torch.float32))
    solved = chain.solve_box(y.astype(dtype), reference=reference.astype(dtype))
    x = solved.inputs.astype(np.float64)
    assert solved.inputs.dtype == dtype and x.min() >= 0 and x.max() <= 1
    assert np.all(solved.violation == 0)
    eps = np.finfo(dtype).eps
    assert np.all(solved.error <= 100 * eps) and np.all(solved.steps <= 2)
    err = np.linalg.norm(forward(model, x) - y, axis=1) / np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(solved.error, err, rtol=0.1, atol=20 * eps)
    for i in range(len(y)):
        assert np.sum((x[i] == 0) | (x[i] == 1)) > 0  # the box binds somewhere
        assert kkt_residual(model, x[i], reference[i], 0.0, 1.0) < (1e-8 if dtype == np.float64 else 1e-3)
        # Nearer than the input the targets came from, which is in the box too.
        assert np.linalg.norm(x[i] - reference[i]) <= np.linalg.norm(x_true[i] - reference[i]) + 1e-6


@pytest.mark.parametrize("activation", [nn.SELU, nn.Tanh, lambda: nn.LeakyReLU(0.2)], ids=["selu", "tanh", "leaky"])
def test_chain_answers_are_exact_inside_the_box_and_locally_nearest(activation):
    """Through a chain the problem is not convex: the answer is a local one. It must be exact,
    inside the box and nearer the reference than the input the targets came from; for smooth
    activations, no farther than what scipy's SLSQP reaches from it on the same problem (float64,
    exact Jacobians, a quasi-Newton model of the curvature). Leaky ReLU's kinks stop the
    Gauss-Newton steps short of that (up to 7 % farther here): not checked."""
    rng = np.random.default_rng(1)
    model = chain_model((30, 20, 12, 4), activation, seed=2)
    x_true = rng.uniform(0.2, 0.8, (10, 30))
    y = forward(model, x_true)
    reference = np.clip(x_true + rng.normal(0, 0.5, x_true.shape), -0.2, 1.2)
    solved = Chain(chain_layers(model)).solve_box(y, box=(0.0, 1.0), reference=reference, max_iter=100)
    x = solved.inputs
    assert x.min() >= 0 and x.max() <= 1 and np.all(solved.violation == 0)
    assert np.all(solved.error <= 1e-10)
    np.testing.assert_allclose(forward(model, x), y, rtol=1e-9, atol=1e-12)
    distance = np.linalg.norm(x - reference, axis=1)
    assert np.all(distance <= np.linalg.norm(x_true - reference, axis=1))
    if activation is not nn.SELU and activation is not nn.Tanh:
        return
    optimize = pytest.importorskip("scipy.optimize")
    for i in range(len(y)):
        best = optimize.minimize(
            lambda v: 0.5 * np.sum((v - reference[i]) ** 2), x[i], jac=lambda v: v - reference[i], method="SLSQP",
            bounds=[(0, 1)] * 30, constraints={"type": "eq", "fun": lambda v: forward(model, v[None])[0] - y[i],
                                               "jac": lambda v: jacobian(model, v)},
            options={"ftol": 1e-14, "maxiter": 500})
        assert best.success and np.abs(forward(model, best.x[None])[0] - y[i]).max() < 1e-8
        assert distance[i] <= np.linalg.norm(best.x - reference[i]) * (1 + 1e-3)


def test_without_a_reference_the_answer_is_the_smallest_input():
    model = chain_model((25, 3))
    x_true = np.random.default_rng(3).uniform(0, 1, (5, 25))
    y = forward(model, x_true)
    solved = Chain(chain_layers(model)).solve_box(y, box=(-1.0, 1.0))
    zero = np.zeros(25)
    for i in range(5):
        assert kkt_residual(model, solved.inputs[i], zero, -1.0, 1.0) < 1e-8
        assert np.linalg.norm(solved.inputs[i]) <= np.linalg.norm(x_true[i]) + 1e-9


def test_infeasible_target_reports_the_least_violation():
    """Outputs that only inputs outside the box give: the mean of 16 inputs equal to 2 needs
    every input at 2 at least on average, so the least violation of [0, 1] is 1 (all inputs 2)."""
    model = nn.Sequential(nn.Linear(16, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(1 / 16)
    y = np.array([[2.0], [0.5]])
    solved = Chain(chain_layers(model)).solve_box(y, box=(0.0, 1.0), reference=np.full(16, 0.3))
    assert solved.error[0] <= 1e-10  # an exact preimage all the same
    np.testing.assert_allclose(solved.violation[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(solved.inputs[0], 2.0, rtol=1e-6)
    assert solved.violation[1] == 0 and solved.inputs[1].max() <= 1
    np.testing.assert_allclose(solved.inputs[1], 0.5, atol=1e-12)  # the reference moved evenly


def test_results_do_not_depend_on_the_thread_count():
    model = chain_model((30, 20, 5), seed=4)
    rng = np.random.default_rng(4)
    y = forward(model, rng.uniform(0, 1, (70, 30)))
    chain = Chain(chain_layers(model))
    before = vsfast.get_num_threads()
    try:
        vsfast.set_num_threads(1)
        one = chain.solve_box(y, reference=np.full(30, 0.5))
        vsfast.set_num_threads(3)
        three = chain.solve_box(y, reference=np.full(30, 0.5))
    finally:
        vsfast.set_num_threads(before)
    np.testing.assert_array_equal(one.inputs, three.inputs)
    np.testing.assert_array_equal(one.steps, three.steps)


def test_bad_arguments():
    chain = Chain(chain_layers(chain_model((6, 2))))
    y = np.zeros((2, 2))
    for box in [(1.0, 0.0), (0.0, np.inf), (0.0,), "unit", None]:
        with pytest.raises(ValueError, match="box"):
            chain.solve_box(y, box=box)
    with pytest.raises(ValueError, match="reference: expected 1 or 2 rows of 6 values"):
        chain.solve_box(y, reference=np.zeros((3, 6)))
    with pytest.raises(ValueError, match="NaN"):
        chain.solve_box(np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="rows of 2 values"):
        chain.solve_box(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="box"):
        chain._engine.solve_box(y, None, 1.0, 1.0, 1e-8, 5)  # the core refuses it too
    model = chain_model((6, 2))
    with pytest.raises(ValueError, match="box: expected"):
        invert(model, y, method="pinv", box=(2, 1))


def test_the_gpu_chain_offers_every_operation_of_the_cpu_chain():
    cpu_methods = {m for m in dir(vsfast._core.ChainF32) if not m.startswith("_")} - {"depth"}
    assert cpu_methods <= {m for m in dir(gpu._Chain) if not m.startswith("_")} | {"input_dim", "output_dim", "ranks"}
    with pytest.raises(TypeError, match="runs on the CPU"):
        gpu._Chain.solve_box(None)


def test_invert_boxes_image_models_by_default():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    torch.manual_seed(5)
    y = forward(model, torch.rand(4, 1, 28, 28))
    boxed = invert(model, y)
    assert boxed.box == (0.0, 1.0) and boxed.inputs.shape == (4, 1, 28, 28)
    assert boxed.inputs.min() >= 0 and boxed.inputs.max() <= 1 and np.all(boxed.feasible)
    free = invert(model, y, box=None)
    assert free.box is None and free.violation is None and free.inputs.min() < 0  # minimum norm: signed
    vector = invert(chain_model((5, 3)), np.zeros((1, 3)))  # not images: no box unless asked
    assert vector.box is None


# ----------------------------------------------------------------------------- the paper's networks


@pytest.fixture(scope="module")
def mnist_data():
    from vsfast import mnist

    return mnist.load("train"), mnist.load("test")


@needs_mnist
def test_fcnn5_own_outputs_on_1000_test_digits_are_reached_inside_the_box(mnist_data):
    """The issue's check: targets FCNN-5's outputs on 1,000 test digits (feasible: the digits
    are in the box), reference the class mean: every input in [0, 1], every relative output
    error through the float32 model <= 1e-4, every predicted class the target's."""
    from vsfast.mnist import models

    (train, train_labels), (test, _) = mnist_data
    model = models.load("fcnn5")
    targets = model_outputs(model, test[:1000])
    result = invert(model, targets, method="pinv", reference="class-mean", data=(train, train_labels),
                    dtype=np.float32)
    assert result.inputs.min() >= -1e-6 and result.inputs.max() <= 1 + 1e-6
    assert np.all(result.feasible)
    through = model_outputs(model, result.inputs.astype(np.float32))
    error = np.linalg.norm(through - targets, axis=1) / np.linalg.norm(targets, axis=1)
    assert error.max() <= 1e-4, error.max()
    assert np.array_equal(through.argmax(axis=1), targets.argmax(axis=1))
    # Nearer the class mean than the digits themselves, which are also inside the box.
    means = np.stack([train[train_labels == c].mean(axis=0) for c in range(10)])[targets.argmax(axis=1)]
    near = np.linalg.norm((result.inputs - means).reshape(1000, -1), axis=1)
    digits = np.linalg.norm((test[:1000] - means).reshape(1000, -1), axis=1)
    assert np.all(near <= digits + 1e-3)


@needs_mnist
def test_paper_targets_feasibility_is_reported(mnist_data):
    from vsfast.mnist import models

    (train, train_labels), _ = mnist_data
    for name in ("fcnn1", "fcnn5"):
        model = models.load(name)
        targets = class_targets(model_outputs(model, train), train_labels)
        result = invert(model, targets, reference="class-mean", data=(train, train_labels))
        assert result.violation.shape == (10,) and np.all(result.error <= 1e-10)
        inside = result.violation == 0
        flat = result.inputs.reshape(10, -1)
        assert np.all((flat[inside] >= 0) & (flat[inside] <= 1))
        outside = np.maximum(-flat, flat - 1).max(axis=1)
        np.testing.assert_allclose(result.violation[~inside], outside[~inside])
        if name == "fcnn1":  # one layer, 774 free dimensions: every target fits the box
            assert np.all(inside)


@needs_mnist
def test_nearest_reference_is_the_training_digit_nearest_the_class_mean_answer(mnist_data):
    from vsfast.mnist import models

    (train, train_labels), _ = mnist_data
    model = models.load("fcnn1")
    targets = class_targets(model_outputs(model, train), train_labels)
    first = invert(model, targets, reference="class-mean", data=(train, train_labels))
    result = invert(model, targets, reference="nearest", data=(train, train_labels))
    for c in range(10):
        members = train[train_labels == c].reshape(-1, 784).astype(np.float64)
        nearest = members[np.argmin(np.linalg.norm(members - first.inputs[c].reshape(784), axis=1))]
        np.testing.assert_array_equal(result.reference[c].reshape(784), nearest)
    assert np.all(result.feasible)
    # The answer sought near a real digit is nearer that digit than the class-mean answer is.
    for c in range(10):
        ref = result.reference[c].reshape(784)
        assert np.linalg.norm(result.inputs[c].reshape(784) - ref) <= np.linalg.norm(first.inputs[c].reshape(784) - ref)
