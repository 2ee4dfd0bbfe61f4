"""Time ratios of vsfast against its GEMM floor and the torch baselines, measured in one run.

    .venv/bin/python benchmarks/ratios.py [--rounds N] [--quick] [--no-write]

Prints a Markdown table, and writes it as the ratios.py section of benchmarks/RESULTS.md: medians
of N rounds, the ratios that matter, and the accuracy of each result relative to torch's
(spectral-norm error of the rank-k approximation). Within each round
the GEMM floor, vsfast and torch are timed in turn, each after a short pause that lets the
threads of the previous call go idle.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import vsfast  # noqa: E402
from common import (  # noqa: E402
    K, OVERSAMPLE, POWER_ITERS, RSVD_SHAPES, TorchChain, _gemm_rowmajor, add_results_options, fcnn5_like_chain,
    interleaved_medians, layer_like, markdown_table, publish, rsvd_floor_passes, spectral_error, threaded,
    torch_lowrank, torch_projection,
)


def rsvd_row(shape, rounds):
    a = layer_like(shape)
    at = torch.from_numpy(a)
    floor, ours, theirs = interleaved_medians(
        [threaded(rsvd_floor_passes(a)), lambda: vsfast.rsvd(a, K, oversample=OVERSAMPLE, power_iters=POWER_ITERS),
         lambda: torch_lowrank(at)], rounds)
    u, s, vh = vsfast.rsvd(a, K, oversample=OVERSAMPLE, power_iters=POWER_ITERS)
    torch.manual_seed(0)
    tu, ts, tv = torch_lowrank(at)
    first = (lambda t: t[0]) if a.ndim == 3 else (lambda t: t)
    err_ours = spectral_error(first(a), first(u), first(s), first(vh))
    err_torch = spectral_error(first(a), first(tu)[:, :K].numpy(), first(ts)[:K].numpy(),
                               first(tv)[:, :K].numpy().T)
    return ["rsvd " + "×".join(map(str, shape)), ours, floor, theirs, err_ours / err_torch]


def projection_row(n, r, rounds, inputs=10_000):
    rng = np.random.default_rng(1)
    sp = vsfast.spaces(layer_like((r, n)))
    x = rng.standard_normal((inputs, n), dtype=np.float32)
    v = np.ascontiguousarray(sp.signal)
    xt, vt = torch.from_numpy(x), torch.from_numpy(v)
    coef, sig = np.empty((inputs, sp.rank), np.float32), np.empty_like(x)
    rows_t = np.ascontiguousarray(v.T)

    def floor_passes():
        _gemm_rowmajor(False, inputs, sp.rank, n, x, v, coef)
        _gemm_rowmajor(False, inputs, n, sp.rank, coef, rows_t, sig)

    floor, ours, theirs = interleaved_medians(
        [threaded(floor_passes), lambda: vsfast.project(x, sp), lambda: torch_projection(xt, vt)], rounds)
    ref = (x.astype(np.float64) @ v.astype(np.float64)) @ v.T.astype(np.float64)

    def split_error(signal, residual):  # max error of either part against float64
        return max(np.abs(np.asarray(signal) - ref).max(), np.abs(np.asarray(residual) - (x - ref)).max())

    acc = split_error(*vsfast.project(x, sp)) / split_error(*(t.numpy() for t in torch_projection(xt, vt)))
    return [f"project {inputs:,}×{n} onto rank {sp.rank}", ours, floor, theirs, acc]


def chain_row(rounds, targets=10_000):
    layers = fcnn5_like_chain()
    chain = vsfast.Chain(layers)
    rng = np.random.default_rng(2)
    y = chain.forward(rng.random((targets, 784), dtype=np.float32))
    tchain = TorchChain.from_layers(layers)
    yt = torch.from_numpy(y)
    bufs = []
    for w, _, _ in reversed(layers):
        m, n = w.shape
        bufs.append((np.ones((targets, m), np.float32), np.ascontiguousarray(np.linalg.pinv(w).T),
                     np.empty((targets, n), np.float32)))

    def floor_passes():
        for h, p, out in bufs:
            _gemm_rowmajor(False, targets, p.shape[1], p.shape[0], h, p, out)

    floor, ours, theirs = interleaved_medians(
        [threaded(floor_passes), lambda: chain.reconstruct(y), lambda: tchain.reconstruct(yt)], rounds)

    def rel_err(x):
        back = chain.forward(np.asarray(x, np.float32)).astype(np.float64)
        return np.median(np.linalg.norm(back - y, axis=1) / np.linalg.norm(y, axis=1))

    acc = rel_err(chain.reconstruct(y).inputs) / rel_err(tchain.reconstruct(yt).numpy())
    return [f"reconstruct {targets:,} targets, 784-512-256-128-64-10 SELU", ours, floor, theirs, acc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="only the smaller shapes")
    add_results_options(parser)
    args = parser.parse_args()
    torch.set_num_threads(vsfast.get_num_threads())
    shapes = RSVD_SHAPES[:1] if args.quick else RSVD_SHAPES
    rows = [rsvd_row(s, args.rounds) for s in shapes]
    rows.append(projection_row(784, 512, args.rounds))
    if not args.quick:
        rows.append(projection_row(4608, 512, args.rounds))
    rows.append(chain_row(args.rounds))

    title = f"float32, k={K}, oversample={OVERSAMPLE}, power_iters={POWER_ITERS}, median of {args.rounds} rounds"
    columns = ["workload", "vsfast", "GEMM floor", "torch", "vsfast / floor", "torch / floor", "speed-up vs torch",
               "error vs torch"]
    table = [[name, f"{ours * 1e3:.1f} ms", f"{floor * 1e3:.1f} ms", f"{theirs * 1e3:.1f} ms", f"{ours / floor:.2f}",
              f"{theirs / floor:.2f}", f"{theirs / ours:.2f}×", f"{acc:.2f}"]
             for name, ours, floor, theirs, acc in rows]
    publish(args, "ratios.py", markdown_table(title, columns, table))


if __name__ == "__main__":
    main()
