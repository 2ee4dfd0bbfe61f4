"""The chained pseudoinverse: forward(reconstruct(Y)) = Y for invertible chains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import vsfast
from conftest import with_spectrum

SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543772


def act_forward(name: str, param: float | None, z: np.ndarray) -> np.ndarray:
    """Reference activations in float64, as torch defines them."""
    if name == "identity":
        return z
    if name == "selu":
        return SELU_L * np.where(z > 0, z, SELU_A * np.expm1(z))
    if name == "elu":
        return np.where(z > 0, z, (1.0 if param is None else param) * np.expm1(z))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "leaky_relu":
        return np.where(z >= 0, z, (0.01 if param is None else param) * z)
    raise ValueError(name)


def forward_reference(layers, x):
    h = np.asarray(x, np.float64)
    for w, b, act in layers:
        name, param = (act, None) if isinstance(act, str) else act
        h = h @ np.asarray(w, np.float64).T + (0 if b is None else np.asarray(b, np.float64))
        h = act_forward(name, param, h)
    return h


def make_chain(rng, widths, acts, dtype=np.float64):
    """Layers of full row rank (widths decrease) with singular values in [0.5, 1.5], so that
    pre-activations are O(1) and square layers are well conditioned."""
    layers = []
    for (n, m), act in zip(zip(widths[:-1], widths[1:]), acts):
        w = with_spectrum(rng, m, n, np.linspace(1.5, 0.5, min(m, n)))[0].astype(dtype)
        b = (0.1 * rng.standard_normal(m)).astype(dtype)
        layers.append((w, b, act))
    return layers


# Invertible chains. With widths that shrink (the paper's FCNN-5), a hidden layer's minimum-norm
# preimage may leave the range of a bounded activation (tanh, sigmoid), so those are tested on
# square layers, where the preimage is unique; SELU's range is wide enough for the paper's shape.
CHAINS = {
    "selu-784-10": ([784, 512, 256, 128, 64, 10], ["selu", "selu", "selu", "selu", "identity"]),
    "mixed-square": ([64] * 6, ["tanh", "sigmoid", ("elu", 0.5), ("leaky_relu", 0.2), "identity"]),
    "mixed-square-last-sigmoid": ([48] * 6, ["elu", "leaky_relu", "tanh", "selu", "sigmoid"]),
}


@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_forward_of_reconstruct_is_identity(rng, name, dtype, tol):
    check_forward_of_reconstruct(rng, name, dtype, tol)


def check_forward_of_reconstruct(rng, name, dtype, tol, place=np.asarray, host=np.asarray):
    """``place`` puts the layers and targets where the chain runs (the GPU tests reuse this),
    ``host`` brings results back. Returns (layers, targets, chain, inputs) for further checks."""
    widths, acts = CHAINS[name]
    layers = make_chain(rng, widths, acts, dtype)
    placed = [(place(w), place(b), a) for w, b, a in layers]
    # Targets in range: outputs of the chain itself on random inputs.
    y = forward_reference(layers, rng.random((200, widths[0]))).astype(dtype)
    x, clamped = vsfast.reconstruct(placed, place(y))
    x_host = host(x)
    assert x_host.shape == (200, widths[0]) and x_host.dtype == dtype
    assert clamped == (0,) * 5
    y_back = forward_reference(layers, x_host)
    rel = np.linalg.norm(y_back - y, axis=1) / np.linalg.norm(y.astype(np.float64), axis=1)
    assert rel.max() <= tol
    # The chain's own forward agrees with the reference.
    chain = vsfast.Chain(placed)
    np.testing.assert_allclose(host(chain.forward(x)), y_back.astype(dtype), rtol=0, atol=10 * tol * np.abs(y).max())
    return layers, y, chain, x


def test_minimum_norm_and_reference(rng):
    layers = make_chain(rng, [100, 30, 10], ["selu", "identity"])
    y = forward_reference(layers, rng.random((5, 100)))
    chain = vsfast.Chain(layers)
    x_min, _ = chain.reconstruct(y)
    # Minimum norm: x_min lies in the first layer's signal space.
    sp = vsfast.spaces(layers[0][0])
    _, residual = vsfast.project(x_min, sp)
    assert np.abs(residual).max() < 1e-10
    ref = rng.random(100)
    x_ref, _ = chain.reconstruct(y, reference=ref)
    np.testing.assert_allclose(forward_reference(layers, x_ref), y, rtol=1e-10, atol=1e-12)
    # The reference fills exactly the rejected space: x_ref = x_min + residual(ref).
    np.testing.assert_allclose(x_ref - x_min, np.broadcast_to(vsfast.project(ref, sp)[1], x_ref.shape), atol=1e-12)
    assert np.linalg.norm(x_ref - ref, axis=1).max() < np.linalg.norm(x_min - ref, axis=1).min()
    # Filling every layer's rejected space still reproduces y.
    x_all, _ = chain.reconstruct(y, reference=ref, reference_layers="all")
    np.testing.assert_allclose(forward_reference(layers, x_all), y, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="reference_layers"):
        chain.reconstruct(y, reference=ref, reference_layers="some")
    # One reference per target works too.
    refs = rng.random((5, 100))
    x_refs, _ = chain.reconstruct(y, reference=refs)
    np.testing.assert_allclose(forward_reference(layers, x_refs), y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act,bad,lo,hi", [
    ("selu", -5.0, -SELU_L * SELU_A, np.inf),
    ("tanh", 1.5, -1.0, 1.0),
    ("sigmoid", -0.2, 0.0, 1.0),
    (("elu", 2.0), -3.0, -2.0, np.inf),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_of_range_targets_are_clamped_and_reported(rng, act, bad, lo, hi, dtype):
    layers = make_chain(rng, [20, 8], [act], dtype)
    y = forward_reference(layers, rng.random((4, 20))).astype(dtype)
    y[0, :3] = bad
    with pytest.warns(vsfast.RangeWarning, match="layer 0: 3"):
        x, clamped = vsfast.reconstruct(layers, y)
    assert clamped == (3,)
    assert np.all(np.isfinite(x))
    out = forward_reference(layers, x)
    assert np.all((out > lo) & (out < hi))
    # In-range rows are untouched.
    np.testing.assert_allclose(out[1:], y[1:], rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


def test_reference_at_every_layer_reproduces_the_reference(rng):
    """When the targets are the reference's own outputs, filling every layer's rejected space with
    the reference's activations gives back the reference itself."""
    layers = make_chain(rng, [200, 100, 50, 10], ["selu", "tanh", "identity"])
    ref = rng.random((3, 200))
    y = forward_reference(layers, ref)
    x, clamped = vsfast.Chain(layers).reconstruct(y, reference=ref, reference_layers="all")
    assert clamped == (0, 0, 0)
    np.testing.assert_allclose(x, ref, atol=1e-10)
    x_first, _ = vsfast.Chain(layers).reconstruct(y, reference=ref)
    assert np.abs(x_first - ref).max() > 1e-3  # the first layer alone does not pin the hidden values


