"""Residual blocks through their Jacobian spaces (the paper's open question 2).

    .venv/bin/python experiments/residual_blocks.py [--digits 10] [--energy-digits 100] [--quick]
                                                     [--no-write]

The paper reads a network layer by layer, each layer one matrix; a residual block is not one: its
output relu(S h + F(h)) adds a skip path S (the identity, or a strided 1 x 1 convolution) to a
residual branch F (convolution, batch norm, ReLU, convolution, batch norm). Linearised at the
feature map h that a digit gives the block, it is one matrix again: the block's Jacobian. For
every block of the shipped MNIST ResNet18 and test digits, this script reports

- the rank of the block's Jacobian and of its residual branch's alone (exact: each Jacobian
  formed by ``vsfast.jacobian_spaces(method="exact")`` in float64 and decomposed in the core;
  ReLU's inactive units give exact zeros, so the ranks are structural), and their largest
  singular values;
- how much of the digit's feature map the block rejects: the share of ||h||^2 in the null space
  of its Jacobian, and of the branch's;
- the share of the energy that reaches the sum through the skip path,
  ||S h||^2 / (||S h||^2 + ||F(h)||^2), and the cosine between the two paths (on more digits:
  forward passes only).

Writes the residual_blocks.py section of docs/experiments.md and docs/figures/residual_blocks.png;
``--quick`` (the last three blocks, 2 digits) is what the test suite runs. Needs the MNIST test
set (``VSFAST_DATA`` or the loader's cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from publish import add_options, markdown_table, publish  # beside this script

import vsfast
from vsfast.mnist import load, models

QUICK = ("layer3.1", "layer4.0", "layer4.1")


def blocks(model) -> list[tuple[str, torch.nn.Module]]:
    return [(f"{stage}.{i}", block) for stage in ("layer1", "layer2", "layer3", "layer4")
            for i, block in enumerate(getattr(model, stage))]


def block_inputs(model, images: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The feature map each block receives for each image."""
    found, hooks = {}, []
    for name, block in blocks(model):
        if name in names:
            hooks.append(block.register_forward_pre_hook(
                lambda mod, args, name=name: found.__setitem__(name, args[0].detach().clone())))
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return found


def branch(block):
    """The residual branch F of a torchvision BasicBlock."""
    return lambda h: block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))


def skip(block):
    return block.downsample if block.downsample is not None else (lambda h: h)


def rejected_share(spaces_list, h: torch.Tensor) -> np.ndarray:
    """The share of each ||h_i||^2 in the null space of its Jacobian."""
    shares = []
    for sp, hi in zip(spaces_list, h.reshape(h.shape[0], -1)):
        residual = vsfast.project(hi[None, :], sp).residual
        shares.append(float((residual**2).sum() / (hi**2).sum()))
    return np.array(shares)


def jacobian_readings(block, h: torch.Tensor) -> dict:
    whole = vsfast.jacobian_spaces(block, h, method="exact")
    part = vsfast.jacobian_spaces(branch(block), h, method="exact")
    m, n = whole[0].shape
    return {"m": m, "n": n,
            "rank": np.array([sp.rank for sp in whole]), "rank_branch": np.array([sp.rank for sp in part]),
            "sigma": np.array([float(sp.singular_values[0]) for sp in whole]),
            "sigma_branch": np.array([float(sp.singular_values[0]) for sp in part]),
            "rejected": rejected_share(whole, h), "rejected_branch": rejected_share(part, h),
            "spectrum": np.asarray(whole[0].singular_values), "spectrum_branch": np.asarray(part[0].singular_values)}


def path_energies(block, h: torch.Tensor) -> dict:
    with torch.no_grad():
        s, f = skip(block)(h).flatten(1), branch(block)(h).flatten(1)
    es, ef = (s**2).sum(1), (f**2).sum(1)
    cos = (s * f).sum(1) / torch.sqrt(es * ef)
    return {"skip_share": (es / (es + ef)).numpy(), "cos": cos.numpy()}


def median_range(values: np.ndarray, fmt: str) -> str:
    return f"{np.median(values):{fmt}} ({np.min(values):{fmt}}–{np.max(values):{fmt}})"


def table(results: list[dict], digits: int, energy_digits: int) -> str:
    rows = []
    for r in results:
        j, e = r["jac"], r["energy"]
        rows.append([f"`{r['name']}`", f"{j['m']} × {j['n']}", "conv" if r["downsample"] else "identity",
                     median_range(j["rank"], ".0f"), median_range(j["rank_branch"], ".0f"),
                     median_range(j["sigma"], ".3g"), median_range(j["sigma_branch"], ".3g"),
                     median_range(j["rejected"], ".2f"), median_range(j["rejected_branch"], ".2f"),
                     median_range(e["skip_share"], ".2f"), median_range(e["cos"], ".2f")])
    return markdown_table(
        f"Shipped ResNet18, every residual block linearised at the feature maps of test digits: median (min–max) over "
        f"{digits} digits for the Jacobians (exact, float64), over {energy_digits} for the paths' energies. "
        "Rejected: the share of ||h||² in the null space of the block's (branch's) Jacobian.",
        ["block", "Jacobian", "skip path", "rank block", "rank branch", "σ₁ block", "σ₁ branch", "rejected by block",
         "rejected by branch", "energy via skip", "cos(skip, branch)"], rows)


def figure(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(4 * len(results[:4]), 3.4), layout="constrained")
    shown = results if len(results) <= 4 else [results[i] for i in (0, 2, 5, 7)]
    for ax, r in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
        for key, style, label in (("spectrum", "-", "block"), ("spectrum_branch", "--", "residual branch")):
            s = r["jac"][key]
            ax.semilogy(np.arange(1, s.size + 1), np.maximum(s, 1e-12), style, label=label)
        ax.set_title(f"{r['name']}: Jacobian at one digit")
        ax.set_xlabel("index i")
        ax.set_ylabel("singular value σ_i (zeros at 1e-12)")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=10, help="digits whose Jacobians are formed (default 10)")
    parser.add_argument("--energy-digits", type=int, default=100, help="digits for the paths' energies")
    add_options(parser, f"only {', '.join(QUICK)}, 2 digits")
    args = parser.parse_args()
    digits, energy_digits = (2, 10) if args.quick else (args.digits, args.energy_digits)
    model = models.load("resnet18").double().eval()
    images, _ = load("test")
    x = torch.from_numpy(images[:max(digits, energy_digits)]).double()
    names = [n for n, _ in blocks(model) if not args.quick or n in QUICK]
    inputs = block_inputs(model, x, names)
    results = []
    for name, block in blocks(model):
        if name in names:
            h = inputs[name]
            results.append({"name": name, "downsample": block.downsample is not None,
                            "jac": jacobian_readings(block, h[:digits]), "energy": path_energies(block, h)})
    body = table(results, digits, energy_digits)
    publish(args, "residual_blocks.py", body, lambda path: figure(results, path))


if __name__ == "__main__":
    main()
