"""vsfast.analyze against WeightWatcher 0.7 on the same models: the metrics both compute, and the
time of each one's whole analysis, measured in one run.

    .venv/bin/python benchmarks/vs_weightwatcher.py [--rounds N] [--models resnet50,vit_b_16,fcnn5]
                                                    [--threads 2,1] [--no-write]

Needs ``pip install "weightwatcher>=0.7,<0.8"`` (the ``bench`` extra). Models: torchvision's
ResNet50 and ViT-B/16 with random weights (seed 0) and the paper's FCNN-5 (vsfast.mnist's
shipped weights). WeightWatcher runs with plots and randomization off (``plot=False,
randomize=False``) and ``conv2d_norm=False``, so that it analyses the weights as they are (its
default scales a convolution's slices by sqrt(kh*kw/2)); nothing else changes its work. Each
thread count of ``--threads`` is one row per model: vsfast's threads, and the BLAS threads of
the numpy and scipy WeightWatcher computes with (threadpoolctl), are set to it. Times are medians
of interleaved rounds, after one call of each.

The metrics are compared on the matrices both tools analyse alike: Linear weights and 1x1
convolutions (WeightWatcher reads a k x k convolution as k*k slices of out x in whose eigenvalues
it pools into one spectrum; vsfast reads it as one out x (in k k) patch map, a different matrix).
WeightWatcher's ``spectral_norm`` is the largest eigenvalue of W^T W, sigma_max^2; its
``stable_rank`` is vsfast's; its ``alpha`` is the same Clauset-Shalizi-Newman estimator, compared
where WeightWatcher has at least 20 eigenvalues (below, it switches to a small-sample variant).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, interleaved_medians, markdown_table, median_time, publish  # noqa: E402

import vsfast  # noqa: E402

MODELS = ("resnet50", "vit_b_16", "fcnn5")


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "fcnn5":
        from vsfast.mnist import models

        return models.load("fcnn5").eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval()


def weightwatcher(model):
    import weightwatcher as ww

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze(plot=False, randomize=False, conv2d_norm=False)


def same_matrix(model, row) -> bool:
    """Whether WeightWatcher's layer is the matrix vsfast analyses: a Linear or a 1x1 convolution."""
    module = model.get_submodule(row["longname"])
    if isinstance(module, torch.nn.Linear):
        return True
    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a - b)


def compare(model, report, frame) -> dict:
    """The metrics of the layers both read alike: largest relative differences, and alpha's."""
    ours = {layer.name: layer for layer in report}
    sigma, stable, alphas, different = [], [], [], 0
    for _, row in frame.iterrows():
        layer = ours.get(row["longname"])
        if layer is None or not same_matrix(model, row):
            different += 1
            continue
        if row["spectral_norm"] > 0:
            sigma.append(relative(layer.sigma_max, float(np.sqrt(row["spectral_norm"]))))
            stable.append(relative(layer.stable_rank, float(row["stable_rank"])))
        if row["num_evals"] >= 20 and row["alpha"] > 0 and np.isfinite(layer.alpha):
            alphas.append((relative(layer.alpha, float(row["alpha"])), layer.name, layer.alpha, float(row["alpha"]),
                           layer.metrics.alpha_xmin, float(row["xmin"])))
    alpha_diffs = np.array([a[0] for a in alphas])
    worst = max(alphas, default=None)
    return {"compared": len(sigma), "different": different, "sigma": max(sigma, default=np.nan),
            "stable": max(stable, default=np.nan), "alphas": len(alphas),
            "alpha_equal": int(np.sum(alpha_diffs < 1e-3)), "alpha_median": float(np.median(alpha_diffs)),
            "worst": worst}


@contextmanager
def blas_threads(n: int):
    """numpy's and scipy's BLAS, which WeightWatcher computes with, on n threads; vsfast's own
    OpenBLAS stays as vsfast keeps it (one thread: vsfast threads around it)."""
    import scipy_openblas32
    from threadpoolctl import ThreadpoolController

    ours = Path(scipy_openblas32.get_lib_dir()).resolve()
    libs = [lib for lib in ThreadpoolController().lib_controllers
            if lib.user_api == "blas" and Path(lib.filepath).resolve().parent != ours]
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, count in zip(libs, before):
            lib.set_num_threads(count)


