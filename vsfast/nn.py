"""Reading torch models: their weight matrices (:func:`weight_views`) and, for invertible
networks, their chains of linear maps and activations (:func:`chain_layers`)."""

from __future__ import annotations

import importlib
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WeightView", "activation_spec", "chain_layers", "conv_matrix", "load_model", "load_weights",
           "model_failures", "weight_views"]

CONV_VIEWS = ("patch", "kernel")
PARAMS = ("weights", "all")


@dataclass
class WeightView:
    """One weight matrix of a model, as it is analysed.

    ``matrix`` is a detached tensor (on the parameter's device): the m x n matrix, or, for the
    patch view of a grouped convolution, the (groups, m/groups, n/groups) blocks of its
    block-diagonal matrix. ``module`` is the module whose calls feed the matrix its inputs (its
    positional argument ``argument``: 0, 1, 2 for attention's query, key and value), None where
    the inputs are not split (embeddings, parameters read by opt-in, 3-D convolutions).
    """

    name: str
    kind: str
    view: str
    weight_shape: tuple[int, ...]
    matrix: Any
    module: Any = None
    argument: int = 0

    @property
    def blocks(self) -> int:
        return 1 if self.matrix.ndim == 2 else int(self.matrix.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """The matrix's shape (the whole block-diagonal matrix's for blocks)."""
        m, n = self.matrix.shape[-2:]
        return (self.blocks * int(m), self.blocks * int(n))


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


# ----------------------------------------------------------------------------- weight matrices


def _conv_types():
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d), (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_matrix(module: Any, view: str):
    """A convolution's weight as the matrix of the chosen view (a detached tensor).

    ``"kernel"``: every kernel as a row of its prod(kernel_size) values (out * in/groups rows).
    ``"patch"``: the exact linear map from one input patch to one output position, W as
    out x (in/groups * prod(kernel_size)); for a transposed convolution, whose weight is
    (in, out/groups, *kernel), the map from one input position's channels to the output patch
    it adds to, (out/groups * prod(kernel_size)) x in/groups. With groups > 1 the map is
    block-diagonal, one block per group: returned as the (groups, rows, columns) blocks.
    """
    convs, transposed = _conv_types()
    w = module.weight.detach()
    if view == "kernel":
        return w.reshape(-1, math.prod(w.shape[2:]))
    groups = module.groups
    blocks = w.reshape(groups, w.shape[0] // groups, -1)
    if isinstance(module, transposed):
        blocks = blocks.transpose(1, 2)
    return blocks[0] if groups == 1 else blocks


def _kind(module: Any) -> str:
    """"conv2d", "conv_transpose1d", ...: the convolution's kind from its class and rank."""
    convs, transposed = _conv_types()
    dims = len(module.kernel_size)
    return f"conv_transpose{dims}d" if isinstance(module, transposed) else f"conv{dims}d"


def _module_views(name: str, module: Any, conv_view: str) -> list[tuple[str, WeightView]]:
    """The weight matrices of a module of a known type, each with the parameter it reads."""
    from torch import nn

    convs, transposed = _conv_types()
    if isinstance(module, nn.Linear):
        return [("weight", WeightView(name, "linear", "dense", tuple(module.weight.shape), module.weight.detach(),
                                      module))]
    if isinstance(module, convs + transposed):
        # The patch view of a 1-D or 2-D convolution splits its inputs; a 3-D one, and the kernel
        # view of a transposed one (whose kernels each take a single input value), do not.
        splits = len(module.kernel_size) < 3 and (conv_view == "patch" or isinstance(module, convs))
        return [("weight", WeightView(name, _kind(module), conv_view, tuple(module.weight.shape),
                                      conv_matrix(module, conv_view), module if splits else None))]
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return [("weight", WeightView(name, "embedding", "dense", tuple(module.weight.shape), module.weight.detach()))]
    if isinstance(module, nn.MultiheadAttention):
        return _attention_views(name, module)
    if isinstance(module, nn.RNNBase):
        return [(pname, WeightView(_join(name, pname), "recurrent", "dense", tuple(p.shape), p.detach()))
                for pname, p in module.named_parameters(recurse=False) if pname.startswith("weight")]
    return []


def _attention_views(name: str, module: Any) -> list[tuple[str, WeightView]]:
    """Attention's query, key and value projections: the three row blocks of in_proj_weight, or
    q/k/v_proj_weight when key and value have their own widths. out_proj is a Linear child."""
    parts = "qkv"
    if module.in_proj_weight is not None:
        w = module.in_proj_weight.detach()
        e = w.shape[0] // 3
        return [("in_proj_weight", WeightView(_join(name, f"in_proj_weight[{p}]"), "attention", "dense",
                                              tuple(w.shape), w[i * e:(i + 1) * e], module, i))
                for i, p in enumerate(parts)]
    return [(f"{p}_proj_weight", WeightView(_join(name, f"{p}_proj_weight"), "attention", "dense",
                                             tuple(getattr(module, f"{p}_proj_weight").shape),
                                             getattr(module, f"{p}_proj_weight").detach(), module, i))
            for i, p in enumerate(parts)]


def _join(module: str, parameter: str) -> str:
    return f"{module}.{parameter}" if module else parameter


def weight_views(model: Any, *, params: str = "weights", conv_view: str = "patch",
                 tensor_rule=None) -> tuple[list[WeightView], list[tuple[str, str]]]:
    """Every weight matrix of ``model`` and every parameter left out, with the reason.

    Found by module type: Linear (its weight, out x in), Conv1d/2d/3d and ConvTranspose1d/2d/3d
    (see :func:`conv_matrix`), Embedding and EmbeddingBag (tokens x features), MultiheadAttention
    (query, key and value projections apart; out_proj is a Linear) and RNN/LSTM/GRU (every
    weight_ih/weight_hh, the gates stacked as torch stores them). A matrix is named after its
    module, or after its parameter where a module holds several (``attn.in_proj_weight[q]``).
    With ``params="all"``, every other parameter with two or more dimensions too, read by
    ``tensor_rule(name, shape)`` (the rules of :func:`vsfast.analysis.matrix_views`); by default
    they are listed as left out, as are 1-D parameters, a tensor shared with an earlier matrix
    (tied weights), and parameters without values (meta device, uninitialised lazy modules).
    """
    views: list[WeightView] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[int, str] = {}  # parameter id -> the first matrix that read it
    for mname, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        found = _module_views(mname, module, conv_view)
        for pname, view in found:
            reason = _unreadable(own[pname]) or _tied(own[pname], seen)
            if reason:
                skipped.append((view.name, reason))
            else:
                views.append(view)
        for pname, _ in found:  # after all of them: attention reads in_proj_weight three times
            if _unreadable(own[pname]) is None:
                seen.setdefault(id(own[pname]), _join(mname, pname))
        used = {pname for pname, _ in found}
        for pname, param in own.items():
            if pname not in used:
                found_views, reason = _other_parameter(_join(mname, pname), param, module, params, tensor_rule, seen)
                views += found_views
                if reason is not None:
                    skipped.append((_join(mname, pname), reason))
    return views, skipped


def _tied(param: Any, seen: dict[int, str]) -> str | None:
    return f"the same tensor as {seen[id(param)]}" if id(param) in seen else None


def _other_parameter(name: str, param: Any, module: Any, params: str, tensor_rule,
                     seen: dict[int, str]) -> tuple[list[WeightView], str | None]:
    """A parameter of no known layer: its matrices with params="all" (by tensor_rule), or why not."""
    reason = _unreadable(param) or _tied(param, seen)
    if reason is None and param.dim() < 2:
        reason = "1-D" if param.dim() == 1 else "a scalar"
    if reason is None and params != "all":
        reason = f"a parameter of {type(module).__name__}: params='all' analyses it"
    if reason is not None:
        return [], reason
    rule = tensor_rule(name, tuple(param.shape))
    if isinstance(rule, str):
        return [], rule
    seen[id(param)] = name
    return [WeightView(mv.name, mv.kind, mv.view, tuple(param.shape), mv.take(param.detach())) for mv in rule], None


def _unreadable(param: Any) -> str | None:
    from torch.nn.parameter import UninitializedParameter

    if isinstance(param, UninitializedParameter):
        return "not initialised (a lazy module that has not run)"
    if param.device.type == "meta":
        return "on the meta device (no values)"
    return None


# ----------------------------------------------------------------------------- models by name


def load_model(spec: str, *, weights: str | os.PathLike | None = None, device: Any = None):
    """A torch model named by a string, in eval mode: ``"torchvision:NAME"`` (built with random
    weights, seeded with 0, by ``torchvision.models.get_model``) or ``"package.module:factory"``
    (the module imported, from the current directory too, and ``factory()`` called). With
    ``weights``, a state dict file (.safetensors or .pt, see :mod:`vsfast.checkpoint`) is
    loaded into it, every name and shape matching; with ``device``, it is moved there.

    Every failure is one error naming the model or file and the cause: ValueError (unknown
    name, bad weights), ImportError (torch missing, a module that does not import) or
    RuntimeError (a factory that raised).
    """
    try:
        import torch
    except ImportError:
        raise ImportError(f"loading {spec} needs torch: pip install vsfast[torch]") from None
    torch.manual_seed(0)
    model = _torchvision(spec) if spec.startswith("torchvision:") else _from_factory(spec)
    if weights is not None:
        load_weights(model, weights)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _torchvision(spec: str):
    name = spec.removeprefix("torchvision:")
    try:
        import torchvision
    except ImportError:
        raise ImportError(f"{spec} needs torchvision: pip install vsfast[torch]") from None
    if name.lower() not in torchvision.models.list_models():
        raise ValueError(f"{spec}: no such torchvision model (torchvision.models.list_models() names them)")
    return torchvision.models.get_model(name.lower(), weights=None)


def _from_factory(spec: str):
    from torch import nn

    module_name, _, factory_name = spec.partition(":")
    if os.getcwd() not in sys.path:  # a user's own module sits where the command runs
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing a user's module may raise anything
        raise ImportError(f"{spec}: importing {module_name} failed ({type(exc).__name__}: {exc})") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"{spec}: {module_name} has no function {factory_name}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"{spec}: {factory_name}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}: {factory_name}() returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load the state dict in ``path`` (any checkpoint :mod:`vsfast.checkpoint` reads) into
    ``model``, in place; ValueError naming the file when its names or shapes do not match."""
    import torch

    from .checkpoint import Checkpoint, CheckpointError

    with Checkpoint(path) as reader:
        state = {info.name: torch.from_numpy(np.array(reader.read_stored(info))) for info in reader.tensors}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(path, f"does not fit the model: {text[:300]}") from None
