"""What a model's weight matrices keep of real inputs: the inputs run through the model a batch
at a time, and forward pre-hooks split each matrix's inputs by its spaces as they pass, keeping
per-input sums (all inputs) and the split arrays of the first few only."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._arrays import values
from .linalg import Spaces, project
from .nn import WeightView, model_failures

__all__ = ["split_inputs"]

log = logging.getLogger("vsfast.analysis")


def split_inputs(model: Any, targets: list[tuple[WeightView, Spaces]], inputs: Any, batch_size: int,
                 keep: int) -> list[Any]:
    """Per target, the :class:`vsfast.analysis.LayerInputs` of its matrix's inputs when
    ``model`` runs on ``inputs`` (eval mode, no gradients), or None where they are not split
    (no module feeds it, or the module was never called)."""
    import torch

    x = _checked(inputs)
    param = next(model.parameters())
    splitters = [_splitter(view, sp, len(x), keep) for view, sp in targets]
    by_module: dict[int, tuple[Any, list[_Split]]] = {}
    for view, split in zip((v for v, _ in targets), splitters):
        if split is not None:
            by_module.setdefault(id(view.module), (view.module, []))[1].append(split)

    def hook_for(splits):
        def hook(_module, args, kwargs):
            for split in splits:
                split.add(args, kwargs)
        return hook

    handles = [module.register_forward_pre_hook(hook_for(splits), with_kwargs=True)
               for module, splits in by_module.values()]
    was_training = model.training
    try:
        model.eval()
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start:start + batch_size]).to(device=param.device, dtype=param.dtype)
            for split in splitters:
                if split is not None:
                    split.begin(start, len(batch))
            with torch.no_grad(), model_failures(tuple(batch.shape)):
                model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [None if split is None else split.result() for split in splitters]


def _checked(inputs: Any) -> np.ndarray:
    x = values(inputs)
    if x.dtype.kind != "f":
        raise TypeError(f"inputs: expected floating-point values, got {x.dtype}")
    if x.ndim < 2 or x.size == 0:
        raise ValueError(f"inputs: expected a non-empty batch, N x the model's input shape, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("inputs: expected finite values, found NaN or inf")
    return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))


def _splitter(view: WeightView, sp: Spaces, total: int, keep: int):
    from torch import nn

    module = view.module
    if module is None:
        return None
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return _PixelSplit(view, sp, total, keep)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return _PatchSplit(view, sp, total, keep)
    return _RowSplit(view, sp, total, keep)


class _Split:
    """Accumulates, per input, the residual's and the whole's squared norms over every call of
    the module within a batch, and keeps the first call's split arrays for the first inputs."""

    def __init__(self, view: WeightView, sp: Spaces, total: int, keep: int):
        self.view, self.sp, self.keep = view, sp, keep
        self.residual_energy = np.zeros(total)
        self.energy = np.zeros(total)
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.start = self.count = 0
        self.first_call = True
        self.calls = 0
        self.unattributed = False

    def begin(self, start: int, count: int) -> None:
        self.start, self.count, self.first_call = start, count, True

    def add(self, args: tuple, kwargs: dict) -> None:
        import torch

        x = self.argument(args, kwargs)
        if x is None or self.unattributed:
            return
        x = self.batch_first(x.detach())
        if x is None or x.shape[0] != self.count:
            self.unattributed = True
            log.warning("%s: its inputs are not split: the module's input does not have one entry per input",
                        self.view.name)
            return
        x = x.to(torch.float64 if self.sp.dtype == np.float64 else torch.float32)
        signal, residual, rows, rejected = self.split(x)
        span = slice(self.start, self.start + self.count)
        self.residual_energy[span] += _energy(rejected, self.count)
        self.energy[span] += _energy(rows, self.count)
        if self.first_call and (self.start < self.keep or self.start == 0):
            n = max(0, min(self.count, self.keep - self.start))
            self.kept.append(tuple(t[:n].cpu().numpy() for t in (x, signal, residual)))
        self.first_call = False
        self.calls += 1

    def argument(self, args: tuple, kwargs: dict):
        return args[0] if args else next(iter(kwargs.values()), None)

    def batch_first(self, x):
        return x

    def result(self):
        from .analysis import LayerInputs

        if self.calls == 0 or self.unattributed:
            return None
        fraction = np.divide(self.residual_energy, self.energy, out=np.zeros_like(self.energy),
                             where=self.energy > 0)
        parts = [np.concatenate(arrays) for arrays in zip(*self.kept)]
        return LayerInputs(parts[0], parts[1], parts[2], fraction)


