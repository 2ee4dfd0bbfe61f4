"""Analysing whole models: vsfast.analyze against the paper's reference approach and torch, in one run.

    .venv/bin/python benchmarks/analysis.py [--rounds N] [--llm-layers N] [--numpy-layers N] [--no-write]

Workloads: every layer of ResNet18 (exact spaces; the trained weights when cached, else the
initial ones) and a stack of LLM-sized layers (4096 x 11008, top-64 spaces). Baselines, per
layer: (a) the paper's approach, numpy's full SVD plus ``matrix_rank``; (b) torch.linalg:
``torch.linalg.svd(W, full_matrices=False)`` for exact spaces, ``torch.svd_lowrank(W, q=k+10,
niter=2)`` for top-k. All LLM layers have the same shape, so (a) is timed on ``--numpy-layers``
of them (a full SVD of one takes about a minute and a half here) and scaled to the stack.

Accuracy, relative to torch's (1.00 = equal, below 1 = better): for exact spaces the largest
singular-value error against float64 over sigma_1, for top-k the spectral-norm error of the
rank-k approximation. The table is printed and written as the analysis.py section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    K, OVERSAMPLE, POWER_ITERS, add_results_options, layer_like, markdown_table, median_time, publish,
    spectral_error,
)

import vsfast  # noqa: E402
from vsfast.mnist import models  # noqa: E402
from vsfast.analysis import layer_matrix  # noqa: E402

LLM_SHAPE = (4096, 11008)


def resnet18() -> tuple[nn.Module, str]:
    cached = models.models_cache_dir() / "resnet18.safetensors"
    if cached.is_file():
        return models.load("resnet18"), "trained"
    return models.load("resnet18", pretrained=False), "initial"


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m[0] for name, module in model.named_modules() if (m := layer_matrix(module, name)) is not None]


def paper_reference(w: np.ndarray):
    return np.linalg.svd(w), np.linalg.matrix_rank(w)


def singular_value_error(mats, computed) -> float:
    worst = 0.0
    for w, s in zip(mats, computed):
        exact = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
        worst = max(worst, float(np.max(np.abs(np.asarray(s, np.float64) - exact)) / exact[0]))
    return worst


def resnet_row(rounds: int):
    model, which = resnet18()
    mats = weights(model)
    ours = median_time(lambda: vsfast.analyze(model, bases=True), rounds)  # spaces, as torch's U, S, Vh
    torch_time = median_time(lambda: [torch.linalg.svd(w, full_matrices=False) for w in mats], rounds)
    arrays = [w.numpy() for w in mats]
    paper = median_time(lambda: [paper_reference(a) for a in arrays], 1, warmup=0)
    ours_err = singular_value_error(arrays, [layer.singular_values for layer in vsfast.analyze(model)])
    torch_err = singular_value_error(arrays, [torch.linalg.svdvals(w) for w in mats])
    return [f"ResNet18 ({which}), {len(mats)} layers, exact", ours, paper, torch_time, ours_err / torch_err]


def llm_row(rounds: int, layers: int, numpy_layers: int):
    stack = layer_like((layers, *LLM_SHAPE))
    model = nn.Sequential(*[nn.Linear(LLM_SHAPE[1], LLM_SHAPE[0], bias=False) for _ in range(layers)])
    for module, w in zip(model, stack):
        module.weight = nn.Parameter(torch.from_numpy(w), requires_grad=False)
    mats = [module.weight for module in model]

    def ours_fn():
        return vsfast.analyze(model, k=K, bases=True)

    def torch_fn():
        return [torch.svd_lowrank(w, q=K + OVERSAMPLE, niter=POWER_ITERS) for w in mats]

    ours = median_time(ours_fn, rounds)
    torch_time = median_time(torch_fn, rounds)
    paper = median_time(lambda: [paper_reference(stack[i]) for i in range(numpy_layers)], 1, warmup=0)
    paper *= layers / numpy_layers

    checked = range(min(4, layers))
    report, theirs = ours_fn(), torch_fn()
    ours_err = np.median([spectral_error(stack[i], report[i].spaces.signal_out, report[i].singular_values,
                                         report[i].spaces.signal_rows) for i in checked])
    torch_err = np.median([spectral_error(stack[i], theirs[i][0][:, :K], theirs[i][1][:K], theirs[i][2][:, :K].T)
                           for i in checked])
    name = f"{layers} × {LLM_SHAPE[0]}×{LLM_SHAPE[1]}, top-{K}"
    if numpy_layers < layers:
        name += f" (numpy timed on {numpy_layers}, scaled)"
    return [name, ours, paper, torch_time, ours_err / torch_err]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--llm-layers", type=int, default=32)
    parser.add_argument("--numpy-layers", type=int, default=1)
    add_results_options(parser)
    args = parser.parse_args()
    torch.set_num_threads(vsfast.get_num_threads())
    rows = [resnet_row(args.rounds), llm_row(args.rounds, args.llm_layers, args.numpy_layers)]

    title = f"float32, median of {args.rounds} rounds (numpy: one round)"
    columns = ["workload", "vsfast", "numpy SVD + matrix_rank", "torch.linalg", "speed-up vs numpy",
               "speed-up vs torch", "error vs torch"]
    table = [[name, f"{ours:.2f} s", f"{paper:.1f} s", f"{theirs:.2f} s", f"{paper / ours:.0f}×",
              f"{theirs / ours:.2f}×", f"{acc:.2f}"] for name, ours, paper, theirs, acc in rows]
    publish(args, "analysis.py", markdown_table(title, columns, table))


if __name__ == "__main__":
    main()
