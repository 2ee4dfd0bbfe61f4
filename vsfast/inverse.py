"""Inputs that make a network produce chosen outputs.

>>> targets = class_targets(outputs_on_training_data, labels)      # the paper's per-class targets
>>> result = invert(model, targets, reference="class-mean")
>>> result.inputs, result.error, result.predicted

``method="pinv"`` inverts an invertible chain (Linear layers and invertible activations). With a
box (the default for image models: pixels in [0, 1]) the answer is the input inside the box
nearest the reference whose outputs are the target, through the whole chain
(:meth:`vsfast.Chain.solve_box`); targets with no preimage inside the box are reported with how
far outside it the nearest one found lies. Without a box the chain is walked backwards through
the core's chained pseudoinverse: exact, and the first layer's rejected space is free for a
reference image. When that preimage leaves an activation's range somewhere (a SELU output below
-lambda*alpha, say), the target is solved for through the forward map instead, which never leaves
a range: Gauss-Newton steps with the pseudoinverse of the chain's Jacobian, from the reference
(:meth:`vsfast.Chain.solve`).
``method="optimize"`` searches any differentiable model's input by gradient steps inside the
box.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arrays import check_int, check_tolerance, values
from .linalg import Chain, RangeWarning
from .nn import model_failures

__all__ = ["Inversion", "class_targets", "invert", "model_outputs", "onehot_targets"]

METHODS = ("auto", "pinv", "optimize")


@dataclass
class Inversion:
    """The result of :func:`invert`, one row per target.

    inputs : (N, *input shape) numpy array, in the computation's dtype.
    outputs : (N, outputs) the model's outputs at ``inputs`` (float64).
    error : (N,) relative output error ||f(x) - y|| / ||y||.
    method : "pinv" or "optimize".
    iterations : (N,) optimiser iterations spent on each target (0: the chain alone was exact).
    clamped : per layer, the entries of the direct chained preimage that fell outside an
        activation's range (pinv without a box); empty otherwise.
    tol : the relative error at which a target counts as reached.
    box : the (low, high) bounds the inputs were kept in, or None.
    violation : (N,) with a box, the largest distance of an input value outside it: 0 for
        inputs inside it; for a pinv target with no preimage found inside the box, that of the
        preimage returned. None without a box.
    reference : (N, *input shape) the reference each target's input was sought near (for
        ``reference="nearest"``, the training input chosen), or None.
    """

    inputs: np.ndarray
    outputs: np.ndarray
    error: np.ndarray
    method: str
    iterations: np.ndarray
    clamped: tuple[int, ...] = ()
    tol: float = 1e-4
    box: tuple[float, float] | None = None
    violation: np.ndarray | None = None
    reference: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.outputs.argmax(axis=1)

    @property
    def reached(self) -> np.ndarray:
        return self.error <= self.tol

    @property
    def inside(self) -> np.ndarray:
        """Per target: its input lies inside the box (all True without a box)."""
        return np.ones(len(self.error), dtype=bool) if self.violation is None else self.violation == 0

    @property
    def feasible(self) -> np.ndarray:
        """Per target: reached with an input inside the box."""
        return self.reached & self.inside


# ----------------------------------------------------------------------------- targets


def class_targets(outputs: Any, labels: Any, *, low: float = 0.0, high: float = 100.0) -> np.ndarray:
    """Per class c, the target output vector of the paper: output c at the ``high`` percentile
    of its values on the training examples of class c, every other output at the ``low``
    percentile of its values on those examples (``high=100, low=0``: the maximum and the minimum,
    the paper's choice). ``high`` may be an array of percentiles: then one target per class and
    percentile (row ``c * len(high) + i``), with ``low = 100 - high`` unless given.

    Returns an (classes * len(high), classes) float64 array.
    """
    outputs, labels = _numbers(outputs, "outputs"), values(labels)
    if outputs.ndim != 2 or labels.shape != (len(outputs),):
        raise ValueError(f"outputs, labels: expected N x classes and N labels, got {outputs.shape} and {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected integer class labels, got dtype {labels.dtype}")
    classes = outputs.shape[1]
    highs = np.atleast_1d(_numbers(high, "high"))
    lows = 100 - highs if np.ndim(high) and low == 0.0 else np.broadcast_to(_numbers(low, "low"), highs.shape)
    if not np.all((highs >= 0) & (highs <= 100) & (lows >= 0) & (lows <= 100)):
        raise ValueError("low, high: percentiles must lie in [0, 100]")
    targets = np.empty((classes, len(highs), classes))
    for c in range(classes):
        own = outputs[labels == c]
        if not len(own):
            raise ValueError(f"labels: no example of class {c}")
        for i, (lo, hi) in enumerate(zip(lows, highs)):
            targets[c, i] = np.percentile(own, lo, axis=0)
            targets[c, i, c] = np.percentile(own[:, c], hi)
    return targets.reshape(-1, classes)


def _numbers(x: Any, name: str) -> np.ndarray:
    """x as finite float64 values, or a TypeError / ValueError naming the argument."""
    try:
        a = np.asarray(values(x), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected numbers, got {type(x).__name__}") from exc
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return a


def onehot_targets(classes: int = 10, *, high: float = 10.0, low: float = -10.0) -> np.ndarray:
    """One target per class: ``high`` for the class's output, ``low`` for the others."""
    classes = check_int(classes, "classes", low=1)
    targets = np.full((classes, classes), _numbers(low, "low").item())
    np.fill_diagonal(targets, _numbers(high, "high").item())
    return targets


# ----------------------------------------------------------------------------- inversion


def invert(model: Any, targets: Any, *, method: str = "auto", reference: Any = None,
           reference_layers: str = "first", data: Any = None,
           dtype: Any = None, tol: float = 1e-4, max_iter: int | None = None, lr: float = 0.05,
           optimizer: str = "adam", box: Any = "auto", progress: bool = False) -> Inversion:
    """Inputs whose outputs through ``model`` are ``targets``.

    Parameters
    ----------
    model : torch.nn.Module on the CPU. For ``"pinv"``: an ``nn.Sequential`` of Linear layers
        and invertible activations (a leading Flatten allowed), see
        :func:`vsfast.nn.chain_layers`.
    targets : (N, outputs) array or tensor.
    method : ``"pinv"``, ``"optimize"`` or ``"auto"`` (pinv when the model is an invertible
        chain, else optimize).
    reference : None (pinv: the minimum-norm answer; optimize: starts from mid-grey), an input
        (one, or one per target), ``"class-mean"`` (the mean training input of each target's
        class, its largest output), ``"nearest"`` (the training input of that class nearest, in
        input space, to the answer found from the class mean; the answer is then sought near
        it) or ``"nearest-output"`` (the training input of that class whose output is nearest
        the target). pinv with a box seeks the input nearest it; pinv without one puts it in the
        first layer's rejected space; optimize starts from it (without one, from mid-grey inputs;
        a convolutional model's are then taken to be MNIST-sized, C x 28 x 28).
    reference_layers : pinv without a box: ``"first"`` fills only the first layer's rejected space with the
        reference; ``"all"`` fills every layer's with the reference's own activations there, so
        the hidden values resemble the reference's too (the chain then stays in range for targets
        near the reference's outputs, see :meth:`vsfast.Chain.reconstruct`). For the targets the
        range repair solves, ``"all"`` starts Gauss-Newton at the reference; ``"first"`` also
        starts it at the reference's rejected part alone and keeps the answer closer to the
        reference.
    data : (inputs, labels) to take the string references from, e.g. a training set
        (``vsfast.mnist.load("train")`` for the paper's networks); required with them.
    dtype : computation dtype, float32 or float64; default float64 for pinv (exact answers),
        the model's own for optimize.
    tol : relative output error at which a target counts as reached (pinv's range repair goes on
        to the dtype's rounding level, see :meth:`vsfast.Chain.solve`).
    max_iter : optimize: optimiser iterations at most (default 500); pinv: Gauss-Newton steps
        at most, of the box solve (default 30) or of the range repair (default 200).
    lr, optimizer : optimize: the step size and ``"adam"`` or ``"lbfgs"``.
    box : the (low, high) bounds of every input value, or None (unbounded); ``"auto"``:
        (0, 1) for image models (inputs of 28 x 28 pixels), None otherwise. pinv finds inputs
        inside it (:meth:`vsfast.Chain.solve_box`); a target with no preimage found inside it
        gets the exact preimage nearest the box answer, and its ``violation`` says how far
        outside the box that lies. optimize keeps its inputs inside it by projection after each
        step.
    progress : show a progress bar (optimize).

    Returns
    -------
    Inversion

    Raises
    ------
    ValueError : unknown method, a model that is not an invertible chain with ``method="pinv"``,
        targets of the wrong width, a reference of the wrong shape.
    """
    import torch

    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if method == "auto":
        method = "pinv" if _is_chain(model) else "optimize"
    if dtype is None:
        dtype = np.float64 if method == "pinv" else _parameter_dtype(model)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    tol = check_tolerance(tol, "tol")
    box = _box(model, box)
    if max_iter is None:
        max_iter = 500 if method == "optimize" else 30 if box is not None else 200
    max_iter = check_int(max_iter, "max_iter", low=0)
    if reference_layers not in ("first", "all"):
        raise ValueError(f"reference_layers: expected 'first' or 'all', got {reference_layers!r}")
    if method == "optimize" and optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {optimizer!r}")
    y = _targets(targets)

    def run(ref: np.ndarray | None) -> Inversion:
        if method == "pinv" and box is not None:
            result = _invert_box(model, y, ref, box, dtype, tol, max_iter)
        elif method == "pinv":
            result = _invert_pinv(model, y, ref, reference_layers, dtype, tol, max_iter)
        else:
            result = _invert_optimize(model, y, ref, dtype, tol, max_iter, lr, optimizer, box, progress)
        result.reference = ref
        return result

    if isinstance(reference, str) and reference == "nearest":
        images, labels = _training_data(data, reference)
        first = run(_reference(model, "class-mean", y, data, dtype))
        return run(_nearest_input(images, labels, first.inputs, y.argmax(axis=1)).astype(dtype))
    return run(_reference(model, reference, y, data, dtype))


def _box(model, box: Any) -> tuple[float, float] | None:
    """The box as (low, high) floats or None; "auto" is (0, 1) for image models."""
    if box is None:
        return None
    if isinstance(box, str):
        if box != "auto":
            raise ValueError(f"box: expected (low, high), None or 'auto', got {box!r}")
        return (0.0, 1.0) if len(_input_shape(model)) == 3 else None
    try:
        low, high = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box: expected (low, high), None or 'auto', got {box!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"box: expected finite (low, high) with low < high, got {box!r}")
    return low, high


def _targets(targets: Any) -> np.ndarray:
    y = values(targets)
    if y.dtype.kind not in "fiu":
        raise TypeError(f"targets: expected real numbers, got {y.dtype}")
    y = y.astype(np.float64)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"targets: expected a non-empty N x outputs array, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets: contains NaN or inf")
    if not np.all(np.isfinite(row_norms(y))):  # the relative errors would be inf / inf
        raise ValueError("targets: the norm of a target exceeds float64's range")
    return y


