"""The four spaces of every layer of a torch model, and what each layer keeps of real inputs.

>>> report = vsfast.analyze(model, images)        # one entry per Linear and Conv2d layer
>>> report["0"].rank, report["0"].rejected_fraction
>>> report.to_rows()                              # a table; report.to_json() for the rest

A Linear layer is its weight W (out x in). A Conv2d layer is a linear map in two views:
``"patch"`` — W as C_out x (C_in kh kw), the map from one input patch to the output channels
(the convolution is this map applied to every patch); ``"kernel"`` — every 2-D kernel as a row
of kh kw numbers, C_out C_in rows (the paper's view, which shows directional selectivity).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._arrays import values
from .linalg import Spaces, project, spaces
from .nn import model_failures

__all__ = ["LayerAnalysis", "LayerInputs", "Report", "analyze", "layer_matrix"]

CONV_VIEWS = ("patch", "kernel")

# Matrices up to this many entries go through the core in batches of equal shapes.
_BATCHED_ELEMENTS = 1 << 22


@dataclass
class LayerInputs:
    """A layer's inputs split by its spaces: ``signal + residual == inputs``.

    For a Conv2d layer the split is of the input patches (of single-channel patches in the
    kernel view), folded back into images with overlapping patches averaged; pixels no patch
    covers are all residual. ``rejected_fraction[i]`` is the share of input i's energy (its
    patches' energy for a convolution) in the layer's rejected space; 0 for an all-zero input.
    """

    inputs: np.ndarray
    signal: np.ndarray
    residual: np.ndarray
    rejected_fraction: np.ndarray


@dataclass
class LayerAnalysis:
    """One layer: its name in ``model.named_modules()``, the matrix analysed and its spaces."""

    name: str
    kind: str  # "linear" or "conv2d"
    view: str  # "dense", "patch" or "kernel"
    weight_shape: tuple[int, ...]
    spaces: Spaces
    inputs: LayerInputs | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.spaces.shape

    @property
    def rank(self) -> int:
        return self.spaces.rank

    @property
    def nullity(self) -> int:
        return self.spaces.nullity

    @property
    def condition_number(self) -> float:
        return self.spaces.condition_number

    @property
    def singular_values(self) -> np.ndarray:
        return np.asarray(self.spaces.singular_values)

    @property
    def energy_kept(self) -> float:
        return self.spaces.energy_kept

    @property
    def rejected_fraction(self) -> np.ndarray | None:
        return None if self.inputs is None else self.inputs.rejected_fraction

    def row(self) -> dict:
        m, n = self.shape
        s = self.singular_values
        row = {
            "layer": self.name, "kind": self.kind, "view": self.view, "rows": m, "columns": n,
            "rank": self.rank, "nullity": self.nullity, "condition_number": self.condition_number,
            "sigma_max": float(s[0]) if s.size else 0.0, "energy_kept": self.energy_kept,
            "method": self.spaces.method,
        }
        if self.inputs is not None:
            frac = self.inputs.rejected_fraction
            row["rejected_fraction_median"] = float(np.median(frac)) if frac.size else math.nan
            row["rejected_fraction_mean"] = float(np.mean(frac)) if frac.size else math.nan
        return row


class Report:
    """The analysis of a model: :class:`LayerAnalysis` entries in the order of
    ``model.named_modules()``, indexable by position or by layer name."""

    def __init__(self, layers: list[LayerAnalysis]):
        self.layers = layers
        self._by_name = {layer.name: layer for layer in layers}

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key: int | str) -> LayerAnalysis:
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(f"no analysed layer {key!r}; layers: {', '.join(self._by_name)}") from None
        return self.layers[key]

    def __repr__(self) -> str:
        return f"Report({len(self)} layers: {', '.join(self._by_name)})"

    def to_rows(self) -> list[dict]:
        """One dict per layer: shape, rank, nullity, condition number, sigma_max, energy kept,
        method, and the median and mean rejected fraction of the inputs when there were some."""
        return [layer.row() for layer in self.layers]

    def to_pandas(self):
        """:meth:`to_rows` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.to_rows())

    def to_dict(self) -> dict:
        """Everything but the bases and the input arrays: per layer its row, weight shape,
        singular values and, with inputs, every input's rejected fraction."""
        layers = []
        for layer in self.layers:
            entry = layer.row()
            entry["weight_shape"] = list(layer.weight_shape)
            entry["singular_values"] = [float(v) for v in layer.singular_values]
            if layer.inputs is not None:
                entry["rejected_fraction"] = [float(v) for v in layer.inputs.rejected_fraction]
            layers.append(entry)
        return {"layers": layers}

    def to_json(self, **kwargs) -> str:
        # inf (a rank-0 layer's condition number) is not JSON: write it as null.
        return json.dumps(jsonable(self.to_dict()), **kwargs)

    def to_csv(self, path) -> None:
        import csv

        rows = self.to_rows()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def jsonable(value):
    """value with non-finite floats replaced by None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


# ----------------------------------------------------------------------------- layers as matrices


def _check_conv(module, name: str, view: str) -> None:
    if view == "patch" and module.groups != 1:
        raise ValueError(f"layer {name!r}: a grouped convolution (groups={module.groups}) is not one patch map; "
                         "use conv_view='kernel', which analyses every kernel whatever the grouping")


def layer_matrix(module, name: str = "", conv_view: str = "patch"):
    """The matrix a Linear or Conv2d module is analysed as (a detached torch tensor), with its
    kind and view; None for other modules."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.weight.detach(), "linear", "dense"
    if isinstance(module, nn.Conv2d):
        _check_conv(module, name, conv_view)
        w = module.weight.detach()
        if conv_view == "patch":
            return w.reshape(w.shape[0], -1), "conv2d", "patch"
        return w.reshape(-1, w.shape[-2] * w.shape[-1]), "conv2d", "kernel"
    return None


