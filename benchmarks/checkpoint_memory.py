"""Memory of a streamed checkpoint analysis: the anonymous resident memory of a process that runs
``vsfast.analyze`` on a checkpoint much larger than it may hold.

    .venv/bin/python benchmarks/checkpoint_memory.py [--tensors 8] [--shape 4096x11008] [--k K] [--no-write]

The checkpoint (by default 8 float32 tensors of 4096 x 11008, 1.4 GB, an LLM's MLP matrices) is
built sparsely in a temporary folder: valid safetensors shards whose data is a hole (zeros, no
disk space) except one row per tensor, written with known values, so that every tensor is rank 1
with a known spectral norm (checked). A fresh Python process imports vsfast (not torch), then runs
the analysis while a thread samples its ``RssAnon`` (/proc/self/status: memory that is the
process's own, not the file's pages, which the kernel can drop at will) every 2 ms; the peak
minus the level before the analysis is the figure. The folder is deleted after.

Written as the checkpoint_memory.py section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

SHAPE = (4096, 11008)
TENSORS = 8


def write_sparse_checkpoint(folder: Path, count: int, shape: tuple[int, int], shards: int = 1,
                            seed: int = 0) -> dict[str, float]:
    """``count`` float32 tensors of ``shape`` in ``shards`` safetensors files (with an index JSON
    when more than one, as ``save_pretrained`` writes them), each zero but for one row of random
    values: returns every tensor's spectral norm (that row's norm)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"model.layers.{i}.mlp.weight" for i in range(count)]
    per_shard = math.ceil(count / shards)
    norms, weight_map = {}, {}
    nbytes = 4 * shape[0] * shape[1]
    for s in range(shards):
        members = names[s * per_shard:(s + 1) * per_shard]
        file = folder / (f"model-{s + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors")
        header = {name: {"dtype": "F32", "shape": list(shape), "data_offsets": [i * nbytes, (i + 1) * nbytes]}
                  for i, name in enumerate(members)}
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
        start = 8 + len(text)
        with open(file, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(start + len(members) * nbytes)  # the data: a hole, read as zeros
            for i, name in enumerate(members):
                row = rng.standard_normal(shape[1]).astype(np.float32)
                f.seek(start + i * nbytes + int(rng.integers(shape[0])) * shape[1] * 4)
                f.write(row.tobytes())
                norms[name] = float(np.linalg.norm(row.astype(np.float64)))
                weight_map[name] = file.name
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return norms


_CHILD = textwrap.dedent("""
    import json, sys, threading, time

    import vsfast

    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    peak, running = [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)

    path, k = sys.argv[1], json.loads(sys.argv[2])
    base = anon()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    report = vsfast.analyze(path, k=k)
    seconds = time.perf_counter() - start
    running[0] = False
    thread.join()
    peak[0] = max(peak[0], anon())
    print(json.dumps({"baseline": base, "peak": peak[0], "seconds": seconds, "torch": "torch" in sys.modules,
                      "sigma_max": {layer.name: layer.sigma_max for layer in report}}))
""")


def measure(path: Path, k) -> dict:
    """Run the analysis of ``path`` in a fresh process; its anonymous memory and results."""
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(k)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the analysis failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=TENSORS)
    parser.add_argument("--shape", default="x".join(map(str, SHAPE)))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--k", default=None, help="k for vsfast.analyze (default: its own choice)")
    sys.path.insert(0, str(Path(__file__).parent))
    from common import add_results_options, markdown_table, publish

    add_results_options(parser)
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.shape.split("x"))
    k = None if args.k is None else (args.k if args.k == "all" else int(args.k))
    with tempfile.TemporaryDirectory(prefix="vsfast-memory-") as folder:
        norms = write_sparse_checkpoint(Path(folder), args.tensors, shape, args.shards)
        result = measure(Path(folder), k)
    worst = max(abs(result["sigma_max"][name] - norm) / norm for name, norm in norms.items())
    size = args.tensors * 4 * shape[0] * shape[1]
    mib = 1 << 20
    rows = [[f"{args.tensors} × {shape[0]}×{shape[1]} float32 ({size / 1e9:.2f} GB, {args.shards} shards)",
             "default (top 256)" if k is None else str(k), f"{result['seconds']:.1f} s",
             f"{result['baseline'] / mib:.0f} MiB", f"{result['peak'] / mib:.0f} MiB",
             f"{(result['peak'] - result['baseline']) / mib:.0f} MiB", f"{worst:.1e}"]]
    title = ("Anonymous resident memory (RssAnon, sampled every 2 ms) of a process analysing a sparse checkpoint "
             f"with vsfast.analyze; torch imported: {result['torch']}")
    columns = ["checkpoint", "k", "time", "before", "peak", "peak − before", "max rel. error of sigma_max"]
    publish(args, "checkpoint_memory.py", markdown_table(title, columns, rows))


if __name__ == "__main__":
    main()
