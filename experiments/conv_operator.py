"""The whole convolution against its flattened views (the paper's next check 3).

    .venv/bin/python experiments/conv_operator.py [--quick] [--no-write]

Every convolution of the shipped MNIST ResNet18, read three ways: the paper's patch view (c_out x
c_in k², the map from one input patch to one output position), the kernel view (c_out c_in x k²,
every kernel a row), and the whole linear map the layer applies to the feature maps it receives
on 28 x 28 digits (zero padding as the network pads, stride as it strides: the dense operator's
exact singular values, `vsfast.conv_spectrum(padding="zeros")`). Reported per layer: the largest
singular value, the numerical rank and the condition number of each reading, flagged against the
paper's threshold (σ₁/σ_r > 10), and the share of the kernel's taps that ever meet a pixel at
that feature-map size. The figure overlays the normalised spectra of four layers. Writes the
conv_operator.py sections of docs/experiments.md and docs/figures/conv_operator.png; ``--quick``
(three layers) is what the test suite runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from publish import add_options, markdown_table, publish  # beside this script

import vsfast
from vsfast.mnist import models
from vsfast.nn import conv_matrix

QUICK = ("conv1", "layer1.0.conv1", "layer4.1.conv2")
FIGURE_LAYERS = ("conv1", "layer1.0.conv1", "layer3.0.conv1", "layer4.1.conv2")
THRESHOLD = 10.0  # the paper's condition-number threshold


def input_sizes(model) -> dict[str, tuple[int, int]]:
    """Each convolution's input feature-map size on a 28 x 28 digit."""
    sizes, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))))
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return sizes


def reading(s: np.ndarray, shape: tuple[int, int]) -> dict:
    """sigma_1, the rank by the float32 rule (the weights are float32) and sigma_1 / sigma_r."""
    rank = int(np.sum(s > max(shape) * np.finfo(np.float32).eps * s[0]))
    return {"s": s, "sigma": float(s[0]), "rank": rank, "of": min(shape), "cond": float(s[0] / s[rank - 1])}


def output_size(module, size: tuple[int, int]) -> tuple[int, int]:
    return tuple((n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in
                 zip(size, module.padding, module.dilation, module.kernel_size, module.stride))


def taps_used(module, size: tuple[int, int]) -> float:
    """The share of a kernel's taps that multiply an image pixel at some output position."""
    meets = []
    for n, out, p, d, k, st in zip(size, output_size(module, size), module.padding, module.dilation,
                                   module.kernel_size, module.stride):
        reach = np.arange(out)[:, None] * st + np.arange(k)[None, :] * d - p  # pixel read by (output, tap)
        meets.append(np.any((reach >= 0) & (reach < n), axis=0))
    return float(np.mean(meets[0][:, None] & meets[1][None, :]))


def analyse(name: str, module, size: tuple[int, int]) -> dict:
    patch = conv_matrix(module, "patch").double()
    kernel = conv_matrix(module, "kernel").double()
    operator = vsfast.conv_spectrum(module, size, padding="zeros")
    (out_h, out_w), c_out, c_in = output_size(module, size), module.out_channels, module.in_channels
    return {"name": name, "size": size, "kernel_size": module.kernel_size, "stride": module.stride,
            "taps": taps_used(module, size),
            "patch": reading(np.asarray(vsfast.svdvals(patch)), tuple(patch.shape)),
            "kernel": reading(np.asarray(vsfast.svdvals(kernel)), tuple(kernel.shape)),
            "operator": reading(operator, (c_out * out_h * out_w, c_in * size[0] * size[1]))}


def flag(cond: float) -> str:
    return f"{cond:.3g}" + (" ⚑" if cond > THRESHOLD else "")


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        p, k, o = r["patch"], r["kernel"], r["operator"]
        rows.append([f"`{r['name']}`", f"{r['kernel_size'][0]}×{r['kernel_size'][1]}/{r['stride'][0]}",
                     f"{r['size'][0]}×{r['size'][1]}", f"{r['taps']:.0%}", f"{p['sigma']:.3g}", f"{o['sigma']:.3g}",
                     f"{o['sigma'] / p['sigma']:.2f}", f"{p['rank']} / {p['of']}", f"{k['rank']} / {k['of']}",
                     f"{o['rank']} / {o['of']}", flag(p["cond"]), flag(o["cond"])])
    return markdown_table(
        "Shipped ResNet18 on 28 × 28 digits: each convolution's patch view, kernel view and whole zero-padded "
        "operator (exact). Rank: singular values above max(m, n)·ε₃₂·σ₁ of that reading; ⚑: σ₁/σ_r above the "
        "paper's 10.",
        ["layer", "kernel/stride", "input", "taps used", "σ₁ patch", "σ₁ operator", "ratio", "rank patch",
         "rank kernel", "rank operator", "σ₁/σ_r patch", "σ₁/σ_r operator"], rows)


def summary(results: list[dict]) -> str:
    ratio = np.array([r["operator"]["sigma"] / r["patch"]["sigma"] for r in results])
    # a pixel lies in at most ceil(k_h / s_h) ceil(k_w / s_w) patches: the operator's norm bound
    bound = np.array([np.sqrt(np.prod(np.ceil(np.divide(r["kernel_size"], r["stride"])))) for r in results])
    flagged = [(r["patch"]["cond"] > THRESHOLD, r["operator"]["cond"] > THRESHOLD) for r in results]
    disagree = [r["name"] for r, (a, b) in zip(results, flagged) if a != b]
    partial = [r["name"] for r in results if r["taps"] < 1]
    return "\n".join([
        f"- σ₁ of the operator over σ₁ of the patch view: {ratio.min():.2f} to {ratio.max():.2f} "
        f"(at most √(⌈k_h/s_h⌉·⌈k_w/s_w⌉), {bound.min():.2f} to {bound.max():.2f} here; within it in every layer: "
        f"{bool(np.all(ratio <= bound * (1 + 1e-9)))}).",
        f"- The paper's threshold flags {sum(a for a, _ in flagged)} of {len(results)} layers in the patch view and "
        f"{sum(b for _, b in flagged)} as whole operators; they disagree on {len(disagree)}"
        + (f": {', '.join(f'`{n}`' for n in disagree)}." if disagree else "."),
        f"- Layers whose feature maps are too small for some taps to ever meet a pixel: {len(partial)}"
        + (f" ({', '.join(f'`{n}`' for n in partial)})." if partial else "."),
    ])


def figure(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    shown = [r for r in results if r["name"] in FIGURE_LAYERS]
    fig = Figure(figsize=(4 * len(shown), 3.4), layout="constrained")
    for ax, r in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
        for key, style in (("patch", "-"), ("operator", "--")):
            s = r[key]["s"]
            ax.semilogy(np.arange(1, s.size + 1) / s.size, s / s[0], style, label=f"{key} ({s.size} values)")
        ax.axhline(1 / THRESHOLD, color="grey", lw=0.8, label="σ₁/10 (the paper's threshold)")
        ax.set_title(f"{r['name']} on {r['size'][0]}×{r['size'][1]}")
        ax.set_xlabel("index / number of singular values")
        ax.set_ylabel("σ_i / σ₁")
        ax.set_ylim(1e-4, 1.5)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, f"only {', '.join(QUICK)}")
    args = parser.parse_args()
    model = models.load("resnet18").eval()
    sizes = input_sizes(model)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    results = [analyse(n, m, sizes[n]) for n, m in convs if not args.quick or n in QUICK]
    body = f"{table(results)}\n\n{summary(results)}"
    publish(args, "conv_operator.py", body, lambda path: figure(results, path))


if __name__ == "__main__":
    main()