def _parameter_dtype(model) -> np.dtype:
    parameter = next(model.parameters(), None)
    return np.dtype(np.float64) if parameter is not None and parameter.dtype.is_floating_point and \
        parameter.element_size() == 8 else np.dtype(np.float32)


def _is_chain(model) -> bool:
    from .nn import chain_layers

    try:
        chain_layers(model)
    except ValueError:
        return False
    return True


def _input_shape(model) -> tuple[int, ...]:
    """The shape of one input: the first layer's inputs, as images when the model flattens them."""
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if first is None:
        raise ValueError("model: no Linear or Conv2d layer to take the input size from")
    if isinstance(first, nn.Linear):
        return (1, 28, 28) if first.in_features == 784 else (first.in_features,)
    return (first.in_channels, 28, 28)


def _reference(model, reference, y: np.ndarray, data, dtype) -> np.ndarray | None:
    """The reference as an (N, *input shape) array, or None."""
    if reference is None:
        return None
    shape = _input_shape(model)
    if isinstance(reference, str):
        if reference not in ("class-mean", "nearest", "nearest-output"):
            raise ValueError(f"reference: expected an input, 'class-mean', 'nearest' or 'nearest-output', "
                             f"got {reference!r}")
        images, labels = _training_data(data, reference)
        classes = y.argmax(axis=1)
        if reference == "class-mean":
            means = {c: images[labels == c].mean(axis=0) for c in set(classes.tolist())}
            ref = np.stack([means[c] for c in classes])
        elif reference == "nearest-output":
            ref = _nearest(model, images, labels, y, classes)
        else:  # "nearest" needs an answer first: invert() takes it from the class mean's
            raise AssertionError("reference='nearest' is resolved by invert()")
    else:
        ref = values(reference)
        if ref.dtype.kind not in "fiu":
            raise TypeError(f"reference: expected real numbers, got {ref.dtype}")
    size = math.prod(shape)
    if ref.size == size:
        ref = np.broadcast_to(ref.reshape(shape), (len(y), *shape))
    elif ref.size != len(y) * size or len(ref) != len(y):
        raise ValueError(f"reference: expected one input of shape {shape} or one per target ({len(y)}), "
                         f"got shape {ref.shape}")
    ref = np.array(ref, dtype=dtype).reshape(len(y), *shape)
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference: contains NaN or inf")
    return ref