_UNANALYSED = ("Conv1d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Bilinear")


def analyze(model: Any, inputs: Any = None, *, method: str = "auto", k: int | None = None,
            conv_view: str = "patch", dtype: Any = None, progress: bool = False) -> Report:
    """The four spaces of every Linear and Conv2d layer of ``model``, and, given ``inputs``, the
    signal and residual parts of what reaches each of them.

    Parameters
    ----------
    model : torch.nn.Module (on the CPU).
    inputs : a batch for ``model`` (array or tensor), optional. It is run through the model in
        eval mode, without gradients; forward pre-hooks capture each analysed layer's input.
    method, k : as in :func:`vsfast.spaces`: ``"auto"`` takes the exact SVD unless k is well
        below a layer's smaller side, then the randomized one. With k, each layer gets its top
        min(k, rows, columns) triplets. Layers of equal shape go through one batched call.
    conv_view : ``"patch"`` or ``"kernel"`` (see the module docstring). Grouped convolutions
        have no single patch map: they need ``"kernel"``.
    dtype : compute in float32 or float64 (default: each weight's dtype).
    progress : show a progress bar over the decompositions.

    Returns
    -------
    Report

    Raises
    ------
    ValueError : no Linear or Conv2d layer, a grouped convolution in the patch view, or inputs
        the model refuses. TypeError : a model that is not a torch module.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if conv_view not in CONV_VIEWS:
        raise ValueError(f"conv_view: expected 'patch' or 'kernel', got {conv_view!r}")
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")

    found, skipped = [], []
    for name, module in model.named_modules():
        matrix = layer_matrix(module, name, conv_view)
        if matrix is not None:
            found.append((name, module, *matrix))
        elif type(module).__name__ in _UNANALYSED:
            skipped.append(f"{name} ({type(module).__name__})")
    if not found:
        raise ValueError(f"model: no Linear or Conv2d layer to analyse in {type(model).__name__}")
    if skipped:
        warnings.warn(f"not analysed (only Linear and Conv2d are): {', '.join(skipped)}", stacklevel=2)

    decomposed = _decompose([(name, w) for name, _, w, _, _ in found], method, k, dtype, progress)
    captured = _capture(model, [(name, module) for name, module, *_ in found], inputs) if inputs is not None else {}
    layers = []
    for name, module, w, kind, view in found:
        sp = decomposed[name]
        entry = LayerAnalysis(name, kind, view, tuple(module.weight.shape), sp)
        if name in captured:
            entry.inputs = _split_inputs(module, view, sp, captured[name])
        layers.append(entry)
    return Report(layers)


def _decompose(matrices: list[tuple[str, Any]], method: str, k: int | None, dtype, progress: bool) -> dict:
    """Spaces of every matrix; those of equal shape and dtype in one batched call."""
    import torch

    groups: dict[tuple, list[tuple[str, Any]]] = defaultdict(list)
    for name, w in matrices:
        w = w.cpu() if dtype is None else w.cpu().to(getattr(torch, np.dtype(dtype).name))
        if w.dtype not in (torch.float32, torch.float64):
            w = w.float()
        # A large matrix keeps every thread busy alone: batching it would only cost a copy.
        key = (tuple(w.shape), w.dtype) if w.numel() <= _BATCHED_ELEMENTS else (name,)
        groups[key].append((name, w))
    bar = _progress(len(matrices), progress)
    result = {}
    for members in groups.values():
        shape = tuple(members[0][1].shape)
        layer_k = None if k is None else min(k, *shape)
        batch = members[0][1] if len(members) == 1 else torch.stack([w for _, w in members])
        found = spaces(batch, k=layer_k, method=method)
        for (name, _), sp in zip(members, found if isinstance(found, list) else [found]):
            result[name] = sp
        bar.update(len(members))
    bar.close()
    return result


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="spaces", unit="layer", disable=not enabled, leave=False,
                delay=1.0)  # quick runs stay silent


def _capture(model, modules: list[tuple[str, Any]], inputs: Any) -> dict[str, Any]:
    """Each module's first positional input when ``model`` runs on ``inputs`` (eval mode)."""
    import torch

    x = values(inputs)
    if x.dtype.kind != "f":
        raise TypeError(f"inputs: expected floating-point values, got {x.dtype}")
    if x.ndim < 2 or x.size == 0:
        raise ValueError(f"inputs: expected a non-empty batch, N x the model's input shape, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("inputs: expected finite values, found NaN or inf")
    batch = torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))).to(next(model.parameters()).dtype)
    captured: dict[str, Any] = {}

    def hook_for(name):
        def hook(_module, args):
            captured[name] = args[0].detach()
        return hook

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), model_failures(batch.shape):
            model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured


