"""Figures of the vector-space view: each function returns a matplotlib Figure.

The figures are built as ``matplotlib.figure.Figure`` objects, outside pyplot: the caller's
backend and pyplot's list of open figures are left alone, and a figure is freed like any object.
Show one in a notebook by displaying it; write it with :func:`save` or its ``savefig``.

Needs matplotlib (``pip install vsfast[viz]``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._arrays import check_int, values

__all__ = ["conv_kernels", "decomposition", "image_grid", "rejected_samples", "save", "signal_basis", "spectra"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


# More panels than this in one figure is a mistake (and minutes of drawing), not a figure.
MAX_PANELS = 1000


def _images(x: Any, name: str) -> np.ndarray:
    """x as a float64 batch of grey-scale images (N x H x W, or N x 1 x H x W), 1 <= N <= MAX_PANELS."""
    a = values(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"{name}: expected a non-empty N x H x W batch of images, got shape {a.shape}")
    if len(a) > MAX_PANELS:
        raise ValueError(f"{name}: {len(a)} images is more than one figure shows ({MAX_PANELS} at most)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return a


def _labels(labels: Any, count: int, name: str) -> Any:
    if labels is not None and (isinstance(labels, (str, bytes)) or len(labels) < count):
        raise ValueError(f"{name}: expected one label per image ({count})")
    return labels


def save(fig, path) -> None:
    """Write ``fig`` as a PNG (a path or a binary file object)."""
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, *, columns: int = 10,
               title: str | None = None, symmetric: bool = False, size: float = 1.2):
    """A grid of grey-scale images (N x H x W). ``symmetric``: a diverging colour map centred
    on 0 with one scale per image, for basis vectors and residuals that take both signs."""
    images = _images(images, "images")
    count = len(images)
    titles = _labels(titles, count, "titles")
    columns = max(1, min(check_int(columns, "columns", low=1), count))
    rows = max(1, math.ceil(count / columns))
    fig = _figure(size * columns, size * rows + (0.4 if title else 0))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        if symmetric:
            bound = float(np.max(np.abs(images[i]))) or 1.0
            ax.imshow(images[i], cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            ax.imshow(images[i], cmap="gray")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def signal_basis(spaces, count: int = 20, image_shape: tuple[int, int] = (28, 28), *, columns: int = 10):
    """The first ``count`` signal-space basis vectors of a layer as images, by singular value."""
    rows = np.asarray(spaces.signal_rows, dtype=np.float64)[:count]
    s = np.asarray(spaces.singular_values)[: len(rows)]
    return image_grid(rows.reshape(-1, *image_shape), [f"σ{i + 1}={v:.3g}" for i, v in enumerate(s)],
                      columns=columns, symmetric=True,
                      title=f"signal space: top {len(rows)} of rank {spaces.rank}")


def rejected_samples(spaces, count: int = 10, image_shape: tuple[int, int] = (28, 28), *, seed: int = 0):
    """Random unit vectors of a layer's rejected space as images: what the layer cannot see."""
    from .linalg import project

    n = spaces.shape[1]
    noise = np.random.default_rng(seed).standard_normal((count, n)).astype(spaces.dtype)
    _, residual = project(noise, spaces)
    residual = np.asarray(residual, dtype=np.float64)
    norms = np.linalg.norm(residual, axis=1, keepdims=True)
    residual = np.divide(residual, norms, out=np.zeros_like(residual), where=norms > 0)
    return image_grid(residual.reshape(-1, *image_shape), columns=count, symmetric=True,
                      title=f"rejected space (dimension {spaces.nullity}): random samples")


def decomposition(images: np.ndarray, signal: np.ndarray, residual: np.ndarray,
                  labels: Sequence[Any] | None = None, *, title: str | None = None):
    """Per input (a column): the image, its signal part and its residual part (rows), with the
    share of the input's energy in the residual."""
    images, signal, residual = (_images(a, n) for a, n in ((images, "images"), (signal, "signal"),
                                                           (residual, "residual")))
    if not images.shape == signal.shape == residual.shape:
        raise ValueError(f"images, signal, residual: expected one shape, got {images.shape}, {signal.shape}, "
                         f"{residual.shape}")
    count = len(images)
    labels = _labels(labels, count, "labels")
    fig = _figure(1.2 * count + 0.6, 4.2)
    axes = fig.subplots(3, count, squeeze=False)
    for i in range(count):
        energy = float(np.sum(images[i] ** 2)) or 1.0
        bound = float(np.max(np.abs(residual[i]))) or 1.0
        parts = (("input" if labels is None else f"{labels[i]}", images[i], {"cmap": "gray"}),
                 ("signal", signal[i], {"cmap": "gray"}),
                 (f"residual {100 * np.sum(residual[i] ** 2) / energy:.0f} %", residual[i],
                  {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}))
        for ax, (name, img, style) in zip(axes[:, i], parts):
            ax.imshow(img.squeeze(), **style)
            ax.set_title(name, fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def spectra(report, *, columns: int = 4):
    """Singular values of every analysed layer (log scale), the rank and the condition number."""
    layers = list(report)
    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    fig = _figure(3.2 * columns, 2.4 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        s = layer.singular_values.astype(np.float64)
        positive = s > 0
        ax.semilogy(np.arange(1, s.size + 1)[positive], s[positive], lw=1.2)
        if 0 < layer.rank <= s.size:
            ax.axvline(layer.rank, color="tab:red", ls="--", lw=0.8)
        m, n = layer.shape
        ax.set_title(f"{layer.name or '(model)'} {m}×{n}\nrank {layer.rank}, cond {layer.condition_number:.3g}",
                     fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def conv_kernels(weight: Any, kernel_spaces, *, vectors: int = 8):
    """A first convolution's kernels (input channel 0) and the top singular vectors of the
    kernel view: the directions the layer's kernels are built from."""
    w = values(weight).astype(np.float64)
    kernels = w[:, 0]
    kh, kw = kernels.shape[-2:]
    basis = np.asarray(kernel_spaces.signal_rows, dtype=np.float64)[:vectors].reshape(-1, kh, kw)
    s = np.asarray(kernel_spaces.singular_values, dtype=np.float64)
    columns = 16
    grid_rows = math.ceil(len(kernels) / columns)
    fig = _figure(columns * 0.6, grid_rows * 0.6 + 1.6)
    top = fig.add_gridspec(2, 1, height_ratios=[grid_rows, 1.6])
    kernel_grid = top[0].subgridspec(grid_rows, columns, wspace=0.05, hspace=0.05)
    for i in range(grid_rows * columns):
        ax = fig.add_subplot(kernel_grid[i // columns, i % columns])
        ax.axis("off")
        if i < len(kernels):
            bound = float(np.max(np.abs(kernels[i]))) or 1.0
            ax.imshow(kernels[i], cmap="RdBu_r", vmin=-bound, vmax=bound)
    vector_grid = top[1].subgridspec(1, len(basis), wspace=0.1)
    energy = np.sum(s**2) or 1.0
    for i, vec in enumerate(basis):
        ax = fig.add_subplot(vector_grid[0, i])
        ax.axis("off")
        bound = float(np.max(np.abs(vec))) or 1.0
        ax.imshow(vec, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(f"v{i + 1} {100 * s[i] ** 2 / energy:.0f} %", fontsize=7)
    fig.suptitle(f"{len(kernels)} kernels {kh}×{kw} (top) and the kernel view's top singular vectors (bottom)",
                 fontsize=9)
    return fig
