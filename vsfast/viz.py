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

__all__ = ["conv_kernels", "decomposition", "image_grid", "orientation_tuning", "pixel_layers", "rejected_samples",
           "save", "signal_basis", "spectra"]

#: The colour bar label of pixel images: MNIST's pixels are intensities, 0 black and 1 white.
PIXEL_UNITS = "pixel intensity (0 black, 1 white)"


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
               title: str | None = None, symmetric: bool = False, size: float = 1.2,
               limits: tuple[float, float] | None = None, units: str | None = None):
    """A grid of grey-scale images (N x H x W). ``symmetric``: a diverging colour map centred
    on 0 with one scale per image, for basis vectors and residuals that take both signs.
    ``limits``: one (low, high) grey scale for every image (values beyond it saturate), with a
    colour bar labelled ``units``; default: each image scaled to its own range."""
    images = _images(images, "images")
    count = len(images)
    titles = _labels(titles, count, "titles")
    columns = max(1, min(check_int(columns, "columns", low=1), count))
    rows = max(1, math.ceil(count / columns))
    fig = _figure(size * columns + (0.9 if limits else 0), size * rows + (0.4 if title else 0))
    axes = fig.subplots(rows, columns, squeeze=False)
    shown = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        if symmetric:
            bound = float(np.max(np.abs(images[i]))) or 1.0
            ax.imshow(images[i], cmap="RdBu_r", vmin=-bound, vmax=bound)
        elif limits is not None:
            shown = ax.imshow(images[i], cmap="gray", vmin=limits[0], vmax=limits[1])
        else:
            ax.imshow(images[i], cmap="gray")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
        bar.set_label(units or "value", fontsize=7)
        bar.ax.tick_params(labelsize=6)
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
    share of the input's energy in the residual. The image and signal rows share one grey scale
    and the residual row one colour scale symmetric around 0 (blue below, red above), each with
    its colour bar in pixel units, so that columns compare with one another."""
    images, signal, residual = (_images(a, n) for a, n in ((images, "images"), (signal, "signal"),
                                                           (residual, "residual")))
    if not images.shape == signal.shape == residual.shape:
        raise ValueError(f"images, signal, residual: expected one shape, got {images.shape}, {signal.shape}, "
                         f"{residual.shape}")
    count = len(images)
    labels = _labels(labels, count, "labels")
    fig = _figure(1.2 * count + 1.6, 4.2)
    axes = fig.subplots(3, count, squeeze=False)
    grey = (float(min(images.min(), signal.min())), float(max(images.max(), signal.max())))
    if grey[0] == grey[1]:
        grey = (grey[0] - 0.5, grey[1] + 0.5)
    bound = float(np.max(np.abs(residual))) or 1.0
    shown = [None, None, None]
    for i in range(count):
        energy = float(np.sum(images[i] ** 2)) or 1.0
        parts = (("input" if labels is None else f"{labels[i]}", images[i], {"cmap": "gray", "vmin": grey[0], "vmax": grey[1]}),
                 ("signal", signal[i], {"cmap": "gray", "vmin": grey[0], "vmax": grey[1]}),
                 (f"residual {100 * np.sum(residual[i] ** 2) / energy:.0f} %", residual[i],
                  {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}))
        for row, (ax, (name, img, style)) in enumerate(zip(axes[:, i], parts)):
            shown[row] = ax.imshow(img.squeeze(), **style)
            ax.set_title(name, fontsize=7)
            ax.axis("off")
    for row, label in ((1, PIXEL_UNITS), (2, "residual (pixel intensity)")):
        bar = fig.colorbar(shown[row], ax=axes[row if row == 2 else slice(0, 2)].ravel().tolist(), shrink=0.85,
                           pad=0.02)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pixel_layers(images: np.ndarray, signals: Sequence[np.ndarray], layer_names: Sequence[str],
                 labels: Sequence[Any] | None = None, *, title: str | None = None):
    """What of each input reaches each layer, in pixels: per input (a column), the image, then
    per layer (two rows) the signal part and the residual part of the image for that layer
    (signals[l], N x H x W). Signals share the input's grey scale, residuals one colour scale
    symmetric around 0; both have colour bars in pixel units."""
    images = _images(images, "images")
    signals = [_images(s, f"signals[{i}]") for i, s in enumerate(signals)]
    if any(s.shape != images.shape for s in signals):
        raise ValueError(f"signals: expected arrays of the images' shape {images.shape}")
    if len(layer_names) != len(signals):
        raise ValueError(f"layer_names: expected one name per signal ({len(signals)}), got {len(layer_names)}")
    count, depth = len(images), len(signals)
    labels = _labels(labels, count, "labels")
    residuals = [images - s for s in signals]
    grey = (float(min(images.min(), *(s.min() for s in signals))), float(max(images.max(), *(s.max() for s in signals))))
    if grey[0] == grey[1]:
        grey = (grey[0] - 0.5, grey[1] + 0.5)
    bound = max(float(np.max(np.abs(r))) for r in residuals) or 1.0
    fig = _figure(1.1 * count + 2.6, 1.05 * (2 * depth + 1) + 0.4)
    axes = fig.subplots(2 * depth + 1, count, squeeze=False)
    grey_shown = diverging_shown = None
    for i in range(count):
        grey_shown = axes[0, i].imshow(images[i], cmap="gray", vmin=grey[0], vmax=grey[1])
        axes[0, i].set_title("input" if labels is None else f"{labels[i]}", fontsize=7)
        for layer in range(depth):
            energy = float(np.sum(images[i] ** 2)) or 1.0
            axes[2 * layer + 1, i].imshow(signals[layer][i], cmap="gray", vmin=grey[0], vmax=grey[1])
            diverging_shown = axes[2 * layer + 2, i].imshow(residuals[layer][i], cmap="RdBu_r", vmin=-bound, vmax=bound)
            axes[2 * layer + 2, i].set_title(f"{100 * np.sum(residuals[layer][i] ** 2) / energy:.0f} %", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for layer, name in enumerate(layer_names):
        axes[2 * layer + 1, 0].set_ylabel(f"{name}\nsignal", fontsize=6)
        axes[2 * layer + 2, 0].set_ylabel("residual", fontsize=6)
    for shown, label in ((grey_shown, PIXEL_UNITS), (diverging_shown, "residual (pixel intensity)")):
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.4, pad=0.01)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def spectra(report, *, columns: int = 4, condition_threshold: float | None = None):
    """Singular values of every analysed layer (log scale) against their index, the rank (dashed
    red line) and the condition number sigma_1 / sigma_r; with ``condition_threshold``, layers
    above it have their title in red and marked "> threshold"."""
    layers = list(report)
    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    fig = _figure(3.2 * columns, 2.6 * rows)
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
        cond = layer.condition_number
        flagged = condition_threshold is not None and cond > condition_threshold
        ax.set_title(f"{layer.name or '(model)'} {m}×{n}\nrank {layer.rank}, σ₁/σᵣ {cond:.3g}"
                     + (f" > {condition_threshold:g}" if flagged else ""), fontsize=8,
                     color="tab:red" if flagged else "black")
        ax.set_xlabel("index i", fontsize=7)
        ax.set_ylabel("singular value σᵢ", fontsize=7)
        ax.tick_params(labelsize=7, which="both")
    fig.tight_layout()
    return fig


def orientation_tuning(kernels: Any, angles: int = 36, frequencies: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """How strongly each 2-D kernel (N x kh x kw) responds to straight stripes of each orientation.

    The response to stripes along the direction theta (degrees, counter-clockwise from the
    horizontal as the image is displayed) is the magnitude of the kernel's Fourier transform at
    the wave vector perpendicular to them, maximised over ``frequencies`` spatial frequencies
    from one cycle per kernel width to the Nyquist frequency (a cosine grating of the best phase
    gives that response). Returns (theta in degrees, 0 to 180 in ``angles`` steps; responses,
    N x angles, each row divided by its maximum).
    """
    k = values(kernels).astype(np.float64)
    if k.ndim != 3 or 0 in k.shape or not np.isfinite(k).all():
        raise ValueError(f"kernels: expected a finite N x kh x kw array, got shape {k.shape}")
    angles = check_int(angles, "angles", low=2)
    frequencies = check_int(frequencies, "frequencies", low=1)
    kh, kw = k.shape[1:]
    theta = np.arange(angles) * 180.0 / angles
    # Pixel coordinates about the centre; y up, as the image is displayed (row 0 at the top).
    y, x = np.mgrid[0:kh, 0:kw].astype(np.float64)
    x, y = x - (kw - 1) / 2, (kh - 1) / 2 - y
    freq = np.linspace(1.0 / max(kh, kw), 0.5, frequencies)
    normal = np.radians(theta + 90.0)  # the wave vector is perpendicular to the stripes
    phase = freq[:, None, None, None] * (np.cos(normal)[None, :, None, None] * x + np.sin(normal)[None, :, None, None] * y)
    waves = np.exp(-2j * np.pi * phase).reshape(frequencies, angles, kh * kw)
    response = np.abs(np.einsum("fak,nk->nfa", waves, k.reshape(len(k), -1))).max(axis=1)
    peak = response.max(axis=1, keepdims=True)
    return theta, np.divide(response, peak, out=np.zeros_like(response), where=peak > 0)


def conv_kernels(weight: Any, kernel_spaces, *, vectors: int = 8):
    """A first convolution's kernels (input channel 0), the top singular vectors of the
    flattened-kernel view with the share of the kernels' energy each carries (sigma_i^2 / sum
    sigma^2), and each vector's orientation tuning (:func:`orientation_tuning`): the directions
    the layer's kernels are built from, and which stripes each selects."""
    w = values(weight).astype(np.float64)
    kernels = w[:, 0]
    kh, kw = kernels.shape[-2:]
    basis = np.asarray(kernel_spaces.signal_rows, dtype=np.float64)[:vectors].reshape(-1, kh, kw)
    s = np.asarray(kernel_spaces.singular_values, dtype=np.float64)
    columns = 16
    grid_rows = math.ceil(len(kernels) / columns)
    fig = _figure(columns * 0.6, grid_rows * 0.6 + 3.6)
    top = fig.add_gridspec(3, 1, height_ratios=[grid_rows, 1.4, 1.9], hspace=0.45)
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
    theta, tuning = orientation_tuning(basis)
    ax = fig.add_subplot(top[2])
    for i, row in enumerate(tuning):
        ax.plot(theta, row, lw=1, label=f"v{i + 1}")
    ax.set_xlabel("stripe orientation (degrees, counter-clockwise from horizontal)", fontsize=7)
    ax.set_ylabel("response / its maximum", fontsize=7)
    ax.set_xlim(0, 180)
    ax.set_xticks(np.arange(0, 181, 45))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=min(len(basis), 8), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle(f"{len(kernels)} kernels {kh}×{kw} (top; red positive, blue negative), the kernel view's top "
                 "singular vectors with their energy share (middle), and their orientation tuning (bottom)",
                 fontsize=8)
    return fig
