"""Invertible against non-invertible networks, and ReLU (the paper's open question 1 and next check 2).

    .venv/bin/python experiments/activations.py [--epochs 3] [--targets 200] [--quick] [--no-write]

FCNN-5's architecture (784-512-256-128-64-10) trained with four activations by one recipe (AdamW,
learning rate 1e-3, weight decay 1e-2, batch 128, ``--epochs`` epochs, seed 0; not the shipped
model's, which adds a penalty for SELU's saturation): SELU, leaky ReLU (slope 0.01) and tanh are
invertible, ReLU is not. For each: the test accuracy, then inputs for targets that are the
network's own outputs on other test digits (reachable by construction), sought near the class-mean
digit inside the pixel box [0, 1] by ``vsfast.invert`` (its default for image models): through the
chain (``method="pinv"``: projected Gauss-Newton over the chained pseudoinverses) where every
activation is invertible, else by optimisation (``method="optimize"``, Adam from the reference).
Reported: the share of targets reached to a relative output error of 1e-4, the median error, the
time, how much the inputs look like digits (median distance to the class-mean digit and to the
nearest training digit), and for the invertible networks the largest pixel magnitude of the
exact chained preimage without the box (``box=None``), which shows how far each inverse
activation amplifies. Writes the
activations.py section of docs/experiments.md and docs/figures/activations.png; ``--quick``
(2,000 training steps' worth of data, 50 targets) is what the test suite runs. Needs MNIST.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from publish import add_options, markdown_table, publish  # beside this script

import vsfast
from vsfast.mnist import load

WIDTHS = (784, 512, 256, 128, 64, 10)
ACTIVATIONS = {"SELU": nn.SELU, "leaky ReLU": lambda: nn.LeakyReLU(0.01), "tanh": nn.Tanh, "ReLU": nn.ReLU}
TOL = 1e-4


def network(activation) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    begin = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(128):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - begin


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def inversions(model, name: str, test: tuple, train_set: tuple, count: int) -> dict:
    (tx, ty), (x, y) = test, train_set
    with torch.no_grad():
        targets = model(tx[count:2 * count]).numpy()
    classes = ty[count:2 * count].numpy()
    means = np.stack([x[y == c].mean(0).numpy() for c in range(10)])
    reference = means[classes]
    method = "optimize" if name == "ReLU" else "pinv"
    with warnings.catch_warnings():  # RangeWarning: the unboxed chain's repairs, expected here
        warnings.simplefilter("ignore", vsfast.RangeWarning)
        begin = time.perf_counter()
        found = vsfast.invert(model, targets, method=method, reference=reference)
        seconds = time.perf_counter() - begin
        free = vsfast.invert(model, targets, method="pinv", reference=reference, box=None) if method == "pinv" else None
    inputs = found.inputs.reshape(count, -1)
    flat = x.flatten(1).numpy()
    squared = (inputs**2).sum(1)[:, None] - 2 * inputs @ flat.T + (flat**2).sum(1)[None]
    nearest = np.sqrt(np.maximum(squared, 0)).min(1)
    to_mean = np.linalg.norm(inputs - reference.reshape(count, -1), axis=1)
    return {"method": method, "reached": float(np.mean(found.error <= TOL)), "error": float(np.median(found.error)),
            "seconds": seconds, "to_mean": float(np.median(to_mean)),
            "to_nearest": float(np.median(nearest)),
            "unboxed": float(np.median(np.abs(free.inputs).reshape(count, -1).max(1))) if free else float("nan"),
            "examples": found.inputs[:8].reshape(8, 28, 28)}


def table(results: dict, epochs: int, count: int) -> str:
    rows = [[name, f"{r['accuracy']:.2%}", f"{r['train_seconds']:.0f} s", r["inv"]["method"],
             f"{r['inv']['reached']:.0%}", f"{r['inv']['error']:.1e}", f"{r['inv']['seconds']:.2f} s",
             f"{r['inv']['to_mean']:.2f}", f"{r['inv']['to_nearest']:.2f}",
             "–" if np.isnan(r["inv"]["unboxed"]) else f"{r['inv']['unboxed']:.3g}"]
            for name, r in results.items()]
    return markdown_table(
        f"FCNN-5's architecture, {epochs} epoch(s) of one recipe per activation; {count} targets (the network's "
        f"outputs on other test digits) sought near the class-mean digit inside [0, 1], reached at a relative error "
        f"of {TOL:g}; distances Euclidean over the 784 pixels; unboxed: median largest |pixel| of the exact chained "
        "preimage without the box",
        ["activation", "test accuracy", "training", "inversion", "reached", "median error", "time",
         "to class mean", "to nearest training digit", "unboxed preimage's largest pixel"], rows)


def figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(8, 1.2 * len(results) + 0.4), layout="constrained")
    axes = fig.subplots(len(results), 8, squeeze=False)
    for row, (name, r) in zip(axes, results.items()):
        for ax, image in zip(row, r["inv"]["examples"]):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{name}\n({r['inv']['method']})", fontsize=8)
    fig.suptitle("Inputs found inside [0, 1] for the first 8 targets (grey scale 0 to 1)", fontsize=9)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--targets", type=int, default=200)
    add_options(parser, "one epoch on 2,000 training digits, 50 targets")
    args = parser.parse_args()
    (xi, yi), (ti, tl) = load("train"), load("test")
    limit, epochs, count = (2000, 1, 50) if args.quick else (len(xi), args.epochs, args.targets)
    train_set = (torch.from_numpy(xi[:limit]), torch.from_numpy(yi[:limit]).long())
    test = (torch.from_numpy(ti), torch.from_numpy(tl).long())
    results = {}
    for name, activation in ACTIVATIONS.items():
        model = network(activation)
        seconds = train(model, *train_set, epochs)
        results[name] = {"accuracy": accuracy(model, *test), "train_seconds": seconds,
                         "inv": inversions(model, name, test, train_set, count)}
    publish(args, "activations.py", table(results, epochs, count), lambda path: figure(results, path))


if __name__ == "__main__":
    main()
