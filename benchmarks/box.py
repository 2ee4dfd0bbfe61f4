"""Inputs in the pixel box for chosen outputs of FCNN-5: vsfast's box-constrained inversion
(Chain.solve_box: projected Gauss-Newton through the chain, its quadratic programs solved in the
dual) against projected gradient descent in torch and against scipy.optimize.lsq_linear per
target, on the same problem, measured in one run.

    .venv/bin/python benchmarks/box.py [--targets N] [--lsq-targets N] [--max-steps N] [--threads N] [--no-write]

The problem: FCNN-5 in float32; targets its own outputs on the first N test digits (each has a
preimage in [0, 1]: the digit); reference the mean training digit of the target's class; a target
counts as reached when its input lies in [0, 1] and its relative output error through the model
is at most 1e-4.

- vsfast: vsfast.Chain.solve_box on all targets in one call (float32); the median of --rounds
  runs. vsfast and torch run on --threads threads alike.
- projected gradient descent (torch, float32, all targets in one batch): Adam steps on the
  inputs, started at the reference, each followed by the projection onto the box (a clamp), on
  the loss sum of ||f(x) - y||^2 / ||y||^2; its learning rate is the best of a sweep on the first
  --sweep targets. It looks for any input in the box, not the nearest one: it is timed to the
  first step each target is reached, which favours it.
- lsq_linear (scipy, float64, per target, on the first --lsq-targets targets): the same Gauss-
  Newton iteration as vsfast's, with each quadratic program min ||x - a||^2 + w^2 ||J x - c||^2
  over the box solved by scipy.optimize.lsq_linear (the equality as rows of weight w = 1e4, the
  usual way to give a bound-constrained least-squares solver an equality), and J from torch.

Printed, and written as the box.py section of benchmarks/RESULTS.md: targets reached, median
distance to the reference, time, targets per second and vsfast's speed-up over each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, interleaved_medians, markdown_table, publish  # noqa: E402

import vsfast  # noqa: E402
from vsfast import mnist  # noqa: E402
from vsfast.inverse import model_outputs  # noqa: E402
from vsfast.mnist import models  # noqa: E402
from vsfast.nn import chain_layers  # noqa: E402

TOL = 1e-4
LOW, HIGH = 0.0, 1.0


def relative_errors(model, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = model_outputs(model, np.asarray(x, np.float32).reshape(-1, 1, 28, 28))
    return np.linalg.norm(out - targets, axis=1) / np.linalg.norm(targets, axis=1)


def reached(model, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    flat = np.asarray(x).reshape(len(targets), -1)
    inside = (flat.min(axis=1) >= LOW) & (flat.max(axis=1) <= HIGH)
    return inside & (relative_errors(model, flat, targets) <= TOL)


def projected_gradient(model, start: np.ndarray, targets: np.ndarray, lr: float, max_steps: int):
    """Adam plus clamp on all targets at once: (seconds after each step, the step at which each
    target first reached TOL inside the box, or max_steps + 1, the inputs at that step)."""
    x = torch.tensor(start.reshape(-1, 1, 28, 28), dtype=torch.float32, requires_grad=True)
    y = torch.from_numpy(targets).float()
    scale = y.norm(dim=1)
    first = torch.full((len(y),), max_steps + 1)
    found = x.detach().clone()
    opt = torch.optim.Adam([x], lr=lr)
    clock = []
    begin = time.perf_counter()
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        loss = (((model(x) - y).norm(dim=1) / scale) ** 2).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(LOW, HIGH)
            err = (model(x) - y).norm(dim=1) / scale
            new = (err <= TOL) & (first > max_steps)
            first[new] = step
            found[new] = x[new]
        clock.append(time.perf_counter() - begin)
        if bool((first <= max_steps).all()):
            break
    return np.array(clock), first.numpy(), found.numpy().reshape(len(y), -1)


def lsq_linear_solve(model64, target: np.ndarray, reference: np.ndarray, max_iter: int = 30, weight: float = 1e4):
    """vsfast's Gauss-Newton iteration for one target with scipy's lsq_linear as the quadratic
    program solver: the full step (project the reference), else the restoring one (project the
    current input), accepted while the output error falls, then while the distance does."""
    from scipy.optimize import lsq_linear

    def forward(v):
        with torch.no_grad():
            return model64(torch.from_numpy(v.reshape(1, 1, 28, 28)))[0].numpy()

    def jacobian(v):
        return torch.autograd.functional.jacobian(lambda z: model64(z.reshape(1, 1, 28, 28))[0],
                                                  torch.from_numpy(v)).numpy()

    def project(point, J, c):
        n = len(point)
        a = np.vstack([np.eye(n), weight * J])
        b = np.concatenate([point, weight * c])
        return lsq_linear(a, b, bounds=(LOW, HIGH), method="bvls").x

    norm = np.linalg.norm(target)
    x = np.clip(reference, LOW, HIGH)
    err = np.linalg.norm(forward(x) - target) / norm
    for _ in range(max_iter):
        J = jacobian(x)
        c = J @ x + target - forward(x)
        moved = False
        for point in (reference, x):
            trial = project(point, J, c)
            trial_err = np.linalg.norm(forward(trial) - target) / norm
            if (err > TOL and trial_err < err) or (err <= TOL and trial_err <= TOL and
                                                    np.linalg.norm(trial - reference) < np.linalg.norm(x - reference)):
                step = np.linalg.norm(trial - x)
                x, err, moved = trial, trial_err, True
                break
        if not moved or (err <= TOL and step < 1e-3 * np.linalg.norm(x - reference)):
            break
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000, help="targets for vsfast and gradient descent")
    parser.add_argument("--lsq-targets", type=int, default=5, help="targets for lsq_linear (per target: minutes)")
    parser.add_argument("--max-steps", type=int, default=3000, help="gradient descent steps at most")
    parser.add_argument("--sweep", type=int, default=100, help="targets of the learning-rate sweep")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.003, 0.01, 0.03], help="learning rates swept")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of vsfast (median)")
    parser.add_argument("--threads", type=int, default=vsfast.get_num_threads(),
                        help="threads of vsfast and of torch alike (default: vsfast's, %(default)s)")
    add_results_options(parser)
    args = parser.parse_args()
    vsfast.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/box.py needs scipy for its lsq_linear baseline: pip install scipy")

    (train, train_labels), (test, _) = mnist.load("train"), mnist.load("test")
    model = models.load("fcnn5")
    targets = model_outputs(model, test[:args.targets])
    classes = targets.argmax(axis=1)
    means = np.stack([train[train_labels == c].mean(axis=0) for c in range(10)]).reshape(10, -1)
    reference = means[classes].astype(np.float32)

    chain = vsfast.Chain(chain_layers(model, dtype=torch.float32))
    y32 = targets.astype(np.float32)
    solved = None

    def run_vsfast():
        nonlocal solved
        solved = chain.solve_box(y32, box=(LOW, HIGH), reference=reference)

    (vs_time,) = interleaved_medians([run_vsfast], args.rounds)
    vs_reached = reached(model, solved.inputs, targets)
    vs_distance = np.median(np.linalg.norm(solved.inputs - reference, axis=1))

    # Gradient descent: the learning rate that reaches every sweep target in the fewest steps.
    sweep = slice(0, min(args.sweep, args.targets))
    best = None
    for lr in args.lr:
        _, first, _ = projected_gradient(model, reference[sweep], targets[sweep], lr, args.max_steps)
        score = (int(np.sum(first > args.max_steps)), int(first.max()))
        if best is None or score < best[0]:
            best = (score, lr)
    lr = best[1]
    clock, first, found = projected_gradient(model, reference, targets, lr, args.max_steps)
    gd_done = first <= args.max_steps
    gd_time = clock[min(int(first.max()), len(clock)) - 1]
    gd_distance = np.median(np.linalg.norm(found[gd_done] - reference[gd_done], axis=1)) if gd_done.any() else np.nan

    model64 = models.load("fcnn5").double()
    count = min(args.lsq_targets, args.targets)
    begin = time.perf_counter()
    lsq = np.stack([lsq_linear_solve(model64, targets[i], reference[i].astype(np.float64)) for i in range(count)])
    lsq_time = time.perf_counter() - begin
    lsq_reached = reached(model, lsq, targets[:count])
    lsq_distance = np.median(np.linalg.norm(lsq - reference[:count], axis=1))
    # vsfast on the same subset, for the distances' comparison.
    vs_subset = np.median(np.linalg.norm(solved.inputs[:count] - reference[:count], axis=1))

    def rate(n, seconds):
        return n / seconds

    vs_rate = rate(args.targets, vs_time)
    rows = [
        ["vsfast Chain.solve_box (float32)", f"{args.targets}", f"{vs_reached.mean():.1%}", f"{vs_distance:.2f}",
         f"{vs_time:.2f}", f"{vs_rate:.0f}", "1"],
        [f"projected gradient descent, torch Adam lr {lr:g} (float32)", f"{args.targets}",
         f"{gd_done.mean():.1%}" + ("" if gd_done.all() else f" in {args.max_steps} steps"), f"{gd_distance:.2f}",
         f"{gd_time:.2f}" if gd_done.all() else f"> {clock[-1]:.2f}",
         f"{rate(args.targets, gd_time):.1f}" if gd_done.all() else f"< {rate(args.targets, clock[-1]):.1f}",
         f"{vs_rate / rate(args.targets, gd_time):.0f}" if gd_done.all() else f"> {vs_rate * clock[-1] / args.targets:.0f}"],
        [f"scipy lsq_linear (bvls) per target, same Gauss-Newton loop (float64)", f"{count}",
         f"{lsq_reached.mean():.1%}", f"{lsq_distance:.2f} (vsfast: {vs_subset:.2f})", f"{lsq_time:.2f}",
         f"{rate(count, lsq_time):.2f}", f"{vs_rate / rate(count, lsq_time):.0f}"],
    ]
    title = (f"FCNN-5, targets its outputs on the first test digits, reference the class-mean digit: inputs in "
             f"[0, 1] with relative output error <= {TOL:g} (through the float32 model). Gradient descent's time is to "
             "the step its last target was first reached; its learning rate the best of "
             f"{', '.join(f'{v:g}' for v in args.lr)} on {sweep.stop} targets. Distance: median ||x - reference||.")
    columns = ["method", "targets", "reached", "distance to reference", "time (s)", "targets / s", "vsfast's speed-up"]
    publish(args, "box.py", markdown_table(title, columns, rows))


if __name__ == "__main__":
    main()
