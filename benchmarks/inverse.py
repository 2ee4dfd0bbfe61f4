"""Inputs for 10,000 chosen outputs of FCNN-5: vsfast.invert (the chained pseudoinverse, repaired by
Gauss-Newton where the preimage leaves the SELU range) against the paper's approach, gradient
descent on the input (Adam, torch), measured in one run.

    .venv/bin/python benchmarks/inverse.py [--targets N] [--max-steps N] [--lr LR [LR ...]] [--rounds N]
                                           [--no-profile] [--no-write]

Each test digit is moved to produce the outputs of another test digit of its class, so every
target is reachable. Both methods start from the digit (vsfast: the reference, at every layer) and
must bring every target to a relative output error of 1e-4, in float32. Gradient descent is given
every advantage: its learning rate is the best of a sweep on the first --sweep targets (fewest
steps until every one of them got there), it runs on all targets in one batch, and a target counts
as reached at the first step its error is at most 1e-4, even if later steps take it away again.
Its times to 50, 90, 99 and 100 % of the targets are reported, each against vsfast's time for all
of them; a target not reached within --max-steps makes the last ratios lower bounds (">").
vsfast's two dtypes are timed in turn, the median of --rounds rounds each. Then perf (Linux),
where it is installed and allowed, samples one more float32 and one more float64 run (untimed):
their most frequent symbols go beside the table, so that a machine on which the ratio falls short
shows where its time went (vsfast's compiled module is stripped: its own functions appear
together under its name). The tables are printed and written as the inverse.py section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, interleaved_medians, markdown_table, publish  # noqa: E402

import vsfast  # noqa: E402
from vsfast import mnist  # noqa: E402
from vsfast.inverse import invert, model_outputs  # noqa: E402

TOL = 1e-4
FRACTIONS = (0.5, 0.9, 0.99, 1.0)
TOP_SYMBOLS = 12


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


def perf_samples(run) -> tuple[list[tuple[float, str, str]], str]:
    """perf's samples of this process (every thread) while ``run()`` runs, as (share in %,
    library, symbol), most frequent first: symbols by their short names (the instantiations of a
    template together) and the unnamed addresses of a stripped library together; or no rows and
    the reason there are none."""
    perf = shutil.which("perf")
    if perf is None:
        return [], "perf is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        record = subprocess.Popen([perf, "record", "-q", "-F", "999", "-o", str(data), "-p", str(os.getpid())],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # perf attaches to every thread of the process
        if record.poll() is not None:
            return [], f"perf record failed: {record.stderr.read().strip()[:200]}"
        run()
        record.send_signal(signal.SIGINT)
        record.wait()
        report = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
                                 "-t", "|"], capture_output=True, text=True)
    rows = symbol_shares(report.stdout)
    if not rows:
        return [], f"perf report gave no samples: {report.stderr.strip()[:200]}"
    return rows, ""


def symbol_shares(report: str) -> list[tuple[float, str, str]]:
    """`perf report -t '|' --sort dso,sym` as (share in %, library, short symbol), most frequent
    first, the addresses of a stripped library summed under one name."""
    shares: dict[tuple[str, str], float] = {}
    for line in report.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if line.startswith("#") or len(fields) != 3 or not fields[0].endswith("%"):
            continue
        library, symbol = fields[1], short_symbol(fields[2].split("] ", 1)[-1])
        if symbol.startswith("0x"):  # an address in a stripped library
            symbol = "(its functions together: stripped)"
        shares[library, symbol] = shares.get((library, symbol), 0.0) + float(fields[0][:-1])
    return sorted(((share, lib, sym) for (lib, sym), share in shares.items()), reverse=True)


def short_symbol(name: str) -> str:
    """A C++ symbol without its template arguments and parameter lists:
    ``vsfast::NewtonSolver<float>::run`` -> ``vsfast::NewtonSolver::run``."""
    out, depth = [], 0
    for char in name:
        depth += char in "<("
        if depth == 0:
            out.append(char)
        depth -= char in ">)"
    return "".join(out)


def profile_table(title: str, run) -> str:
    rows, why = perf_samples(run)
    if not rows:
        return f"{title}: no profile ({why})."
    shown = rows[:TOP_SYMBOLS]
    rest = 100.0 - sum(share for share, _, _ in shown)
    body = [[f"{share:.1f} %", f"`{lib}`", f"`{sym}`"] for share, lib, sym in shown]
    body.append([f"{rest:.1f} %", "", f"the other {len(rows) - len(shown)} symbols"])
    return markdown_table(title, ["samples", "library", "symbol"], body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--sweep", type=int, default=1000, help="targets of the learning-rate sweep")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of vsfast's timings (median)")
    parser.add_argument("--no-profile", action="store_true", help="skip the perf profile")
    add_results_options(parser)
    args = parser.parse_args()
    torch.set_num_threads(vsfast.get_num_threads())

    model = mnist.models.load("fcnn5")
    model.requires_grad_(False)
    images, labels = mnist.load("test")
    images, labels = images[: args.targets], labels[: args.targets]
    targets = model_outputs(model, images)[same_class_partners(labels)]

    results = {}

    def vsfast_run(dtype):
        def run():
            # box=None: the exact chained preimage, as gradient descent here is unbounded too
            # (invert's default for image models is the box-constrained solve, benchmarks/box.py).
            results[np.dtype(dtype).name] = invert(model, targets, method="pinv", reference=images,
                                                   reference_layers="all", dtype=dtype, box=None)
        return run

    dtypes = (np.float32, np.float64)
    profiles = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vsfast.RangeWarning)  # nearly every target needs the repair
        for dtype in dtypes:
            invert(model, targets[:10], method="pinv", reference=images[:10], reference_layers="all", dtype=dtype,
                   box=None)
        seconds = interleaved_medians([vsfast_run(dtype) for dtype in dtypes], args.rounds, warmup=0)
        if not args.no_profile:
            for dtype in dtypes:
                name = np.dtype(dtype).name
                profiles.append(profile_table(f"Where vsfast's {name} run spends its time (perf, every thread)",
                                              vsfast_run(dtype)))
    rows = [(np.dtype(dtype).name, t, results[np.dtype(dtype).name]) for dtype, t in zip(dtypes, seconds)]
    vsfast_time = rows[0][1]
    if np.any(rows[0][2].error > TOL):
        raise SystemExit(f"vsfast left {int(np.sum(rows[0][2].error > TOL))} target(s) above {TOL:g}")

    lr = best_rate(model, images[: args.sweep], targets[: args.sweep], args.lr, args.max_steps)
    clock, first = gradient_descent(model, images, targets, lr, args.max_steps)

    title = (f"{len(targets):,} targets through FCNN-5 (784-512-256-128-64-10, SELU), every one to a relative "
             f"output error of {TOL:g}")
    columns = ["method", "targets reached", "time", "speed-up of vsfast float32", "speed-up of vsfast float64",
               "max relative error", "median"]
    table = []
    for name, seconds, result in rows:
        repaired = int(np.sum(result.iterations > 0))
        table.append([f"vsfast pinv, {name} ({repaired:,} repaired, {result.iterations.mean():.1f} steps each)",
                      f"{np.mean(result.error <= TOL):.0%}", f"{seconds:.2f} s", "", "", f"{result.error.max():.1e}",
                      f"{np.median(result.error):.1e}"])
    for fraction in FRACTIONS:
        step = steps_to(first, fraction)
        seconds = clock[min(step, len(clock)) - 1]
        mark = ">" if step > args.max_steps else ""
        table.append([f"gradient descent (Adam, lr {lr:g}, torch float32)", f"{fraction:.0%}",
                      f"{mark}{seconds:.1f} s ({mark}{min(step, args.max_steps)} steps)",
                      f"{mark}{seconds / vsfast_time:.0f}×", f"{mark}{seconds / rows[1][1]:.0f}×", "", ""])
    note = (f"vsfast: median of {args.rounds} rounds, float32 and float64 in turn; gradient descent: one run, "
            "its clock at the step each fraction was reached.")
    body = "\n\n".join([markdown_table(title, columns, table) + "\n\n" + note, *profiles])
    publish(args, "inverse.py", body)


if __name__ == "__main__":
    main()