def spectra_floor(report, threads: int) -> float:
    """A lower bound on vsfast's analysis: the exact spectra alone. Each matrix's spectrum on one
    core (the core's float32 route, median of 3 calls on a Gaussian matrix of its shape: the cost
    does not depend on the values), summed over the matrices and spread over the threads, never
    below the largest single one (a spectrum runs on one thread). WeightWatcher's time over this
    is the most any analysis through these spectra could gain."""
    from vsfast import _core

    rng = np.random.default_rng(0)
    cost: dict[tuple[int, int], float] = {}
    for shape in {tuple(layer.shape) for layer in report if layer.method == "exact"}:
        a = rng.standard_normal(shape, dtype=np.float32)
        cost[shape] = median_time(lambda: _core.svdvals_gram(a), 3, settle=0.0)
    each = [cost[tuple(layer.shape)] for layer in report if layer.method == "exact"]
    return max(sum(each) / threads, max(each))


def seconds(t: float) -> str:
    return f"{t:.2f} s" if t >= 1 else f"{t * 1e3:.1f} ms"


def measure(name: str, model, threads: int, rounds: int) -> tuple[list[str], str | None]:
    """One row of the table: both analyses timed on ``threads`` threads, their metrics compared."""
    vsfast.set_num_threads(threads)
    torch.set_num_threads(threads)
    with blas_threads(threads):
        ours_time, theirs_time = interleaved_medians([lambda: vsfast.analyze(model), lambda: weightwatcher(model)],
                                                     rounds)
        report, frame = vsfast.analyze(model), weightwatcher(model)
    floor = spectra_floor(report, threads)
    c = compare(model, report, frame)
    row = [name, str(threads), f"{len(report)} / {len(frame)}", f"{c['compared']}", f"{c['sigma']:.1e}",
           f"{c['stable']:.1e}", f"{c['alpha_equal']} of {c['alphas']}", f"{c['alpha_median']:.1e}",
           seconds(ours_time), seconds(theirs_time), f"{theirs_time / ours_time:.1f}×", seconds(floor),
           f"{theirs_time / floor:.1f}×"]
    note = None
    if c["worst"] is not None and c["worst"][0] >= 1e-3:
        _, layer, a, b, xa, xb = c["worst"]
        note = (f"- {name}, largest alpha difference: {layer}, vsfast {a:.3f} (x_min {xa:.4g}), "
                f"WeightWatcher {b:.3f} (x_min {xb:.4g}).")
    return row, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="2,1", help="thread counts, one row each (default: %(default)s)")
    add_results_options(parser)
    args = parser.parse_args()
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    rows, notes = [], []
    default = vsfast.get_num_threads()
    for name in args.models.split(","):
        model = build(name)
        for threads in (int(t) for t in args.threads.split(",")):
            row, note = measure(name, model, threads, args.rounds)
            rows.append(row)
            notes += [note] if note and note not in notes else []
    vsfast.set_num_threads(default)  # the header names the default; the rows, their own counts

    title = (f"vsfast.analyze (float32, whole spectra, metrics) against WeightWatcher {ww.__version__} "
             f"(plot=False, randomize=False, conv2d_norm=False, float64 scipy SVDs), median of {args.rounds} "
             "interleaved rounds")
    columns = ["model", "threads", "matrices vsfast / WW", "compared", "σ_max max rel. diff",
               "stable rank max rel. diff", "alpha equal (< 1e-3)", "alpha median rel. diff", "vsfast", "WeightWatcher",
               "speed-up", "spectra floor", "speed-up bound"]
    body = markdown_table(title, columns, rows)
    body += ("\n\nspectra floor: vsfast's exact spectra alone, each matrix's on one core, summed and spread over the "
             "threads (never below the largest one); speed-up bound: WeightWatcher's time over it, the most an "
             "analysis through these spectra could gain on this machine.")
    if notes:
        body += "\n\n" + "\n".join(notes)
    publish(args, "vs_weightwatcher.py", body)


if __name__ == "__main__":
    main()
