"""The figures' contents: orientation tuning against stripes of known orientation, residual colour
scales symmetric around zero, units on the axes and colour bars."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
torch = pytest.importorskip("torch")

import vsfast  # noqa: E402
from vsfast import viz  # noqa: E402


def stripes(angle_deg: float, size: int = 7, period: float = 3.0) -> np.ndarray:
    """A cosine grating whose stripes run at angle_deg counter-clockwise from the horizontal, as
    the image is displayed (row 0 at the top)."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    x, y = x - (size - 1) / 2, (size - 1) / 2 - y
    normal = np.radians(angle_deg + 90)
    return np.cos(2 * np.pi * (x * np.cos(normal) + y * np.sin(normal)) / period)


def test_orientation_tuning_finds_the_stripes_orientation():
    angles = [0, 30, 45, 90, 135, 160]
    theta, tuning = viz.orientation_tuning(np.stack([stripes(a) for a in angles]), angles=36)
    assert theta.shape == (36,) and tuning.shape == (6, 36) and np.allclose(tuning.max(axis=1), 1)
    found = theta[np.argmax(tuning, axis=1)]
    circular = np.minimum(np.abs(found - angles), 180 - np.abs(found - angles))
    assert np.all(circular <= 5), found
    # A grating selects its orientation; a centred blob responds to every orientation alike.
    blob = np.exp(-((np.mgrid[0:7, 0:7] - 3.0) ** 2).sum(axis=0) / 4)[None]
    assert 1 - tuning[0].min() > 0.8 and 1 - viz.orientation_tuning(blob)[1].min() < 0.05
    with pytest.raises(ValueError, match="kernels"):
        viz.orientation_tuning(np.zeros((3, 3)))


def test_residuals_are_drawn_on_a_scale_symmetric_around_zero():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 8))
    signal = images - 0.3 * rng.random((3, 8, 8))  # residuals all positive: the scale stays symmetric
    fig = viz.decomposition(images, signal, images - signal, labels=["a", "b", "c"])
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    residual_rows = [im for im in shown if im.get_cmap().name == "RdBu_r"]
    assert len(residual_rows) == 3
    for im in residual_rows:
        low, high = im.get_clim()
        assert low == -high and high == pytest.approx(np.abs(images - signal).max())
    grey = {im.get_clim() for im in shown if im.get_cmap().name == "gray"}
    assert len(grey) == 1  # the digits and their signals share one grey scale
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert any("pixel intensity" in label for label in labels)  # the colour bars say their units
    fig = viz.pixel_layers(images, [signal, 0.5 * signal], ["first", "second"])
    diverging = {ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "RdBu_r"}
    assert len(diverging) == 1 and next(iter(diverging))[0] == -next(iter(diverging))[1]


def test_axes_carry_units_and_the_condition_threshold_is_flagged():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.Linear(8, 4))
    with torch.no_grad():
        model[1].weight.mul_(torch.logspace(0, 3, 4)[:, None])  # a condition number near 1000
    report = vsfast.analyze(model)
    fig = viz.spectra(report, condition_threshold=10)
    axes = [ax for ax in fig.axes if ax.lines]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    flagged = [ax for ax in axes if "> 10" in ax.get_title()]
    assert [ax.get_title().split()[0] for ax in flagged] == ["1"]
    conv = nn.Conv2d(1, 16, 5)
    fig = viz.conv_kernels(conv.weight, vsfast.analyze(conv, conv_view="kernel")[0].spaces, vectors=4)
    tuning = [ax for ax in fig.axes if ax.lines]
    assert len(tuning) == 1 and "degrees" in tuning[0].get_xlabel() and tuning[0].get_ylabel()
    grid = viz.image_grid(np.random.default_rng(1).random((4, 8, 8)), limits=(0, 1), units="pixel intensity")
    assert {ax.images[0].get_clim() for ax in grid.axes if ax.images} == {(0, 1)}
    assert any(ax.get_ylabel() == "pixel intensity" for ax in grid.axes)