def test_torch_in_torch_out(rng):
    layers = [(torch.from_numpy(w), torch.from_numpy(b), a) for w, b, a in make_chain(rng, [50, 20, 5], ["tanh", "identity"])]
    y = torch.from_numpy(forward_reference(layers, rng.random((3, 50))))
    x, _ = vsfast.reconstruct(layers, y)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float64
    single, _ = vsfast.reconstruct(layers, y[0])
    assert single.shape == (50,)


def test_rank_deficient_layer_gives_least_squares(rng):
    w = rng.standard_normal((6, 3)) @ rng.standard_normal((3, 12))  # rank 3
    chain = vsfast.Chain([(w, None, None)])
    assert chain.ranks == (3,)
    y = rng.standard_normal((4, 6))
    x, _ = chain.reconstruct(y)
    np.testing.assert_allclose(x, y @ np.linalg.pinv(w).T, atol=1e-10)


def check_refuses_bad_targets(method, width: int) -> None:
    """A chain method given float64 targets of ``width`` values refuses a wrong width, another
    dtype and NaN, each with its message (one check in the bindings serves every method)."""
    with pytest.raises(ValueError, match=f"rows of {width} values"):
        method(np.zeros((2, width + 1)))
    with pytest.raises(TypeError, match="dtype"):
        method(np.zeros((2, width), np.float32))
    with pytest.raises(ValueError, match="finite"):
        method(np.full((2, width), np.nan))


