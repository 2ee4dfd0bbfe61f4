"""vsfast.distributed.rsvd against dask.array.linalg.svd_compressed on one LocalCluster.

    .venv/bin/python benchmarks/dask_rsvd.py [--rows 200000] [--cols 4096] [--chunk-rows 12500]
                                               [--k 64] [--rounds 3] [--quick] [--no-write]

A float32 matrix of layer-like spectrum (benchmarks/common.py's layer_like, built block by block
on the workers and persisted there) in row chunks; both methods with the same k, oversampling
(10) and power iterations (2), U left persisted on the workers, S and Vh brought back. Reported
per method: the median wall time of interleaved rounds, the spectral-norm error
||X - U S Vh||_2 against a float64 reference (X^T X summed over the chunks in float64 once, then
per result one float64 pass for X^T U), the bytes the workers sent each other during one call
(Dask's own counters, Worker.transfer_outgoing_bytes_total), and a projection of the time on 4
and 16 workers from the measured per-chunk costs (Dask's task stream). The GEMM floor row does
the (2q + 2) products over one chunk that a randomized SVD cannot avoid, timed on one thread in the
client, times the chunks each worker holds.
The table is printed and written as the dask_rsvd.py section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, markdown_table, publish  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream, wait  # noqa: E402

import vsfast.distributed as vd  # noqa: E402

OVERSAMPLE, POWER_ITERS, RANK, NOISE = 10, 2, 256, 1e-3


# --- the matrix ---------------------------------------------------------------------------------

def _layer_like_block(block_info=None, *, cols: int, seed: int) -> np.ndarray:
    """Rows of X = L diag(s) R / sqrt(rows cols) + noise: a rank-256 part with power-law singular
    values and a full-rank floor (common.layer_like's spectrum), each block from its own seed,
    the right factor R the same in every block."""
    (start, stop), _ = block_info[None]["array-location"]
    index = block_info[None]["chunk-location"][0]
    total = block_info[None]["shape"][0]
    right = np.random.default_rng([seed, 0]).standard_normal((RANK, cols), dtype=np.float32)
    rng = np.random.default_rng([seed, 1, index])
    scale = ((1.0 + np.arange(RANK)) ** -1.0).astype(np.float32)
    left = rng.standard_normal((stop - start, RANK), dtype=np.float32) * scale
    block = left @ right / np.float32(np.sqrt(total * cols))
    block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(NOISE / np.sqrt(max(total, cols)))
    return block


def matrix(rows: int, cols: int, chunk_rows: int, seed: int = 0) -> da.Array:
    chunks = ((chunk_rows,) * (rows // chunk_rows) + ((rows % chunk_rows,) if rows % chunk_rows else ()), (cols,))
    return da.map_blocks(_layer_like_block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32),
                         cols=cols, seed=seed)


# --- the reference and the error ------------------------------------------------------------------

def _gram64(block: np.ndarray) -> np.ndarray:
    b = block.astype(np.float64)
    return b.T @ b  # numpy takes B^T B to syrk: half a product's flops


def reference_gram(x: da.Array) -> np.ndarray:
    """X^T X in float64 (products of float32 values are exact in it), summed over the chunks in
    pairs, so that a worker holds few of the cols x cols partial sums at once: the reference every
    error is measured against."""
    terms = [dask.delayed(_gram64)(block) for block in x.to_delayed()[:, 0]]
    while len(terms) > 1:
        terms = [dask.delayed(sum)(terms[i:i + 2]) for i in range(0, len(terms), 2)]
    return terms[0].compute()


def spectral_error(x: da.Array, gram: np.ndarray, u: da.Array, s: np.ndarray, vh: np.ndarray) -> float:
    """||X - U S Vh||_2 = sqrt(lambda_max(E)), E = (X - U S Vh)^T (X - U S Vh) expanded as
    X^T X - C S Vh - (C S Vh)^T + Vh^T S (U^T U) S Vh with C = X^T U, all in float64."""
    u64 = u.astype(np.float64)
    c, utu = dask.compute(da.dot(x.T.astype(np.float64), u64), da.dot(u64.T, u64))
    svh = s.astype(np.float64)[:, None] * vh.astype(np.float64)
    cross = c @ svh
    e = gram - cross - cross.T + svh.T @ utu @ svh
    return float(np.sqrt(max(np.linalg.eigvalsh((e + e.T) / 2)[-1], 0.0)))


# --- the methods --------------------------------------------------------------------------------

def run_vsfast(x: da.Array, k: int, seed: int, power_iters: int = POWER_ITERS):
    u, s, vh = vd.rsvd(x, k, oversample=OVERSAMPLE, power_iters=power_iters, seed=seed)
    wait(u)
    return u, s, vh


def run_dask(x: da.Array, k: int, seed: int, iterator: str = "power"):
    """U persisted on the workers, S and Vh brought back, as vsfast's call leaves them. One
    persist for all three: computing them apart gives Dask one key two different graphs."""
    u, s, vh = dask.persist(*da.linalg.svd_compressed(x, k, n_power_iter=POWER_ITERS, n_oversamples=OVERSAMPLE,
                                                      seed=seed, iterator=iterator))
    s, vh = dask.compute(s, vh)
    wait(u)
    return u, s, vh


def floor_per_worker(x: da.Array, k: int, workers: int):
    """The (2q + 2) products over one chunk, alternately X Z and X^T Y, timed here on one thread
    with numpy's OpenBLAS; times the chunks a worker holds, it is the compute one call cannot
    avoid on `workers` workers (no scheduling, no transfers). Returns a callable for the timing
    rounds and the factor to scale its time by."""
    from threadpoolctl import threadpool_limits

    block = x.blocks[0, 0].compute()
    z = np.random.default_rng(0).standard_normal((x.shape[1], k + OVERSAMPLE)).astype(np.float32)

    def passes():
        with threadpool_limits(1, user_api="blas"):
            y = block @ z
            for i in range(1, 2 * POWER_ITERS + 2):
                y = block.T @ y if i % 2 else block @ y
        return None

    return passes, math.ceil(x.numblocks[0] / workers)


# --- measuring ----------------------------------------------------------------------------------

def transfer_bytes(client: Client) -> int:
    """Bytes the workers have sent each other since they started (Dask's own counter)."""
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def measure_call(client: Client, fn):
    """(wall time, bytes between workers, busy seconds of all tasks) of one call."""
    before = transfer_bytes(client)
    with get_task_stream(client) as stream:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    busy = sum(part["stop"] - part["start"] for task in stream.data for part in task["startstops"]
               if part["action"] == "compute")
    return wall, transfer_bytes(client) - before, busy


def projection(wall: float, busy: float, chunks: int, workers: int, measured_workers: int) -> float:
    """Time on `workers` workers: each chunk's work (busy / chunks, measured) spread as whole
    chunks over the workers, plus what did not run in tasks (client steps, scheduling), taken as
    measured. Network time is not in it (see the bytes)."""
    per_chunk = busy / chunks
    serial = max(wall - per_chunk * math.ceil(chunks / measured_workers), 0.0)
    return serial + per_chunk * math.ceil(chunks / workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--chunk-rows", type=int, default=12_500)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 x 1024 in 2,500-row chunks, 2 rounds")
    add_results_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.cols, args.chunk_rows, args.rounds = 20_000, 1024, 2_500, 2

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        x = matrix(args.rows, args.cols, args.chunk_rows).persist()
        wait(x)
        chunks = x.numblocks[0]
        t = time.perf_counter()
        gram = reference_gram(x)
        reference_s = np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[::-1], 0))
        reference_time = time.perf_counter() - t

        # Each call gets its own seed: Dask's keys then differ from call to call.
        methods = {
            f"vsfast.distributed.rsvd, q={POWER_ITERS}": lambda seed: run_vsfast(x, args.k, seed),
            f"dask svd_compressed, q={POWER_ITERS} (iterator='power', its default)": lambda seed: run_dask(x, args.k,
                                                                                                         seed),
            f"dask svd_compressed, q={POWER_ITERS} (iterator='QR')": lambda seed: run_dask(x, args.k, seed, "QR"),
            f"vsfast.distributed.rsvd, q=1": lambda seed: run_vsfast(x, args.k, seed, power_iters=1),
        }
        floor, floor_chunks = floor_per_worker(x, args.k, args.workers)
        results = {name: fn(0) for name, fn in methods.items()}  # warm-up, and the results whose error counts
        errors = {name: spectral_error(x, gram, *r) for name, r in results.items() if r is not None}
        del results
        times = {name: [] for name in methods}
        transfers, busy = {}, {name: [] for name in methods}
        floor_times = []
        for rnd in range(args.rounds):  # interleaved, so that the machine's load weighs on all alike
            for name, fn in methods.items():
                time.sleep(0.3)
                wall, moved, b = measure_call(client, lambda: fn(rnd + 1))
                times[name].append(wall)
                busy[name].append(b)
                transfers[name] = moved
            time.sleep(0.3)
            start = time.perf_counter()
            floor()
            floor_times.append((time.perf_counter() - start) * floor_chunks)

    median = {name: float(np.median(t)) for name, t in times.items()}
    ours = median[next(iter(methods))]
    rows = []
    for name in methods:
        b = float(np.median(busy[name]))
        err = f"{errors[name] / reference_s[0]:.3e}" if name in errors else "–"
        rows.append([name, f"{median[name]:.2f} s", f"{median[name] / ours:.2f}×", err,
                     f"{transfers[name] / 1e6:.1f} MB",
                     f"{projection(median[name], b, chunks, 4, args.workers):.2f} s",
                     f"{projection(median[name], b, chunks, 16, args.workers):.2f} s"])
    floor_time = float(np.median(floor_times))
    rows.append([f"GEMM floor: the {2 * POWER_ITERS + 2} products on one chunk (numpy, 1 thread, in the client) "
                 f"× {floor_chunks} chunks a worker", f"{floor_time:.2f} s", f"{floor_time / ours:.2f}×", "–",
                 "–",
                 f"{floor_time / floor_chunks * math.ceil(chunks / 4):.2f} s",
                 f"{floor_time / floor_chunks * math.ceil(chunks / 16):.2f} s"])
    title = (f"{args.rows:,} × {args.cols} float32 (layer-like spectrum) in {chunks} row chunks of "
             f"{args.chunk_rows:,}, k = {args.k}, oversampling {OVERSAMPLE}, {POWER_ITERS} power iterations, "
             f"LocalCluster of {args.workers} worker processes × 1 thread; median of {args.rounds} interleaved "
             f"rounds. "
             f"Error: ||X − U S Vh||₂ / σ₁ against the float64 reference (best possible σ_{{k+1}}/σ₁ = "
             f"{reference_s[args.k] / reference_s[0]:.3e}; reference X^T X in float64: {reference_time:.0f} s once). "
             f"Bytes: sent between workers during one call (Dask's Worker.transfer_outgoing_bytes_total). "
             f"Projections: measured per-chunk task time spread over 4 and 16 workers plus the measured non-task "
             f"time; network time not included.")
    columns = ["method", "time", "time / vsfast's", "spectral error / σ₁", "bytes between workers", "4 workers",
               "16 workers"]
    publish(args, "dask_rsvd.py", markdown_table(title, columns, rows))


if __name__ == "__main__":
    main()