def _energy(rows, count: int) -> np.ndarray:
    """Per input: the squared norm of its rows (rows grouped by input, inputs first)."""
    return (rows.double() ** 2).reshape(count, -1).sum(dim=1).cpu().numpy()


class _RowSplit(_Split):
    """A dense matrix (Linear, attention's projections): the input's last axis is its rows."""

    _NAMES = ("query", "key", "value")

    def argument(self, args: tuple, kwargs: dict):
        index = self.view.argument
        if len(args) > index:
            return args[index]
        return kwargs.get(self._NAMES[index]) if self.view.kind == "attention" else super().argument(args, kwargs)

    def batch_first(self, x):
        if self.view.kind == "attention":
            if x.dim() == 2:  # an unbatched sequence
                return x.unsqueeze(0)
            return x if self.view.module.batch_first else x.transpose(0, 1)
        return x

    def split(self, x):
        rows = x.reshape(-1, x.shape[-1])
        signal, residual = project(rows, self.sp)
        return signal.reshape(x.shape), residual.reshape(x.shape), rows, residual


class _PixelSplit(_Split):
    """A transposed convolution in the patch view: each input position's channel vector goes
    through the matrix on its own, so the split is per position, exactly."""

    def split(self, x):
        channels_last = x.movedim(1, -1)
        rows = channels_last.reshape(-1, x.shape[1])
        signal, residual = project(rows, self.sp)
        back = channels_last.shape
        return (signal.reshape(back).movedim(-1, 1), residual.reshape(back).movedim(-1, 1), rows, residual)


class _PatchSplit(_Split):
    """A 1-D or 2-D convolution: unfold the input into patches (single-channel ones in the
    kernel view), split them, fold both parts back with overlapping patches averaged. A 1-D
    convolution is a 2-D one of height 1."""

    def split(self, x):
        import torch
        from torch.nn import functional as F

        flat = x.dim() == 3
        images = x.unsqueeze(2) if flat else x
        n, c, h, w = images.shape
        kernel, dilation, stride, (left, right, top, bottom), mode = _conv_geometry(self.view.module)
        if self.view.view == "kernel":
            images = images.reshape(n * c, 1, h, w)
        padded = F.pad(images, (left, right, top, bottom), mode=mode)
        geometry = dict(kernel_size=kernel, dilation=dilation, stride=stride)
        patches = F.unfold(padded, **geometry)  # (images, patch length, patches)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        signal, residual = project(rows, self.sp)

        size = padded.shape[-2:]
        count = F.fold(torch.ones_like(patches), output_size=size, **geometry)
        folded = F.fold(signal.reshape(patches.shape[0], -1, patches.shape[1]).transpose(1, 2), output_size=size,
                        **geometry)
        folded = torch.where(count > 0, folded / count.clamp(min=1), torch.zeros_like(folded))
        signal_images = folded[..., top:top + h, left:left + w].reshape(n, c, h, w)
        # Pixels that no patch covers reach the layer not at all: their value is all residual.
        residual_images = images.reshape(n, c, h, w) - signal_images
        if flat:
            signal_images, residual_images = signal_images.squeeze(2), residual_images.squeeze(2)
        return signal_images, residual_images, rows, residual


def _conv_geometry(module):
    """(kernel, dilation, stride, (left, right, top, bottom), padding mode) of a Conv2d, or of a
    Conv1d as a 2-D convolution of height 1; string paddings resolved."""
    pairs = (lambda t: tuple(t)) if len(module.kernel_size) == 2 else (lambda t: (1, *t))
    kernel, dilation, stride = pairs(module.kernel_size), pairs(module.dilation), pairs(module.stride)
    if module.padding == "valid":
        pad = (0, 0, 0, 0)
    elif module.padding == "same":
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        pad = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        ph, pw = (0, *module.padding) if len(module.padding) == 1 else module.padding
        pad = (pw, pw, ph, ph)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return kernel, dilation, stride, pad, mode
