"""Reading torch models as chains of linear maps and activations."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

__all__ = ["activation_spec", "chain_layers", "model_failures"]


@contextmanager
def model_failures(shape: tuple[int, ...]):
    """Turns a model's own failure on a batch it cannot take (torch raises RuntimeError,
    IndexError, ...) into a ValueError that says which batch shape it was given."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"inputs: the model cannot run on a batch of shape {tuple(shape)} ({exc})") from exc


def activation_spec(module: Any) -> str | tuple[str, float] | None:
    """The core's name for an invertible torch activation module, or None if it is not one."""
    from torch import nn

    if isinstance(module, (nn.Identity, nn.Dropout)):
        return "identity"
    if isinstance(module, nn.SELU):
        return "selu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.ELU):
        return ("elu", float(module.alpha))
    if isinstance(module, nn.LeakyReLU):
        return ("leaky_relu", float(module.negative_slope)) if module.negative_slope > 0 else None
    return None


def chain_layers(model: Any, *, dtype: Any = None) -> list[tuple[Any, Any, Any]]:
    """The (W, b, activation) triples of a sequential network of Linear layers and invertible
    activations, for :class:`vsfast.Chain`.

    A leading ``nn.Flatten`` is allowed (inputs are then flattened images); dropout counts as
    identity, as in eval mode. Raises ValueError naming the first module that makes the network
    not an invertible chain (a ReLU, a convolution, a second activation in a row, ...).
    """
    from torch import nn

    # Iterating a Sequential yields every entry, a module used twice included (children() would not).
    modules = list(model) if isinstance(model, nn.Sequential) else None
    if not modules:
        raise ValueError(f"model: expected an nn.Sequential of Linear layers and activations, got "
                         f"{type(model).__name__}")
    if isinstance(modules[0], nn.Flatten):
        modules = modules[1:]
    layers: list[list[Any]] = []
    for index, module in enumerate(modules):
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
            bias = None if module.bias is None else module.bias.detach()
            if dtype is not None:
                weight = weight.to(dtype)
                bias = None if bias is None else bias.to(dtype)
            layers.append([weight, bias, "identity"])
            continue
        if isinstance(module, (nn.Identity, nn.Dropout)):
            continue
        act = activation_spec(module)
        if act is None:
            raise ValueError(f"model: module {index} ({module.__class__.__name__}) is not an invertible activation; "
                             "expected SELU, ELU, Tanh, Sigmoid, LeakyReLU (slope > 0), Identity or Dropout")
        if not layers or layers[-1][2] != "identity":
            raise ValueError(f"model: module {index} ({module.__class__.__name__}) does not follow a Linear layer")
        layers[-1][2] = act
    if not layers:
        raise ValueError("model: expected at least one Linear layer")
    return [tuple(layer) for layer in layers]
