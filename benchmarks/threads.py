"""Calls release the GIL: independent calls from two Python threads against the same calls in one.

    .venv/bin/python benchmarks/threads.py [--rounds N] [--no-write]

vsfast's own threading is set to one thread, so any speed-up comes from Python threads running
the core at the same time; on two free cores the ideal is 2x. The table is printed and written as
the threads.py section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import add_results_options, layer_like, markdown_table, median_time, publish  # noqa: E402

import vsfast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    add_results_options(parser)
    args = parser.parse_args()
    mats = [layer_like((512, 2048), seed=i) for i in range(8)]
    x = np.random.default_rng(0).standard_normal((4000, 2048), dtype=np.float32)
    sp = vsfast.spaces(mats[0])
    work = {
        "rsvd 512×2048, k=64": lambda i: vsfast.rsvd(mats[i], 64),
        "exact spaces 512×2048": lambda i: vsfast.spaces(mats[i]),
        "project 4,000×2048": lambda i: vsfast.project(x, sp),
    }
    threads = vsfast.get_num_threads()
    vsfast.set_num_threads(1)
    rows = []
    try:
        for name, call in work.items():
            one = median_time(lambda: [call(i) for i in range(8)], args.rounds)
            with ThreadPoolExecutor(max_workers=2) as pool:
                two = median_time(lambda: list(pool.map(call, range(8))), args.rounds)
            rows.append([name, f"{one * 1e3:.0f} ms", f"{two * 1e3:.0f} ms", f"{one / two:.2f}×"])
    finally:
        vsfast.set_num_threads(threads)
    title = f"vsfast set to 1 thread for these calls, 8 calls, median of {args.rounds} rounds"
    columns = ["8 calls of", "1 Python thread", "2 Python threads", "speed-up"]
    publish(args, "threads.py", markdown_table(title, columns, rows))


if __name__ == "__main__":
    main()