def test_chain_validation(rng):
    w1, w2 = rng.standard_normal((8, 10)), rng.standard_normal((3, 7))
    with pytest.raises(ValueError, match="layer 1 takes 7 inputs but layer 0 gives 8"):
        vsfast.Chain([(w1, None, "selu"), (w2, None, None)])
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        vsfast.Chain([(w1, None, "relu")])
    with pytest.raises(ValueError, match="negative slope > 0"):
        vsfast.Chain([(w1, None, ("leaky_relu", 0.0))])
    with pytest.raises(ValueError, match="takes no parameter"):
        vsfast.Chain([(w1, None, ("tanh", 2.0))])
    with pytest.raises(ValueError, match="bias"):
        vsfast.Chain([(w1, np.zeros(3), "selu")])
    with pytest.raises(TypeError, match="triple"):
        vsfast.Chain([w1])
    with pytest.raises(TypeError, match="non-empty sequence"):
        vsfast.Chain([])
    chain = vsfast.Chain([(w1, None, "tanh")])
    check_refuses_bad_targets(chain.reconstruct, 8)
    with pytest.raises(ValueError, match="reference"):
        chain.reconstruct(np.zeros((2, 8)), reference=np.zeros((3, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain.reconstruct(np.zeros((2, 8)))  # in range: no warning


# ----------------------------------------------------------------------------- solve


def jacobian_reference(layers, x):
    """d chain / d x at each row of x, float64, by torch's autograd."""
    params = [(torch.as_tensor(np.asarray(w, np.float64)), None if b is None else torch.as_tensor(np.asarray(b, np.float64)),
               act) for w, b, act in layers]
    functions = {"identity": lambda z: z, "selu": torch.selu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}

    def f(v):
        for w, b, act in params:
            name, param = (act, None) if isinstance(act, str) else act
            z = w @ v + (0 if b is None else b)
            if name == "elu":
                v = torch.nn.functional.elu(z, alpha=param or 1.0)
            elif name == "leaky_relu":
                v = torch.nn.functional.leaky_relu(z, param or 0.01)
            else:
                v = functions[name](z)
        return v

    return np.stack([torch.func.jacrev(f)(torch.as_tensor(row, dtype=torch.float64)).numpy() for row in x])


SOLVE_CHAINS = {
    "selu-shrinking": ([40, 24, 12, 5], ["selu", "selu", "identity"]),
    "mixed": ([30, 20, 12, 6], ["tanh", ("elu", 0.5), "sigmoid"]),
    "leaky-one-layer": ([9, 4], [("leaky_relu", 0.2)]),
    "tall-first-layer": ([6, 10, 3], ["tanh", "identity"]),  # first layer of rank 6 < 10 outputs
}


@pytest.mark.parametrize("name", SOLVE_CHAINS)
def test_solve_step_is_the_minimum_norm_gauss_newton_step(rng, name):
    """One step from x0 towards a nearby target is x0 + pinv(J) r for autograd's Jacobian J: the
    core's Jacobian (from the output back, in the first layer's row space) is the chain's own."""
    widths, acts = SOLVE_CHAINS[name]
    layers = make_chain(rng, widths, acts)
    chain = vsfast.Chain(layers)
    x0 = rng.standard_normal((7, widths[0]))
    jac = jacobian_reference(layers, x0)
    y = forward_reference(layers, x0) + 1e-6 * np.einsum("bmn,bn->bm", jac, rng.standard_normal(x0.shape))
    solution = chain.solve(y, reference=x0, reference_layers="all", max_iter=1)
    assert np.all(solution.steps == 1)
    residual = y - forward_reference(layers, x0)
    expected = x0 + np.einsum("bnm,bm->bn", np.linalg.pinv(jac), residual)
    step = np.abs(expected - x0).max()
    np.testing.assert_allclose(solution.inputs, expected, rtol=0, atol=1e-7 * step)
    # Quadratic convergence: the error after one step is of the order of the residual squared.
    rel = np.linalg.norm(residual, axis=1) / np.linalg.norm(y, axis=1)
    assert np.all(solution.error <= 1e3 * rel**2 + 1e-14)
    np.testing.assert_allclose(solution.error, np.linalg.norm(forward_reference(layers, solution.inputs) - y, axis=1)
                               / np.linalg.norm(y, axis=1), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-13), (np.float32, 2e-5)])  # the default tol, 100 eps, and rounding
def test_solve_reaches_targets_beyond_the_chained_preimage(rng, dtype, bound):
    """Outputs of inputs deep in tanh's saturation: the chained preimage must clamp them, solve
    reaches them from a reference, moving only the first layer's row space."""
    layers = make_chain(rng, [30, 20, 12, 5], ["tanh", "tanh", "identity"], dtype=dtype)
    y = forward_reference(layers, 4 * rng.standard_normal((40, 30))).astype(dtype)
    chain = vsfast.Chain(layers)
    with pytest.warns(vsfast.RangeWarning):
        assert sum(chain.reconstruct(y).clamped) > 0
    start = rng.standard_normal((40, 30)).astype(dtype)
    solution = chain.solve(y, reference=start, reference_layers="all")
    assert solution.inputs.dtype == dtype and np.all(solution.steps > 0)
    true_error = np.linalg.norm(forward_reference(layers, solution.inputs) - y, axis=1) / np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(solution.error, true_error, rtol=1e-3, atol=10 * bound)
    # Gauss-Newton can stall in a local minimum of the residual far from a saturated target's
    # preimage: from these random starts, 1 target in 40 does (invert retries such targets from 0).
    assert np.sum(solution.error <= bound) >= 38
    w = np.asarray(layers[0][0], np.float64)
    null = vsfast.spaces(w).rejected
    np.testing.assert_allclose((solution.inputs - start) @ null, 0, atol=100 * np.finfo(dtype).eps * 4)
    # Without a reference: from 0, so the answer has no part in the null space.
    plain = chain.solve(y)
    assert np.all(plain.error <= bound)
    np.testing.assert_allclose(plain.inputs @ null, 0, atol=100 * np.finfo(dtype).eps * 4)
    # With the reference in the first layer only: the iteration from 0, plus its null-space part
    # (in float64 the same steps; float32's rounding of that part can send a step elsewhere).
    first = chain.solve(y, reference=start)
    assert np.all(first.error <= bound)
    _, kept = vsfast.project(start.astype(np.float64), vsfast.spaces(w))
    np.testing.assert_allclose((first.inputs - kept) @ null, 0, atol=100 * np.finfo(dtype).eps * 4)
    if dtype == np.float64:
        np.testing.assert_allclose(first.inputs, plain.inputs + kept, atol=1e-10)


@pytest.mark.parametrize("widths, acts", [
    ([30, 20, 12, 5], ["tanh", "selu", "identity"]),  # 3 chunks of 128 targets
    ([256, 256], ["tanh"]),  # wide outputs: chunks of 85 targets keep the Jacobians within 64 MiB
])
def test_solve_is_bitwise_independent_of_the_thread_count(rng, widths, acts):
    layers = make_chain(rng, widths, acts, dtype=np.float32)
    y = forward_reference(layers, 3 * rng.standard_normal((300, widths[0]))).astype(np.float32)
    chain = vsfast.Chain(layers)
    threads = vsfast.get_num_threads()
    try:
        vsfast.set_num_threads(1)
        one = chain.solve(y)
        vsfast.set_num_threads(3)
        three = chain.solve(y)
    finally:
        vsfast.set_num_threads(threads)
    np.testing.assert_array_equal(one.inputs, three.inputs)
    np.testing.assert_array_equal(one.steps, three.steps)


def test_solve_stops_on_targets_the_chain_cannot_output(rng):
    layers = make_chain(rng, [8, 6, 3], ["tanh", "sigmoid"])
    chain = vsfast.Chain(layers)
    y = np.array([[0.5, 0.5, 0.5], [0.5, 1.5, 0.5], [0.2, -0.3, 0.9]])  # sigmoid outputs lie in (0, 1)
    solution = chain.solve(y, max_iter=50)
    assert np.all(np.isfinite(solution.inputs))
    assert solution.error[0] < 1e-12 and np.all(solution.error[1:] > 0.1)
    assert np.all(solution.steps <= 50)
    # max_iter=0 evaluates the start only.
    still = chain.solve(y, reference=np.ones(8), reference_layers="all", max_iter=0)
    np.testing.assert_array_equal(still.inputs, np.ones((3, 8)))
    assert np.all(still.steps == 0)
    np.testing.assert_allclose(still.error, np.linalg.norm(forward_reference(layers, np.ones((3, 8))) - y, axis=1)
                               / np.linalg.norm(y, axis=1), rtol=1e-12)


def test_solve_with_a_blind_first_layer_keeps_the_reference(rng):
    chain = vsfast.Chain([(np.zeros((4, 6)), np.ones(4), "tanh"), (rng.standard_normal((2, 4)), None, None)])
    start = rng.standard_normal((3, 6))
    solution = chain.solve(rng.standard_normal((3, 2)), reference=start)
    np.testing.assert_array_equal(solution.inputs, start)
    assert np.all(solution.steps == 0)


def test_solve_validation(rng):
    chain = vsfast.Chain(make_chain(rng, [8, 5, 3], ["tanh", "identity"]))
    check_refuses_bad_targets(chain.solve, 3)
    with pytest.raises(ValueError, match="finite"):
        chain.solve(np.zeros((2, 3)), reference=np.full(8, np.inf))
    with pytest.raises(ValueError, match="reference: expected 1 or 2 rows"):
        chain.solve(np.zeros((2, 3)), reference=np.zeros((3, 8)))
    with pytest.raises(ValueError, match="rows of 8 values"):
        chain.solve(np.zeros((2, 3)), reference=np.zeros((2, 7)))
    with pytest.raises(ValueError, match="reference_layers"):
        chain.solve(np.zeros((2, 3)), reference_layers="some")
    with pytest.raises(ValueError, match="tol"):
        chain.solve(np.zeros((2, 3)), tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        chain.solve(np.zeros((2, 3)), max_iter=-1)
    single = chain.solve(np.full(3, 0.1))  # one target as a vector: one input back
    assert single.inputs.shape == (8,) and single.steps.shape == (1,)
    tensor = chain.solve(torch.full((2, 3), 0.1, dtype=torch.float64))
    assert isinstance(tensor.inputs, torch.Tensor) and tensor.inputs.shape == (2, 8)
