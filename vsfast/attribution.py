"""Feature importance from the signal spaces (:func:`signal_attribution`).

A class logit z_c depends on the input x only through the first layer's W x, so its gradient
g = dz_c/dx lies in W's row space, the layer's signal space, and the part of x in the rejected
space (W's null space) changes neither W x nor z_c. Gradient x input (Shrikumar, Greenside,
Shcherbina & Kundaje, 2016; Ancona et al., ICLR 2018), a_i = g_i x_i, still spreads the
decision's linear term g^T x over every pixel of x, rejected part included. The signal
attribution spreads the same total over the part the layer keeps, P x (P the orthogonal
projector onto the signal space, the paper's signal component of the input):

    a_i = g_i (P x)_i,    sum_i a_i = g^T P x = g^T x.

It keeps gradient x input's completeness (the same sum) and adds an invariance: moving x within
the rejected space, which the network cannot see, moves neither the logit nor any a_i, where
gradient x input changes. See docs/experiments.md for how it ranks pixels against gradient x
input on the paper's networks.
"""

from __future__ import annotations

from typing import Any

from .linalg import project, spaces

__all__ = ["signal_attribution"]


def signal_attribution(model: Any, x: Any, target: Any = None, *, layer: Any = None):
    """Per-input-value attribution of each input's class logit: (P x) * dz/dx, P the projector
    onto the signal space of the layer that reads the input (the module's docstring).

    ``model``: a torch module whose first linear map is an ``nn.Linear`` that reads the input
    flattened (an FCNN: ``Flatten`` then ``Linear``), or name that module with ``layer`` (the
    module itself); checked by running the model. ``x``: a batch (B, ...). ``target``: the class
    per input (default: the model's prediction). The signal space is the weight's row space by
    the rank rule of :func:`vsfast.spaces`. Returns a tensor shaped like ``x``, in its dtype;
    each row sums to g^T x, the gradient x input total.
    """
    import torch

    if not isinstance(x, torch.Tensor) or x.ndim < 2 or 0 in x.shape or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point torch tensor (B, ...) of inputs, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    first = _first_linear(model) if layer is None else layer
    seen: list = []
    hook = first.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    inputs = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(inputs)
    finally:
        hook.remove()
    if not seen or seen[0].shape != (x.shape[0], x[0].numel()) or not torch.equal(seen[0].detach(), x.flatten(1)):
        raise ValueError(f"layer: {type(first).__name__} does not read the input flattened; signal_attribution "
                         "needs the layer whose weight sees the input itself")
    target = out.argmax(1) if target is None else torch.as_tensor(target, device=out.device).reshape(-1)
    if target.shape != (x.shape[0],) or target.min() < 0 or target.max() >= out.shape[1]:
        raise ValueError(f"target: expected one class in [0, {out.shape[1]}) per input, got {tuple(target.shape)}")
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None].long()).sum(), inputs)
    kept = project(x.detach().flatten(1).double(), spaces(first.weight.detach().double())).signal
    return (kept * grad.flatten(1).double()).reshape(x.shape).to(x.dtype)


def _first_linear(model: Any):
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            return module
    raise ValueError(f"model: {type(model).__name__} has no nn.Linear layer; name the layer that reads the input")
