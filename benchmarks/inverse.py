"""Inputs for 10,000 chosen outputs of FCNN-5: vsfast.invert (the chained pseudoinverse, repaired by
Gauss-Newton where the preimage leaves the SELU range) against the paper's approach, gradient
descent on the input (Adam, torch), measured in one run.

    .venv/bin/python benchmarks/inverse.py [--targets N] [--max-steps N] [--lr LR [LR ...]] [--no-write]

Each test digit is moved to produce the outputs of another test digit of its class, so every
target is reachable. Both methods start from the digit (vsfast: the reference, at every layer) and
must bring every target to a relative output error of 1e-4, in float32. Gradient descent is given
every advantage: its learning rate is the best of a sweep on the first --sweep targets (fewest
steps until every one of them got there), it runs on all targets in one batch, and a target counts
as reached at the first step its error is at most 1e-4, even if later steps take it away again.
Its times to 50, 90, 99 and 100 % of the targets are reported, each against vsfast's time for all
of them; a target not reached within --max-steps makes the last ratios lower bounds (">"). The
table is printed and written as the inverse.py section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, markdown_table, publish  # noqa: E402

import vsfast  # noqa: E402
from vsfast import mnist  # noqa: E402
from vsfast.inverse import invert, model_outputs  # noqa: E402

TOL = 1e-4
FRACTIONS = (0.5, 0.9, 0.99, 1.0)


def same_class_partners(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each example, another example of its class (a random permutation within each class)."""
    rng = np.random.default_rng(seed)
    partner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        partner[members] = members[np.roll(rng.permutation(len(members)), 1)]
    return partner


def gradient_descent(model, start: np.ndarray, targets: np.ndarray, lr: float, max_steps: int):
    """Adam on the inputs, all targets in one batch: (seconds after each step, the step at which
    each target first reached TOL, or max_steps + 1)."""
    x = torch.tensor(start, requires_grad=True)
    y = torch.from_numpy(targets).float()
    scale = y.norm(dim=1)
    first = torch.full((len(y),), max_steps + 1)
    opt = torch.optim.Adam([x], lr=lr)
    clock = []
    begin = time.perf_counter()
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        err = (model(x) - y).norm(dim=1) / scale
        (err**2).sum().backward()
        opt.step()
        first[(err.detach() <= TOL) & (first > max_steps)] = step
        clock.append(time.perf_counter() - begin)
        if bool((first <= max_steps).all()):
            break
    return np.array(clock), first.numpy()


def steps_to(first: np.ndarray, fraction: float) -> int:
    """The step by which the given fraction of the targets had reached TOL."""
    return int(np.sort(first)[int(np.ceil(fraction * len(first))) - 1])


def best_rate(model, start, targets, rates, max_steps) -> float:
    """The learning rate whose run gets every target there in the fewest steps (or, if none
    does, the most targets there by the end)."""
    def cost(lr):
        _, first = gradient_descent(model, start, targets, lr, max_steps)
        return (first.max(), -np.mean(first <= max_steps))

    return min(rates, key=cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--sweep", type=int, default=1000, help="targets of the learning-rate sweep")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1])
    add_results_options(parser)
    args = parser.parse_args()
    torch.set_num_threads(vsfast.get_num_threads())

    model = mnist.models.load("fcnn5")
    model.requires_grad_(False)
    images, labels = mnist.load("test")
    images, labels = images[: args.targets], labels[: args.targets]
    targets = model_outputs(model, images)[same_class_partners(labels)]

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vsfast.RangeWarning)  # nearly every target needs the repair
        for dtype in (np.float32, np.float64):
            invert(model, targets[:10], method="pinv", reference=images[:10], reference_layers="all", dtype=dtype)
            begin = time.perf_counter()
            result = invert(model, targets, method="pinv", reference=images, reference_layers="all", dtype=dtype)
            rows.append((np.dtype(dtype).name, time.perf_counter() - begin, result))
    vsfast_time = rows[0][1]
    if np.any(rows[0][2].error > TOL):
        raise SystemExit(f"vsfast left {int(np.sum(rows[0][2].error > TOL))} target(s) above {TOL:g}")

    lr = best_rate(model, images[: args.sweep], targets[: args.sweep], args.lr, args.max_steps)
    clock, first = gradient_descent(model, images, targets, lr, args.max_steps)

    title = (f"{len(targets):,} targets through FCNN-5 (784-512-256-128-64-10, SELU), every one to a relative "
             f"output error of {TOL:g}")
    columns = ["method", "targets reached", "time", "speed-up of vsfast (float32)", "max relative error", "median"]
    table = []
    for name, seconds, result in rows:
        repaired = int(np.sum(result.iterations > 0))
        table.append([f"vsfast pinv, {name} ({repaired:,} repaired, {result.iterations.mean():.1f} steps each)",
                      f"{np.mean(result.error <= TOL):.0%}", f"{seconds:.2f} s", "", f"{result.error.max():.1e}",
                      f"{np.median(result.error):.1e}"])
    for fraction in FRACTIONS:
        step = steps_to(first, fraction)
        seconds = clock[min(step, len(clock)) - 1]
        mark = ">" if step > args.max_steps else ""
        table.append([f"gradient descent (Adam, lr {lr:g}, torch float32)", f"{fraction:.0%}",
                      f"{mark}{seconds:.1f} s ({mark}{min(step, args.max_steps)} steps)",
                      f"{mark}{seconds / vsfast_time:.0f}×", "", ""])
    publish(args, "inverse.py", markdown_table(title, columns, table))


if __name__ == "__main__":
    main()
