"""Inputs for 10,000 chosen outputs of FCNN-5: the chained pseudoinverse against the paper's
gradient descent on the input, in one run.

    .venv/bin/python benchmarks/inverse.py [--targets N] [--max-steps N]   (default 1,000 and 2,000)

Each test digit is moved to produce the outputs of another test digit of its class: the digit is
the reference (its activations fill every layer's rejected space) and the start of the gradient
search (Adam on the input, torch, float32, all targets in one batch, as the paper does it). Both
must bring every target to a relative output error of 1e-4 (the float32 bound); the gradient
search's time is that of the step where the last target got there, or, when it never does within
--max-steps, a lower bound marked ">".
"""

from __future__ import annotations

import argparse
import time
import warnings

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

import vsfast  # noqa: E402
from vsfast import data, models  # noqa: E402
from vsfast.inverse import invert, model_outputs  # noqa: E402

TOL = 1e-4


def same_class_partners(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each example, another example of its class (a random permutation within each class)."""
    rng = np.random.default_rng(seed)
    partner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        partner[members] = members[np.roll(rng.permutation(len(members)), 1)]
    return partner


def gradient_descent(model, start: np.ndarray, targets: np.ndarray, max_steps: int, lr: float = 1e-3):
    """Adam on the inputs until every relative output error is at most TOL: (seconds, steps, errors)."""
    x = torch.tensor(start, requires_grad=True)
    y = torch.from_numpy(targets).float()
    scale = y.norm(dim=1)
    opt = torch.optim.Adam([x], lr=lr)
    begin = time.perf_counter()
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        err = (model(x) - y).norm(dim=1) / scale
        (err**2).sum().backward()
        opt.step()
        if float(err.detach().max()) <= TOL:
            break
    elapsed = time.perf_counter() - begin
    with torch.no_grad():
        err = ((model(x) - y).norm(dim=1) / scale).numpy()
    return elapsed, step, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(vsfast.get_num_threads())

    model = models.load("fcnn5")
    for p in model.parameters():
        p.requires_grad_(False)
    images, labels = data.mnist("test")
    images, labels = images[: args.targets], labels[: args.targets]
    targets = model_outputs(model, images)[same_class_partners(labels)]

    results = {}
    for dtype in (np.float64,):
        invert(model, targets[:10], method="pinv", reference=images[:10], reference_layers="all", dtype=dtype)
        begin = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", vsfast.RangeWarning)
            result = invert(model, targets, method="pinv", reference=images, reference_layers="all", dtype=dtype)
        results[np.dtype(dtype).name] = (time.perf_counter() - begin, result)
    gd_time, gd_steps, gd_err = gradient_descent(model, images.reshape(len(images), 1, 28, 28), targets,
                                                 args.max_steps)
    gd_done = bool(gd_err.max() <= TOL)

    print(f"{machine_line()}; {len(targets):,} targets through FCNN-5, every one to a relative output "
          f"error of {TOL:g}\n")
    print("| method | time | max relative error | median | targets repaired | speed-up of pinv |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (seconds, result) in results.items():
        ratio = gd_time / seconds
        print(f"| vsfast pinv, {name} | {seconds:.3f} s | {result.error.max():.1e} | {np.median(result.error):.1e} "
              f"| {int(np.sum(result.iterations > 0))} | {'' if gd_done else '>'}{ratio:.2f}× |")
    print(f"| gradient descent (Adam, torch float32), {gd_steps} steps | {'' if gd_done else '>'}{gd_time:.1f} s "
          f"| {gd_err.max():.1e} | {np.median(gd_err):.1e} | | |")


if __name__ == "__main__":
    main()