def _split_inputs(module, view: str, sp: Spaces, x) -> LayerInputs:
    import torch

    x = x.to(torch.float64 if sp.dtype == np.float64 else torch.float32)
    if view == "dense":
        rows = x.reshape(-1, x.shape[-1])
        signal, residual = project(rows, sp)
        n = x.shape[0]
        fraction = _fraction(residual.reshape(n, -1), rows.reshape(n, -1))
        return LayerInputs(x.numpy(), signal.reshape(x.shape).numpy(), residual.reshape(x.shape).numpy(), fraction)
    return _split_conv_inputs(module, view, sp, x)


def _fraction(residual, whole) -> np.ndarray:
    """Per row: squared norm of residual over that of whole (0 where whole is 0)."""
    res = (residual.double() ** 2).sum(dim=1).numpy()
    tot = (whole.double() ** 2).sum(dim=1).numpy()
    return np.divide(res, tot, out=np.zeros_like(res), where=tot > 0)


def _conv_padding(module) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of a Conv2d, its string forms included."""
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    if module.padding == "valid":
        return (0, 0, 0, 0)
    if module.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = module.padding
    return (pw, pw, ph, ph)


def _split_conv_inputs(module, view: str, sp: Spaces, x) -> LayerInputs:
    """Unfold the input into patches, split them, fold both parts back (overlaps averaged)."""
    import torch
    from torch.nn import functional as F

    n, c, h, w = x.shape
    left, right, top, bottom = _conv_padding(module)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    images = x if view == "patch" else x.reshape(n * c, 1, h, w)
    padded = F.pad(images, (left, right, top, bottom), mode=mode)
    geometry = dict(kernel_size=module.kernel_size, dilation=module.dilation, stride=module.stride)
    patches = F.unfold(padded, **geometry)  # (images, patch length, patches)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    signal, residual = project(rows, sp)

    size = padded.shape[-2:]
    count = F.fold(torch.ones_like(patches), output_size=size, **geometry)

    def fold(part):
        folded = F.fold(part.reshape(patches.shape[0], -1, patches.shape[1]).transpose(1, 2), output_size=size,
                        **geometry)
        folded = torch.where(count > 0, folded / count.clamp(min=1), torch.zeros_like(folded))
        return folded[..., top:top + h, left:left + w].reshape(n, c, h, w)

    signal_images = fold(signal)
    # Pixels that no patch covers reach the layer not at all: their value is all residual.
    residual_images = x - signal_images
    per_input = patches.shape[0] // n
    fraction = _fraction(residual.reshape(n, -1), rows.reshape(n, -1)) if per_input else np.zeros(n)
    return LayerInputs(x.numpy(), signal_images.numpy(), residual_images.numpy(), fraction)
