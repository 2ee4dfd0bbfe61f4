"""Every weight matrix of a model or a checkpoint: its four spaces, its spectrum, the metrics
spectral tools report, and what it keeps of real inputs.

>>> report = vsfast.analyze(model, images)             # a torch module, inputs optional
>>> report = vsfast.analyze("path/to/checkpoint")      # .safetensors, a shard directory, a .pt
>>> report["encoder.layer.0.attention.self.query.weight"].alpha
>>> report.to_rows()                                   # a table; to_json(), to_csv(), to_pandas()

A matrix is W (rows x columns) as torch stores a Linear weight (out x in). A convolution is a
linear map in two views (:func:`vsfast.nn.conv_matrix`): ``"patch"``, the map from one input
patch to the output channels (block-diagonal for a grouped convolution; from one input position
to an output patch for a transposed one), and ``"kernel"``, every kernel as a row (the paper's
view, which shows directional selectivity). The metrics (``sigma_max``, ``frobenius_norm``,
``stable_rank``, ``effective_rank``, numerical rank, ``energy_kept``, ``alpha``) are defined,
with their references, in :mod:`vsfast.metrics`.

Checkpoint tensors become matrices by the rules of :func:`matrix_views`. For the distributed
analysis of a checkpoint, :func:`vsfast.checkpoint.list_tensors` lists its tensors and
:func:`analyze_tensor` analyses one of them from a path and a name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from . import checkpoint as ckpt
from ._arrays import check_int, is_tensor, values
from .config import get_num_threads
from .linalg import Spaces, _choose_method, _weight_spectrum, rsvd, spaces
from .metrics import SpectralMetrics, frobenius_norm, spectral_metrics
from .nn import CONV_VIEWS, PARAMS, WeightView, weight_views

__all__ = ["DEFAULT_K", "FULL_SPECTRUM_SIDE", "LayerAnalysis", "LayerInputs", "MatrixView", "Report", "analyze",
           "analyze_tensor", "layer_matrix", "matrix_views"]

log = logging.getLogger(__name__)

#: With k=None a matrix whose smaller side is at most this (and that has at most
#: FULL_SPECTRUM_ELEMENTS entries) gets its whole spectrum; a larger one its top DEFAULT_K.
FULL_SPECTRUM_SIDE = 2048
FULL_SPECTRUM_ELEMENTS = 1 << 24
DEFAULT_K = 256
# A checkpoint tensor whose kernel dimensions all stay within this is read as a convolution.
MAX_KERNEL = 128
# Matrices up to this many entries go through the core in batches of equal shapes, at most
# _BATCH_BYTES of them per call: one call spreads them over the threads.
_BATCHED_ELEMENTS = 1 << 22
_BATCH_BYTES = 64 << 20


@dataclass
class LayerInputs:
    """A layer's inputs split by its spaces: ``signal + residual == inputs``.

    ``rejected_fraction[i]`` is the share of input i's energy in the layer's rejected space (of
    its patches' energy for a convolution; 0 for an all-zero input), for every input. The arrays
    ``inputs``, ``signal`` and ``residual`` hold the first ``keep_inputs`` inputs only (see
    :func:`analyze`). For a convolution the split is of the input patches, folded back into
    images with overlapping patches averaged; pixels no patch covers are all residual.
    """

    inputs: np.ndarray
    signal: np.ndarray
    residual: np.ndarray
    rejected_fraction: np.ndarray


@dataclass
class LayerAnalysis:
    """One matrix: its name (a module's, a parameter's or a checkpoint tensor's), what it is,
    the matrix analysed, its computed singular values and metrics, and for a module's matrix
    its spaces (:attr:`spaces`)."""

    name: str
    kind: str  # "linear", "conv2d", "conv_transpose1d", "attention", "embedding", "matrix", ...
    view: str  # "dense", "patch" or "kernel"
    weight_shape: tuple[int, ...]
    shape: tuple[int, int]
    singular_values: np.ndarray = field(repr=False)
    method: str  # "exact" or "randomized"
    metrics: SpectralMetrics = field(repr=False)
    inputs: LayerInputs | None = field(default=None, repr=False)
    _spaces: Spaces | None = field(default=None, repr=False)
    _make_spaces: Callable[[], Spaces] | None = field(default=None, repr=False, compare=False)

    @property
    def spaces(self) -> Spaces | None:
        """The matrix's :class:`vsfast.Spaces` (its four subspaces), as many triplets as
        :attr:`k`: for a module's matrix, computed on first access from the model's weight (or
        with the analysis, when it split inputs), then kept; None for a checkpoint's, which the
        analysis does not keep."""
        if self._spaces is None and self._make_spaces is not None:
            self._spaces = self._make_spaces()
        return self._spaces

    @property
    def k(self) -> int:
        """How many singular values were computed (min(rows, columns) for the whole spectrum)."""
        return int(self.singular_values.size)

    @property
    def rank(self) -> int:
        return self.metrics.numerical_rank

    @property
    def nullity(self) -> int:
        return self.shape[1] - self.rank

    @property
    def condition_number(self) -> float:
        return self.metrics.condition_number

    @property
    def energy_kept(self) -> float:
        return self.metrics.energy_kept

    @property
    def sigma_max(self) -> float:
        return self.metrics.sigma_max

    @property
    def frobenius_norm(self) -> float:
        return self.metrics.frobenius_norm

    @property
    def stable_rank(self) -> float:
        return self.metrics.stable_rank

    @property
    def effective_rank(self) -> float:
        return self.metrics.effective_rank

    @property
    def alpha(self) -> float:
        return self.metrics.alpha

    @property
    def rejected_fraction(self) -> np.ndarray | None:
        return None if self.inputs is None else self.inputs.rejected_fraction

    def row(self) -> dict:
        m, n = self.shape
        mt = self.metrics
        row = {
            "layer": self.name, "kind": self.kind, "view": self.view, "rows": m, "columns": n, "k": self.k,
            "method": self.method, "rank": self.rank, "nullity": self.nullity,
            "condition_number": mt.condition_number, "sigma_max": mt.sigma_max, "frobenius_norm": mt.frobenius_norm,
            "stable_rank": mt.stable_rank, "effective_rank": mt.effective_rank, "alpha": mt.alpha,
            "energy_kept": mt.energy_kept,
        }
        if self.inputs is not None:
            frac = self.inputs.rejected_fraction
            row["rejected_fraction_median"] = float(np.median(frac)) if frac.size else math.nan
            row["rejected_fraction_mean"] = float(np.mean(frac)) if frac.size else math.nan
        return row


class Report:
    """The analysis of a model or checkpoint: :class:`LayerAnalysis` entries (a module's in the
    order of ``named_modules()``, a checkpoint's by name, numbers in names counted as numbers),
    indexable by position or name; ``skipped`` lists what was not analysed, as (name, reason)."""

    def __init__(self, layers: list[LayerAnalysis], skipped: list[tuple[str, str]] | None = None,
                 source: str = ""):
        self.layers = layers
        self.skipped = list(skipped or [])
        self.source = source
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
        """One dict per layer: shape, k (singular values computed), method, rank, nullity,
        condition number, sigma_max, frobenius_norm, stable_rank, effective_rank, alpha,
        energy_kept, and the median and mean rejected fraction of the inputs when there were some."""
        return [layer.row() for layer in self.layers]

    def to_pandas(self):
        """:meth:`to_rows` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.to_rows())

    def to_dict(self) -> dict:
        """Everything but the bases and the input arrays: per layer its row, weight shape, the
        power-law fit's x_min, KS distance and tail size, the singular values and, with inputs,
        every input's rejected fraction; the skipped tensors; the source."""
        layers = []
        for layer in self.layers:
            entry = layer.row()
            entry["weight_shape"] = list(layer.weight_shape)
            entry["alpha_xmin"] = layer.metrics.alpha_xmin
            entry["alpha_ks_distance"] = layer.metrics.alpha_ks_distance
            entry["alpha_tail"] = layer.metrics.alpha_tail
            entry["singular_values"] = [float(v) for v in layer.singular_values]
            if layer.inputs is not None:
                entry["rejected_fraction"] = [float(v) for v in layer.inputs.rejected_fraction]
            layers.append(entry)
        return {"source": self.source, "layers": layers,
                "skipped": [{"name": name, "reason": reason} for name, reason in self.skipped]}

    def to_json(self, **kwargs) -> str:
        # inf (a rank-0 layer's condition number) and NaN (a metric not computed) are not JSON:
        # they are written as null.
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


# ----------------------------------------------------------------------------- tensors as matrices


class MatrixView(NamedTuple):
    """One matrix a tensor holds: its name, kind, view, shape, and how to take it from the
    tensor (numpy array or torch tensor of the tensor's shape; a view where the layout allows)."""

    name: str
    kind: str
    view: str
    shape: tuple[int, int]
    take: Callable[[Any], Any]


def matrix_views(name: str, shape: tuple[int, ...], conv_view: str = "patch") -> list[MatrixView] | str:
    """How a checkpoint tensor (or, with ``params="all"``, a module's other parameter) is
    analysed: the :class:`MatrixView` list of the matrices it holds, or the reason it holds none.

    The rules, by shape and name:

    - leading axes of size 1 are dropped down to two dimensions (ViT's ``pos_embedding``
      (1, 197, 768) is a 197 x 768 matrix); what has fewer than two dimensions left is skipped
      ("1-D"), as is an empty tensor;
    - two dimensions: the matrix as stored (rows x columns; a Linear weight is out x in). A
      ``...in_proj_weight`` of shape (3e, e) is attention's query, key and value projections
      stacked: three e x e matrices ``name[q]``, ``name[k]``, ``name[v]``;
    - three to five dimensions whose trailing ones (all but the first two) are each at most
      ``MAX_KERNEL`` and whose name has no ``experts`` part: a convolution kernel in PyTorch's
      layout (out, in/groups, *kernel), in ``conv_view`` (a checkpoint does not record groups or
      transposition: the patch view is out x (in/groups * prod(kernel)), exact for groups=1; for
      a transposed convolution it is the exact map's transpose, with the same singular values);
    - any other tensor of three or more dimensions: a stack of matrices over its leading axes
      (mixture-of-experts weights (experts, out, in)), one matrix ``name[i]`` per index of the
      flattened leading axes.
    """
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims.pop(0)
    if any(d == 0 for d in dims):
        return f"empty, shape {tuple(shape)}"
    if len(dims) < 2:
        return "1-D" if len(dims) == 1 else "a scalar"
    m, n = dims[-2:]
    if len(dims) == 2:
        if name.endswith("in_proj_weight") and m == 3 * n:
            return [MatrixView(f"{name}[{p}]", "attention", "dense", (n, n),
                               lambda t, i=i: t.reshape(m, n)[i * n:(i + 1) * n]) for i, p in enumerate("qkv")]
        return [MatrixView(name, "matrix", "dense", (m, n), lambda t: t.reshape(m, n))]
    kernel = dims[2:]
    if len(dims) <= 5 and max(kernel) <= MAX_KERNEL and "experts" not in name.split("."):
        size = math.prod(kernel)
        kind = f"conv{len(kernel)}d"
        if conv_view == "kernel":
            rows = math.prod(dims) // size
            return [MatrixView(name, kind, "kernel", (rows, size), lambda t: t.reshape(rows, size))]
        columns = math.prod(dims[1:])
        return [MatrixView(name, kind, "patch", (dims[0], columns), lambda t: t.reshape(dims[0], columns))]
    count = math.prod(dims[:-2])
    return [MatrixView(f"{name}[{i}]", "stacked", "dense", (m, n), lambda t, i=i: t.reshape(count, m, n)[i])
            for i in range(count)]


def layer_matrix(module, name: str = "", conv_view: str = "patch"):
    """The matrix a Linear or convolution module is analysed as (a detached torch tensor; the
    whole block-diagonal matrix for a grouped convolution's patch view), with its kind and
    view; None for other modules."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.weight.detach(), "linear", "dense"
    views = weight_views(module, conv_view=conv_view)[0] if isinstance(module, _conv_modules()) else []
    if not views:
        return None
    matrix = views[0].matrix
    if matrix.ndim == 3:
        import torch

        matrix = torch.block_diag(*matrix)
    return matrix, views[0].kind, views[0].view


def _conv_modules() -> tuple:
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# ----------------------------------------------------------------------------- the plan


@dataclass
class _Item:
    """A matrix to analyse: how to get it (a matrix, or the blocks of a block-diagonal one),
    and how to hand its memory back after."""

    name: str
    kind: str
    view: str
    weight_shape: tuple[int, ...]
    shape: tuple[int, int]
    blocks: int
    dtype: str  # the stored dtype's name
    device: str
    get: Callable[[], Any]
    release: Callable[[], None] = lambda: None
    source: WeightView | None = None


def _check_options(method, k, conv_view, params, dtype, batch_size, keep_inputs):
    if method not in ("auto", "exact", "randomized"):
        raise ValueError(f"method: expected 'auto', 'exact' or 'randomized', got {method!r}")
    if not (k is None or k == "all"):
        check_int(k, "k", low=1)
    if k == "all" and method == "randomized":
        raise ValueError("k='all' asks for every singular value: use method 'auto' or 'exact'")
    if conv_view not in CONV_VIEWS:
        raise ValueError(f"conv_view: expected 'patch' or 'kernel', got {conv_view!r}")
    if params not in PARAMS:
        raise ValueError(f"params: expected 'weights' or 'all', got {params!r}")
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    check_int(batch_size, "batch_size", low=1)
    check_int(keep_inputs, "keep_inputs", low=0)


def analyze(model: Any, inputs: Any = None, *, method: str = "auto", k: int | str | None = None,
            conv_view: str = "patch", params: str = "weights", dtype: Any = None, batch_size: int = 64,
            keep_inputs: int = 100, bases: bool = False, device: Any = None, progress: bool = False) -> Report:
    """Every weight matrix of a torch model or a checkpoint: spectrum, metrics, spaces, and,
    given ``inputs``, the signal and residual parts of what reaches each matrix.

    Parameters
    ----------
    model : a torch.nn.Module (analysed on the device its parameters are on: a CUDA model on
        the GPU, through vsfast's CUDA module), or the path of a checkpoint: a ``.safetensors``
        file, a directory of shards with its index JSON (``save_pretrained``'s layout), or a
        ``.pt``/``.pth``/``.bin`` state dict (see :mod:`vsfast.checkpoint`). A checkpoint is read
        one tensor at a time from a memory map whose pages are handed back after each, so memory
        stays a few matrices' worth beyond what the file's pages need.
    inputs : for a module, a batch for it (array or tensor, N x the model's input shape). It
        goes through the model in eval mode, without gradients, ``batch_size`` inputs at a time;
        forward pre-hooks split each analysed matrix's inputs as they pass and keep the per-input
        rejected fraction of all of them, and the split arrays of the first ``keep_inputs``.
    method, k : how much of each spectrum. ``k=None``: the whole spectrum (exact; of float32
        weights from their float64 Gram matrix, see docs/analysis.md) of a matrix whose smaller
        side is at most ``FULL_SPECTRUM_SIDE`` (2048) and that has at most 2^24 entries, the top
        ``DEFAULT_K`` (256) singular triplets of a larger one, through the randomized SVD.
        ``k="all"``: every spectrum whole. An integer: the top min(k, rows,
        columns) of each, ``method`` choosing as in :func:`vsfast.spaces` (``"auto"``:
        randomized when k is well below the smaller side). Metrics that need the whole spectrum
        (``effective_rank``) are NaN for a partial one; ``alpha`` then fits the top k's tail
        (see :mod:`vsfast.metrics`).
    conv_view : ``"patch"`` or ``"kernel"`` (see :func:`vsfast.nn.conv_matrix`).
    params : ``"weights"`` (the matrices of known layer types, :func:`vsfast.nn.weight_views`)
        or ``"all"`` (every parameter of two or more dimensions, the others by the rules of
        :func:`matrix_views`). A checkpoint's tensors always follow :func:`matrix_views`.
    dtype : compute in float32 or float64 (default: float64 weights in float64, the others in
        float32).
    bases : for a module, compute every matrix's :class:`vsfast.Spaces` with the analysis, in
        batches of equal shapes, rather than each on its first use (``layer.spaces``); implied by
        ``inputs``. A checkpoint's analysis keeps no bases.
    device : for a checkpoint, where to compute: None or ``"cpu"``, or a torch CUDA device
        (each tensor is copied there in turn; needs torch and vsfast's CUDA module).
    progress : show a progress bar over the matrices (needs tqdm).

    Returns
    -------
    Report (with ``skipped``: 1-D tensors, non-float ones, tied weights, and the like, each with
    its reason).

    Raises
    ------
    ValueError : nothing to analyse, bad options, inputs the model refuses, a checkpoint that
    cannot be read (:class:`vsfast.checkpoint.CheckpointError`, naming the file and the cause).
    TypeError : a model that is neither a module nor a path. ImportError : torch needed and
    missing (a module, a torch file, a CUDA device), with the line that installs it.
    """
    _check_options(method, k, conv_view, params, dtype, batch_size, keep_inputs)
    if not isinstance(bases, bool):
        raise TypeError(f"bases: expected True or False, got {bases!r}")
    if isinstance(model, (str, os.PathLike)):
        if inputs is not None or bases:
            raise ValueError(f"{'inputs' if inputs is not None else 'bases'}: a checkpoint holds weights only; "
                             "load it into its model for inputs and bases")
        return _analyze_checkpoint(Path(model), method=method, k=k, conv_view=conv_view, dtype=dtype,
                                   device=device, progress=progress)
    if not is_tensor_module(model):
        raise TypeError(f"model: expected a torch.nn.Module or the path of a checkpoint, got {type(model).__name__}")
    if device is not None:
        raise ValueError("device: a module is analysed where its parameters are; move it with model.to(device)")
    return _analyze_module(model, inputs, method=method, k=k, conv_view=conv_view, params=params, dtype=dtype,
                           batch_size=batch_size, keep_inputs=keep_inputs, bases=bases or inputs is not None,
                           progress=progress)


def is_tensor_module(model: Any) -> bool:
    """Whether model is a torch.nn.Module (without importing torch: without it, none can exist)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _analyze_module(model, inputs, *, method, k, conv_view, params, dtype, batch_size, keep_inputs, bases,
                    progress) -> Report:
    views, skipped = weight_views(model, params=params, conv_view=conv_view,
                                  tensor_rule=lambda name, shape: matrix_views(name, shape, conv_view))
    if not views:
        raise ValueError(f"model: no weight matrix to analyse in {type(model).__name__}"
                         + ("" if params == "all" else " (params='all' reads every parameter of 2+ dimensions)"))
    items = [_Item(v.name, v.kind, v.view, v.weight_shape, v.shape, v.blocks, _dtype_name(v.matrix),
                   str(v.matrix.device), lambda v=v: v.matrix, source=v) for v in views]
    layers = list(_analyzed(items, method, k, dtype, bases, progress))
    if inputs is not None:
        from ._inputs import split_inputs

        for layer, parts in zip(layers, split_inputs(model, [(item.source, layer.spaces) for item, layer
                                                             in zip(items, layers)], inputs, batch_size, keep_inputs)):
            layer.inputs = parts
    return Report(layers, skipped, source=type(model).__name__)


def _natural(name: str) -> list:
    """A sort key in which the numbers within a name count as numbers (layers.2 before layers.10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _checkpoint_items(reader: ckpt.Checkpoint, infos, conv_view: str, device) -> tuple[list[_Item], list]:
    """The matrices of a checkpoint's tensors (read lazily, handed back after) and what is skipped."""
    items, skipped = [], []
    for info in infos:
        rule = matrix_views(info.name, info.shape, conv_view)
        if isinstance(rule, str):
            skipped.append((info.name, rule))
            continue
        if info.dtype not in ckpt.FLOAT_DTYPES:
            skipped.append((info.name, f"dtype {info.dtype}, not a floating-point weight"))
            continue
        for mv in rule:
            get = (lambda info=info, take=mv.take: _on_device(take(reader.read(info)), device))
            items.append(_Item(mv.name, mv.kind, mv.view, info.shape, mv.shape, 1, info.dtype, str(device or "cpu"),
                               get, lambda info=info: reader.release(info)))
    return items, skipped


def _on_device(a: np.ndarray, device):
    """A checkpoint's matrix where the analysis computes: the numpy array itself on the CPU."""
    if device is None or str(device) == "cpu":
        return a
    try:
        import torch
    except ImportError:
        raise ckpt.torch_required(f"device={device!r}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that a read-only memory map is not writable: it only reads it
        return torch.as_tensor(a, device=device)


def _analyze_checkpoint(path: Path, *, method, k, conv_view, dtype, device, progress) -> Report:
    with ckpt.Checkpoint(path) as reader:
        items, skipped = _checkpoint_items(reader, reader.tensors, conv_view, device)
        if not items:
            raise ckpt.CheckpointError(path, f"no tensor of two or more dimensions to analyse among "
                                             f"{len(reader.tensors)}")
        layers = list(_analyzed(items, method, k, dtype, False, progress))
    layers.sort(key=lambda layer: _natural(layer.name))
    return Report(layers, skipped, source=str(path))


def analyze_tensor(path: str | os.PathLike, name: str, *, method: str = "auto", k: int | str | None = None,
                   conv_view: str = "patch", dtype: Any = None, device: Any = None) -> list[LayerAnalysis]:
    """The analysis of ONE tensor of a checkpoint, by name: the matrices it holds by the rules
    of :func:`matrix_views` (one; three for an ``in_proj_weight``; one per expert of a stack),
    each a :class:`LayerAnalysis` with its spectrum and metrics, exactly as :func:`analyze`
    computes them for the whole checkpoint (same options). Made for one task of a distributed
    analysis: it takes a path and a name, reads that tensor only, and returns small results
    (no bases). ``path`` may be the checkpoint or the file that holds the tensor
    (``TensorInfo.file`` from :func:`vsfast.checkpoint.list_tensors`): then only that file's
    header is read. ValueError when the tensor is not a matrix (the reason is in the message)."""
    _check_options(method, k, conv_view, "weights", dtype, 1, 0)
    with ckpt.Checkpoint(path) as reader:
        info = reader.info(name)
        items, skipped = _checkpoint_items(reader, [info], conv_view, device)
        if skipped:
            raise ValueError(f"{path}: tensor {name!r} is not analysed: {skipped[0][1]}")
        return list(_analyzed(items, method, k, dtype, False, False))


# ----------------------------------------------------------------------------- decomposition


def _spectrum(k, method: str, m: int, n: int) -> tuple[int | None, str]:
    """(top-k or None for all, "exact" or "randomized") for an m x n matrix (see analyze's k)."""
    q = min(m, n)
    small = q <= FULL_SPECTRUM_SIDE and m * n <= FULL_SPECTRUM_ELEMENTS
    if k == "all" or (k is None and (method == "exact" or small)):
        return None, "exact"
    layer_k = min(DEFAULT_K if k is None else int(k), q)
    return layer_k, _choose_method(method, layer_k, m, n)


def _compute_dtype(a, dtype):
    """float64 stays float64 unless dtype says otherwise; everything else computes in float32."""
    if dtype is not None:
        target = np.dtype(dtype)
    else:
        current = _dtype_name(a)
        target = np.dtype(np.float64 if current == "float64" else np.float32)
    if _dtype_name(a) == target.name:
        return a
    if is_tensor(a):
        import torch

        return a.to(getattr(torch, target.name))
    return a.astype(target)


def _dtype_name(a) -> str:
    return str(a.dtype).removeprefix("torch.")


def _host(a) -> np.ndarray:
    """An array of singular values on the host, as numpy."""
    return values(a)


def _frobenius(a) -> float:
    if is_tensor(a) and a.device.type != "cpu":
        import torch

        return float(torch.linalg.vector_norm(a, dtype=torch.float64))
    return frobenius_norm(a.detach().numpy() if is_tensor(a) else a)


def _stack(arrays: list, *, keep_kind: bool = False):
    """The matrices as one batch: GPU tensors on their device, tensors as tensors where the
    results must keep their kind (bases), else numpy (torch's copy would wake its threads)."""
    if is_tensor(arrays[0]) and (keep_kind or arrays[0].device.type != "cpu"):
        import torch

        return torch.stack(arrays)
    return np.stack([a.detach().numpy() if is_tensor(a) else a for a in arrays])


def _groups(items: list[_Item], method, k) -> Iterator[tuple[list[_Item], bool]]:
    """Items in batches for one call each (equal shapes, small matrices, at most _BATCH_BYTES),
    and whether the call keeps every thread busy by itself. The randomized SVD's products and a
    batch of the thread count's multiple do; an exact SVD of one matrix runs on one thread (LAPACK
    without threads), so the rest of a batch goes one matrix a call, several calls at a time."""
    threads = get_num_threads()
    by_shape: dict[tuple, list[_Item]] = defaultdict(list)
    for index, item in enumerate(items):
        m, n = item.shape
        small = item.blocks == 1 and m * n <= _BATCHED_ELEMENTS
        # float64 weights compute in float64, the others in float32 (without dtype): keys apart
        by_shape[(item.shape, item.dtype == "float64", item.device) if small else (index,)].append(item)
    for members in by_shape.values():
        m, n = members[0].shape
        # A GPU parallelises each call itself; its calls go one after the other.
        if members[0].blocks > 1 or members[0].device != "cpu" or _spectrum(k, method, m, n)[1] == "randomized":
            yield members, True
            continue
        whole = len(members) // threads * threads
        per_batch = max(threads, _BATCH_BYTES // (4 * m * n) // threads * threads)
        for start in range(0, whole, per_batch):
            yield members[start:min(start + per_batch, whole)], True
        for item in members[whole:]:
            yield [item], False


def _analyzed(items: list[_Item], method, k, dtype, bases: bool, progress: bool) -> Iterator[LayerAnalysis]:
    """The analysis of every item, in the items' order; with ``bases`` the spaces of every
    matrix too (else a module's wait for first use). Calls that keep every thread busy run one
    after the other, the others side by side, as many at a time as vsfast has threads."""
    from concurrent.futures import ThreadPoolExecutor

    done: dict[int, LayerAnalysis] = {}
    order = {id(item): i for i, item in enumerate(items)}
    bar = _progress(len(items), progress)

    def run(batch: list[_Item]) -> None:
        for item, layer in zip(batch, _decompose(batch, method, k, dtype, bases)):
            done[order[id(item)]] = layer

    calls = list(_groups(items, method, k))
    try:
        for batch, busy in calls:
            if busy:
                run(batch)
                bar.update(len(batch))
        with ThreadPoolExecutor(max_workers=get_num_threads()) as pool:
            for future in [pool.submit(run, batch) for batch, busy in calls if not busy]:
                future.result()
                bar.update(1)
    finally:
        bar.close()
    return (done[i] for i in range(len(items)))


def _decompose(batch: list[_Item], method, k, dtype, bases: bool) -> list[LayerAnalysis]:
    """One call for a batch of equal-shape matrices (or one block-diagonal matrix): their
    singular values (the spaces' where ``bases``), norms and metrics."""
    m, n = batch[0].shape
    layer_k, chosen = _spectrum(k, method, m, n)
    if batch[0].blocks > 1:
        chosen = "exact"  # blocks are small: their whole spectra, the union truncated to k
    matrices = [_compute_dtype(item.get(), dtype) for item in batch]
    norms = [_frobenius(a) for a in matrices]
    makers = [_spaces_maker(item, layer_k, chosen, dtype) for item in batch]
    if bases:
        found = spaces(_stack(matrices, keep_kind=True), k=layer_k, method=chosen) if len(batch) > 1 else [makers[0]()]
        spectra = [_host(sp.singular_values) for sp in found]
    else:
        found = [None] * len(batch)
        spectra = _singular_values(matrices, layer_k, chosen)
    del matrices
    for item in batch:
        item.release()
    return [LayerAnalysis(item.name, item.kind, item.view, tuple(item.weight_shape), tuple(item.shape), s, chosen,
                          spectral_metrics(s, norm, item.shape, s.dtype, complete=s.size == min(m, n)),
                          _spaces=sp, _make_spaces=make)
            for item, s, norm, sp, make in zip(batch, spectra, norms, found, makers)]


def _singular_values(matrices: list, layer_k: int | None, chosen: str) -> list[np.ndarray]:
    """The top layer_k (or all) singular values of each matrix, in one call; of a grouped
    convolution's blocks, the union of theirs (the block-diagonal matrix's)."""
    if matrices[0].ndim == 3:
        s = np.sort(_host(_weight_spectrum(matrices[0])).reshape(-1))[::-1]
        return [np.ascontiguousarray(s[:layer_k])]
    stacked = matrices[0] if len(matrices) == 1 else _stack(matrices)
    s = _host(rsvd(stacked, layer_k).S if chosen == "randomized" else _weight_spectrum(stacked))
    s = s[..., :layer_k]
    return [np.ascontiguousarray(row) for row in s] if s.ndim == 2 else [s]


def _spaces_maker(item: _Item, layer_k: int | None, chosen: str, dtype) -> Callable[[], Spaces] | None:
    """How to compute a module's matrix's spaces later (the weight is the model's, kept there);
    None for a checkpoint's matrix, whose pages are handed back."""
    if item.source is None:
        return None

    def make() -> Spaces:
        matrix = _compute_dtype(item.get(), dtype)
        if matrix.ndim == 3:
            import torch

            matrix = torch.block_diag(*matrix)
        return spaces(matrix, k=layer_k, method=chosen)

    return make


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="matrices", unit="matrix", leave=False, delay=1.0)  # quick runs stay silent
