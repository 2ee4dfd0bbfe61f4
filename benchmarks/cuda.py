"""GPU ratios: vsfast's CUDA module against its cuBLAS GEMM floor, torch.svd_lowrank and
torch.linalg.svd on the same GPU, all measured in one run.

    .venv/bin/python benchmarks/cuda.py [--rounds N] [--quick] [--tf32] [--linalg-rounds N] [--no-write]

Prints a Markdown table per workload group, and writes them as the cuda.py section of
benchmarks/RESULTS.md: median GPU times (CUDA events, after warm-up), the ratios that matter and
the accuracy relative to torch.svd_lowrank (spectral-norm error of the rank-k approximation, in
float64 on the GPU). Exits with a message, and status 0, where there is no GPU; it then writes
nothing.
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
    K, OVERSAMPLE, POWER_ITERS, RSVD_SHAPES, TorchChain, add_results_options, fcnn5_like_chain, layer_like,
    markdown_table, publish, torch_lowrank, torch_projection,
)

GPU_SHAPES = RSVD_SHAPES + [(8192, 8192), (256, 512, 4608)]


def gpu_time(fn, rounds: int, warmup: int = 2) -> float:
    """Median seconds of fn on the current stream, by CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return float(np.median(times))


def device_line() -> str:
    """The GPU and the CUDA stack that measured: the line under the section's header."""
    props = torch.cuda.get_device_properties(0)
    return (f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, vsfast precision {vsfast.get_gpu_precision()}")


def gemm_floor(a: torch.Tensor):
    """The (2q + 2) passes of matrix products over A that a randomized SVD cannot avoid, each
    2·m·n·(k + p) flops, with cuBLAS through torch.matmul (no TF32), for one matrix or a batch."""
    *_, m, n = a.shape
    l = K + OVERSAMPLE
    sketch_n = torch.ones(n, l, device=a.device, dtype=a.dtype)
    sketch_m = torch.ones(m, l, device=a.device, dtype=a.dtype)
    at = a.transpose(-1, -2)

    def passes():
        for _ in range(POWER_ITERS + 1):
            torch.matmul(a, sketch_n)   # A Z
            torch.matmul(at, sketch_m)  # A^T Y

    return passes


def spectral_error(a: torch.Tensor, u, s, vh, iters: int = 30) -> float:
    """||A - U S Vh||_2 by power iteration on the residual, in float64 on the GPU (never formed)."""
    a64, u64, s64, vh64 = (t.to(torch.float64) for t in (a, u, s, vh))
    generator = torch.Generator(a.device).manual_seed(0)
    x = torch.randn(a.shape[-1], dtype=torch.float64, device=a.device, generator=generator)
    norm = 0.0
    for _ in range(iters):
        x = x / torch.linalg.norm(x)
        y = a64 @ x - u64 @ (s64 * (vh64 @ x))
        x = a64.T @ y - vh64.T @ (s64 * (u64.T @ y))
        norm = float(torch.sqrt(torch.linalg.norm(x)))
    return norm


def rsvd_row(shape, rounds: int, linalg_rounds: int, tf32: bool) -> list:
    a = torch.from_numpy(layer_like(shape)).cuda()
    ours_fn = lambda: vsfast.rsvd(a, K, oversample=OVERSAMPLE, power_iters=POWER_ITERS)  # noqa: E731
    floor = gpu_time(gemm_floor(a), rounds)
    ours = gpu_time(ours_fn, rounds)
    lowrank = gpu_time(lambda: torch_lowrank(a), rounds)
    full = None
    if linalg_rounds:
        full = gpu_time(lambda: torch.linalg.svd(a, full_matrices=False), linalg_rounds, warmup=1)
    first = (lambda t: t[0]) if a.ndim == 3 else (lambda t: t)
    u, s, vh = ours_fn()
    torch.manual_seed(0)
    tu, ts, tv = torch_lowrank(a)
    err_ours = spectral_error(first(a), first(u), first(s), first(vh))
    err_torch = spectral_error(first(a), first(tu)[:, :K], first(ts)[:K], first(tv)[:, :K].T)
    row = ["rsvd " + "×".join(map(str, shape)), ours, floor, lowrank, full, err_ours / err_torch]
    if tf32:
        vsfast.set_gpu_precision("tf32")
        try:
            fast = gpu_time(ours_fn, rounds)
            err_fast = spectral_error(first(a), *(first(t) for t in ours_fn()))
        finally:
            vsfast.set_gpu_precision("float32")
        row += [fast, err_fast / err_torch]
    return row


def projection_row(n: int, r: int, rounds: int, inputs: int = 10_000) -> list:
    rng = np.random.default_rng(1)
    sp = vsfast.spaces(torch.from_numpy(layer_like((r, n))).cuda())
    x = torch.from_numpy(rng.standard_normal((inputs, n), dtype=np.float32)).cuda()
    v = sp.signal.contiguous()
    vt = v.T.contiguous()
    floor = gpu_time(lambda: (x @ v) @ vt, rounds)
    ours = gpu_time(lambda: vsfast.project(x, sp), rounds)
    theirs = gpu_time(lambda: torch_projection(x, v), rounds)
    ref = (x.double() @ v.double()) @ v.double().T

    def split_error(signal, residual):
        return max(float((signal - ref).abs().max()), float((residual - (x.double() - ref)).abs().max()))

    acc = split_error(*vsfast.project(x, sp)) / split_error(*torch_projection(x, v))
    return [f"project {inputs:,}×{n} onto rank {sp.rank}", ours, floor, theirs, None, acc]


def chain_row(rounds: int, targets: int = 10_000) -> list:
    layers = fcnn5_like_chain()
    gpu_layers = [(torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda(), a) for w, b, a in layers]
    chain = vsfast.Chain(gpu_layers)
    rng = np.random.default_rng(2)
    y = chain.forward(torch.from_numpy(rng.random((targets, 784), dtype=np.float32)).cuda())
    cpu = TorchChain.from_layers(layers)
    tchain = TorchChain([p.cuda() for p in cpu.pinvs], [b.cuda() for b in cpu.biases], cpu.acts)
    hs = [torch.ones(targets, p.shape[0], device="cuda") for p in reversed(tchain.pinvs)]
    floor = gpu_time(lambda: [h @ p for h, p in zip(hs, reversed(tchain.pinvs))], rounds)
    ours = gpu_time(lambda: chain.reconstruct(y), rounds)
    theirs = gpu_time(lambda: tchain.reconstruct(y), rounds)

    def rel_err(x):
        back = chain.forward(x).double()
        return float(torch.median(torch.linalg.norm(back - y, dim=1) / torch.linalg.norm(y, dim=1)))

    acc = rel_err(chain.reconstruct(y).inputs) / rel_err(tchain.reconstruct(y))
    return [f"reconstruct {targets:,} targets, 784-512-256-128-64-10 SELU", ours, floor, theirs, None, acc]


def ms(t) -> str:
    return "—" if t is None else f"{t * 1e3:.2f} ms"


def speedup(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--linalg-rounds", type=int, default=1,
                        help="rounds of torch.linalg.svd (seconds per call on the large shapes); 0 skips it")
    parser.add_argument("--quick", action="store_true", help="only the first and the largest single shape")
    parser.add_argument("--tf32", action="store_true", help="also time vsfast with TF32 products (opt-in precision)")
    add_results_options(parser)
    args = parser.parse_args()
    if not vsfast.cuda_available() or not torch.cuda.is_available():
        why = vsfast.show_config(mode="dicts")["cuda"].get("why") or "torch sees no CUDA device"
        print(f"benchmarks/cuda.py: no GPU to measure on ({why}); nothing timed.")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # the floor and the baselines in full float32
    shapes = [GPU_SHAPES[0], (8192, 8192)] if args.quick else GPU_SHAPES
    rows = [rsvd_row(s, args.rounds, args.linalg_rounds, args.tf32) for s in shapes]
    columns = ["workload", "vsfast", "GEMM floor", "svd_lowrank", "linalg.svd", "vsfast / floor",
               "speed-up vs svd_lowrank", "speed-up vs linalg.svd", "error vs svd_lowrank"]
    if args.tf32:
        columns += ["vsfast TF32", "TF32 error vs svd_lowrank"]
    table = []
    for name, ours, floor, lowrank, full, acc, *tf in rows:
        line = [name, ms(ours), ms(floor), ms(lowrank), ms(full), f"{ours / floor:.2f}", speedup(lowrank / ours),
                "—" if full is None else speedup(full / ours), f"{acc:.2f}"]
        if args.tf32:
            line += [ms(tf[0]), f"{tf[1]:.2f}"]
        table.append(line)
    others = [projection_row(784, 512, args.rounds), projection_row(4608, 512, args.rounds), chain_row(args.rounds)]
    rsvd_table = markdown_table(f"float32, k={K}, oversample={OVERSAMPLE}, power_iters={POWER_ITERS}, median of "
                                f"{args.rounds} rounds (torch.linalg.svd: {args.linalg_rounds})", columns, table)
    other_table = markdown_table(
        "Projection and chained reconstruction, float32, same run",
        ["workload", "vsfast", "GEMM floor", "torch", "vsfast / floor", "speed-up vs torch", "error vs torch"],
        [[name, ms(ours), ms(floor), ms(theirs), f"{ours / floor:.2f}", f"{theirs / ours:.2f}×", f"{acc:.2f}"]
         for name, ours, floor, theirs, _, acc in others])
    publish(args, "cuda.py", f"{device_line()}\n\n{rsvd_table}\n\n{other_table}")


if __name__ == "__main__":
    main()