def _training_data(data, reference: str) -> tuple[np.ndarray, np.ndarray]:
    if data is None:
        raise ValueError(f"data: reference={reference!r} needs the (inputs, labels) to take it from, "
                         "e.g. vsfast.mnist.load('train')")
    try:
        images, labels = data
    except (TypeError, ValueError):
        raise ValueError("data: expected an (inputs, labels) pair") from None
    images, labels = values(images).astype(np.float32, copy=False), values(labels)
    if len(images) != len(labels):
        raise ValueError(f"data: {len(images)} inputs but {len(labels)} labels")
    return images, labels


def model_outputs(model, images: np.ndarray, batch: int = 2000) -> np.ndarray:
    """The model's outputs (float64) for a batch of inputs, computed in slices without gradients."""
    import torch

    parameter = next(model.parameters())
    with torch.no_grad(), model_failures(images.shape):
        return np.concatenate([model(torch.as_tensor(images[i:i + batch]).to(parameter.dtype)).double().numpy()
                               for i in range(0, len(images), batch)])


def _nearest_input(images: np.ndarray, labels: np.ndarray, inputs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per row of ``inputs``, the image of ``images`` of that row's class nearest it (Euclidean
    distance in input space)."""
    chosen = []
    for x, c in zip(inputs, classes):
        members = images[labels == c]
        if not len(members):
            raise ValueError(f"data: no example of class {c} for reference='nearest'")
        flat = members.reshape(len(members), -1).astype(np.float64)
        chosen.append(members[np.argmin(np.sum((flat - x.reshape(1, -1)) ** 2, axis=1))])
    return np.stack(chosen)


def _nearest(model, images, labels, y, classes) -> np.ndarray:
    chosen = []
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for target, c in zip(y, classes):
        if c not in cache:
            members = images[labels == c]
            if not len(members):
                raise ValueError(f"data: no example of class {c} for reference='nearest-output'")
            cache[c] = (members, model_outputs(model, members))
        members, outputs = cache[c]
        chosen.append(members[np.argmin(np.linalg.norm(outputs - target, axis=1))])
    return np.stack(chosen)


def _relative_error(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    norms = row_norms(y)
    return row_norms(outputs - y) / np.where(norms > 0, norms, 1.0)


def row_norms(a):
    """The Euclidean norm of each row of a numpy array or torch tensor, taken after dividing the
    row by its largest magnitude: no square overflows, even for targets of 1e300 (a constant
    factor, so gradients through it are those of the plain norm)."""
    if isinstance(a, np.ndarray):
        peak = np.abs(a).max(axis=1, keepdims=True, initial=0)
        return np.linalg.norm(a / np.where(peak > 0, peak, 1), axis=1) * peak[:, 0]
    peak = a.detach().abs().amax(dim=1, keepdim=True)
    return (a / peak.clamp(min=1e-300)).norm(dim=1) * peak[:, 0]


# ----------------------------------------------------------------------------- pinv


def _invert_pinv(model, y: np.ndarray, ref: np.ndarray | None, reference_layers: str, dtype, tol: float,
                 max_iter: int) -> Inversion:
    import torch

    from .nn import chain_layers

    layers = chain_layers(model, dtype=getattr(torch, dtype.name))
    chain = Chain(layers)
    if y.shape[1] != chain.output_dim:
        raise ValueError(f"targets: expected rows of {chain.output_dim} outputs, got shape {y.shape}")
    shape = _input_shape(model) if ref is None else ref.shape[1:]
    yt = y.astype(dtype)
    flat_ref = None if ref is None else ref.reshape(len(y), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RangeWarning)
        direct = chain.reconstruct(yt, reference=flat_ref, reference_layers=reference_layers)
    x = direct.inputs  # a fresh array of the core's: the repair writes into it
    outputs = chain.forward(x).astype(np.float64)
    error = _relative_error(outputs, y)
    iterations = np.zeros(len(y), dtype=np.int64)
    # The direct chain is exact to rounding wherever it stayed in range; the rest is solved for.
    stray = np.flatnonzero(error > min(tol, 1000 * np.finfo(dtype).eps))
    if len(stray) and any(direct.clamped):
        warnings.warn(f"the chained preimage of {len(stray)} target(s) leaves the activation range "
                      f"(entries clamped per layer: {list(direct.clamped)}); solving for an in-range preimage "
                      "through the forward map", RangeWarning, stacklevel=3)
        x[stray], iterations[stray] = _solve(chain, yt[stray], None if flat_ref is None else flat_ref[stray],
                                             reference_layers, tol, max_iter)
        outputs[stray] = chain.forward(x[stray])
        error = _relative_error(outputs, y)
        if np.any(error > tol):
            warnings.warn(f"{int(np.sum(error > tol))} target(s) not reached to a relative error of {tol:g}: "
                          "they may lie outside what the network can output", RangeWarning, stacklevel=3)
    return Inversion(x.reshape(len(y), *shape), outputs, error, "pinv", iterations, tuple(direct.clamped), tol)


def _solve(chain: Chain, y: np.ndarray, reference: np.ndarray | None, reference_layers: str, tol: float,
           max_iter: int):
    """Chain.solve to rounding level. With a reference, Gauss-Newton starts at it (the inside of
    the chain then stays near the reference's too); with ``reference_layers="first"`` it also
    starts at the reference's part in the first layer's rejected space alone (the minimum-norm
    answer plus that part), and the answer closer to the reference wins: from far targets that
    one can be closer. With ``"all"``, only the targets on which Gauss-Newton stalled short of
    ``tol`` (a local minimum of the residual where activations saturate) get the second start.
    Returns (inputs, steps)."""
    rounding = min(tol, chain.rounding_level)
    if reference is None:
        solved = chain.solve(y, tol=rounding, max_iter=max_iter)
        return solved.inputs, solved.steps
    solved = chain.solve(y, reference=reference, reference_layers="all", tol=rounding, max_iter=max_iter)
    x, steps, error = solved.inputs, solved.steps, solved.error  # fresh arrays of the core's
    rows = np.arange(len(y)) if reference_layers == "first" else np.flatnonzero(error > tol)
    if len(rows):
        other = chain.solve(y[rows], reference=reference[rows], reference_layers="first", tol=rounding,
                            max_iter=max_iter)
        reached, reached_other = error[rows] <= tol, other.error <= tol
        closer = row_norms(other.inputs - reference[rows]) < row_norms(x[rows] - reference[rows])
        take = np.where(reached == reached_other, np.where(reached, closer, other.error < error[rows]), reached_other)
        x[rows[take]] = other.inputs[take]
        steps[rows] += other.steps
    return x, steps


def _invert_box(model, y: np.ndarray, ref: np.ndarray | None, box: tuple[float, float], dtype, tol: float,
                max_iter: int) -> Inversion:
    """Chain.solve_box to rounding level; the targets it leaves short of ``tol`` (no preimage
    found inside the box, or a stalled search) get the exact preimage nearest its answer, from
    Chain.solve started there, and the box violation of that."""
    import torch

    from .nn import chain_layers

    chain = Chain(chain_layers(model, dtype=getattr(torch, dtype.name)))
    if y.shape[1] != chain.output_dim:
        raise ValueError(f"targets: expected rows of {chain.output_dim} outputs, got shape {y.shape}")
    shape = _input_shape(model) if ref is None else ref.shape[1:]
    rounding = min(tol, chain.rounding_level)
    solved = chain.solve_box(y.astype(dtype), box=box, reference=None if ref is None else ref.reshape(len(y), -1),
                             tol=rounding, max_iter=max_iter)
    x, steps, violation = solved.inputs, solved.steps, solved.violation
    short = np.flatnonzero(solved.error > tol)
    if len(short):
        exact = chain.solve(y[short].astype(dtype), reference=x[short], reference_layers="all", tol=rounding,
                            max_iter=max(max_iter, 200))
        better = exact.error < solved.error[short]
        x[short[better]] = exact.inputs[better]
        steps[short] += exact.steps
        low, high = box
        outside = np.maximum(low - x[short], x[short] - high).max(axis=1)
        violation[short] = np.maximum(outside, 0.0)
    outputs = chain.forward(x).astype(np.float64)
    return Inversion(x.reshape(len(y), *shape), outputs, _relative_error(outputs, y), "pinv", steps, (), tol, box,
                     violation)


# ----------------------------------------------------------------------------- optimize


def _invert_optimize(model, y, ref, dtype, tol, max_iter, lr, optimizer, box, progress) -> Inversion:
    import copy

    import torch
    from tqdm.auto import tqdm

    shape = _input_shape(model) if ref is None else ref.shape[1:]
    tdtype = getattr(torch, dtype.name)
    net = model if next(model.parameters()).dtype == tdtype else copy.deepcopy(model).to(tdtype)
    was_training = net.training
    net.eval()
    start = np.full((len(y), *shape), 0.5 if box is None else (box[0] + box[1]) / 2) if ref is None else ref
    x = torch.tensor(start, dtype=tdtype)
    if box is not None:
        x.clamp_(*box)
    x.requires_grad_(True)
    target = torch.from_numpy(y)  # float64: the squares of float32 residuals never overflow there
    norms = torch.from_numpy(row_norms(y)).clamp(min=1e-300)
    iterations = np.full(len(y), max_iter, dtype=np.int64)
    active = torch.ones(len(y), dtype=torch.bool)
    reached = x.detach().clone()  # the inputs of the targets already reached

    def residual_norms():
        return row_norms(net(x).double() - target)

    opt = (torch.optim.Adam([x], lr=lr) if optimizer == "adam" else
           torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=20, line_search_fn="strong_wolfe"))
    bar = tqdm(total=max_iter, desc="invert", unit="step", disable=not progress, leave=False,
               delay=1.0)
    try:
        with torch.no_grad(), model_failures(x.shape):
            initial = residual_norms()  # a model that cannot take these inputs says so here
        # Each target's loss is its residual over a fixed scale no smaller than its starting
        # residual: the gradients of tiny or huge targets then stay within float32's range.
        loss_scale = torch.maximum(norms, initial).clamp(min=1e-30)
        for step in range(max_iter):
            def closure():
                opt.zero_grad()
                loss = ((residual_norms() / loss_scale)[active] ** 2).sum()
                # The gradient for x alone: the model's parameters are left as they are.
                (grad,) = torch.autograd.grad(loss, x)
                grad[~active] = 0  # reached targets stay where they are
                x.grad = grad
                return loss

            opt.step(closure)
            with torch.no_grad():
                if box is not None:
                    x.clamp_(*box)
                x[~active] = reached[~active]  # Adam's momentum would move them on
                err = residual_norms() / norms
            done = active & (err <= tol)
            iterations[done.numpy()] = step + 1
            with torch.no_grad():
                reached[done] = x[done]
            active &= ~done
            bar.set_postfix(worst=f"{float(err.max()):.2e}", left=int(active.sum()), refresh=False)
            bar.update()
            if not active.any():
                break
        with torch.no_grad():
            outputs = net(x).double().numpy()
    finally:
        bar.close()
        net.train(was_training)
    inputs = x.detach().numpy()
    violation = None if box is None else np.zeros(len(y))  # kept inside by the projection
    return Inversion(inputs, outputs, _relative_error(outputs, y), "optimize", iterations, (), tol, box, violation)
