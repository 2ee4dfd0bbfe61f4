"""``vsfast bench``: vsfast's SVDs against torch's on a user's own shapes or checkpoint.

Per matrix (or batch): the randomized SVD, :func:`vsfast.rsvd` against ``torch.svd_lowrank``
with the same sketch (k + 10 columns, 2 power iterations), and, where asked, the exact SVD,
:func:`vsfast.svd` against ``torch.linalg.svd(full_matrices=False)``. The calls are timed in
interleaved rounds (:func:`interleaved_medians`) with torch on vsfast's thread count, so a
ratio compares the two under the same load; each randomized SVD's relative spectral error
||A - U S V^T||_2 / ||A||_2 is given beside its time. Needs torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["cpu_model", "interleaved_medians", "machine", "parse_shape", "run", "table", "usable_cores", "workloads",
           "write_json"]

OVERSAMPLE, POWER_ITERS = 10, 2
# Timing the exact SVD of a matrix whose smaller side exceeds this takes minutes on a few cores.
EXACT_AUTO_SIDE = 2048


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux) with its family and model numbers (a
    virtual machine may call both AMD Zen 3 and Zen 4 just "AMD EPYC"), else what platform knows."""
    import platform

    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
            return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def interleaved_medians(fns: list[Callable[[], Any]], rounds: int, warmup: int = 1, settle: float = 0.3,
                        rewarm: bool = False) -> list[float]:
    """Median wall time of each callable, timed in turn within every round, so that a change in
    the machine's load (a shared machine's neighbours come and go within minutes) weighs on all of
    them alike and their ratios stay meaningful. Each timed call waits ``settle`` seconds first:
    OpenBLAS's and OpenMP's threads spin for up to about 0.1 s after their last call, and would
    otherwise share the cores with whatever is timed next.

    With ``rewarm``, each timed call directly follows an untimed call of the same callable: after
    that pause the cores of a virtual machine run the first milliseconds slowly (measured on an
    AMD EPYC VM: a 512 x 784 by 784 x 444 float32 product took 3.1 ms after 0.1 s idle, 2.0 ms
    back to back), which weighs on a call of a few milliseconds and not on one of a second, and
    would make a ratio between the two depend on their sizes. Steady state is what a loop over a
    model's layers sees."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, t in zip(fns, times):
            time.sleep(settle)
            if rewarm:
                fn()
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def parse_shape(text: str) -> tuple[int, ...] | None:
    """(M, N) or (B, M, N) from "MxN" or "BxMxN" (positive sizes); None if text is no shape."""
    if not re.fullmatch(r"\d+(x\d+){1,2}", text):
        return None
    shape = tuple(int(d) for d in text.split("x"))
    return shape if all(d > 0 for d in shape) else None


def _random_layer(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 matrices with a trained layer's kind of spectrum: singular values decaying like
    i^-1/2 (columns of a Gaussian matrix scaled so), not the flat spectrum of a Gaussian one."""
    rng = np.random.default_rng(seed)
    *batch, m, n = shape
    a = rng.standard_normal((*batch, m, n), dtype=np.float32)
    a *= (1.0 + np.arange(n, dtype=np.float32)) ** np.float32(-0.5)
    return a


def workloads(targets: list[str], max_shapes: int) -> list[tuple[str, np.ndarray]]:
    """(label, float32 array) per workload: random matrices of the shapes given, or a
    checkpoint's ``max_shapes`` largest distinct matrix shapes, each its first tensor of that
    shape (by the rules of :func:`vsfast.analysis.matrix_views`)."""
    shapes = [parse_shape(t) for t in targets]
    if all(shapes):
        return [(f"random {'x'.join(map(str, s))}", _random_layer(s, i)) for i, s in enumerate(shapes)]
    if len(targets) == 1 and Path(targets[0]).exists():
        return _checkpoint_workloads(Path(targets[0]), max_shapes)
    bad = next(t for t, s in zip(targets, shapes) if s is None)
    raise ValueError(f"bench: expected shapes such as 4096x11008 or 32x512x4608, or one existing checkpoint; "
                     f"got {bad!r}")


def _checkpoint_workloads(path: Path, max_shapes: int) -> list[tuple[str, np.ndarray]]:
    from .analysis import matrix_views
    from .checkpoint import FLOAT_DTYPES, Checkpoint

    first: dict[tuple[int, int], tuple[str, Any, Any]] = {}
    with Checkpoint(path) as reader:
        for info in reader.tensors:
            rule = matrix_views(info.name, info.shape)
            if isinstance(rule, str) or info.dtype not in FLOAT_DTYPES:
                continue
            for mv in rule:
                first.setdefault(mv.shape, (mv.name, info, mv.take))
        if not first:
            raise ValueError(f"{path}: no matrix to time")
        largest = sorted(first, key=lambda s: (-s[0] * s[1], s))[:max_shapes]
        return [(f"{first[s][0]} {s[0]}x{s[1]}",
                 np.array(first[s][2](reader.read(first[s][1])), dtype=np.float32)) for s in largest]


def _spectral_error(a: np.ndarray, u, s, vh, iters: int = 20) -> float:
    """||A - U S Vh||_2 / ||A||_2 for one matrix, by power iteration on the residual, which is
    never formed (and on A for the denominator)."""
    def norm(apply, applyt) -> float:
        x = np.random.default_rng(0).standard_normal(a.shape[1]).astype(a.dtype)
        value = 0.0
        for _ in range(iters):
            x /= np.linalg.norm(x) or 1.0
            x = applyt(apply(x))
            value = math.sqrt(float(np.linalg.norm(x)))
        return value

    u, s, vh = (np.asarray(t, dtype=a.dtype) for t in (u, s, vh))
    residual = norm(lambda x: a @ x - u @ (s * (vh @ x)), lambda y: a.T @ y - vh.T @ (s * (u.T @ y)))
    whole = norm(lambda x: a @ x, lambda y: a.T @ y)
    return residual / whole if whole else 0.0


def run(targets: list[str], *, k: int = 64, rounds: int = 3, exact: str = "auto", max_shapes: int = 6) -> list[dict]:
    """Time every workload (see :func:`workloads`); one dict of results per workload."""
    try:
        import torch
    except ImportError:
        raise ImportError("vsfast bench compares with torch: pip install vsfast[torch]") from None
    import vsfast

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(vsfast.get_num_threads())  # the same cores for both
    try:
        for label, a in workloads(targets, max_shapes):
            rows.append(_time_one(torch, vsfast, label, a, k, rounds, exact))
    finally:
        torch.set_num_threads(threads)
    return rows


def _time_one(torch, vsfast, label: str, a: np.ndarray, k: int, rounds: int, exact: str) -> dict:
    m, n = a.shape[-2:]
    k = min(k, m, n)
    t = torch.from_numpy(a)
    with_exact = exact == "yes" or (exact == "auto" and min(m, n) <= EXACT_AUTO_SIDE)
    fns = [lambda: vsfast.rsvd(a, k, oversample=OVERSAMPLE, power_iters=POWER_ITERS),
           lambda: torch.svd_lowrank(t, q=min(k + OVERSAMPLE, m, n), niter=POWER_ITERS)]
    if with_exact:
        fns += [lambda: vsfast.svd(a), lambda: torch.linalg.svd(t, full_matrices=False)]
    times = interleaved_medians(fns, rounds)
    ours, theirs = vsfast.rsvd(a, k), torch.svd_lowrank(t, q=min(k + OVERSAMPLE, m, n), niter=POWER_ITERS)
    first = (lambda x: x[0]) if a.ndim == 3 else (lambda x: x)
    row = {
        "workload": label, "shape": list(a.shape), "k": k,
        "vsfast_rsvd_s": times[0], "torch_svd_lowrank_s": times[1], "speedup_vs_svd_lowrank": times[1] / times[0],
        "vsfast_rsvd_error": _spectral_error(first(a), first(ours.U), first(ours.S), first(ours.Vh)),
        "torch_svd_lowrank_error": _spectral_error(first(a), first(theirs[0])[:, :k].numpy(),
                                                   first(theirs[1])[:k].numpy(), first(theirs[2])[:, :k].T.numpy()),
    }
    if with_exact:
        row.update({"vsfast_svd_s": times[2], "torch_linalg_svd_s": times[3],
                    "speedup_vs_linalg_svd": times[3] / times[2]})
    return row


def machine() -> dict:
    """Where and when: processor, usable cores, vsfast's threads, load average, versions, date."""
    import vsfast

    versions = {"vsfast": vsfast.__version__, "numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
            "usable_cores": usable_cores(), "vsfast_threads": vsfast.get_num_threads(), "load_average_1min": load,
            "versions": versions}


def table(rows: list[dict]) -> str:
    """The results as a plain-text table: times in seconds, speed-ups (torch's time over
    vsfast's: above 1, vsfast is faster) and the randomized SVDs' relative errors."""
    head = (f"{'workload':<40} {'k':>4}  {'rsvd':>8} {'lowrank':>8} {'speed-up':>8}  {'err ours':>9} "
            f"{'err torch':>9}  {'svd':>8} {'linalg':>8} {'speed-up':>8}")
    lines = [head]
    for r in rows:
        exact = (f"  {r['vsfast_svd_s']:>8.3f} {r['torch_linalg_svd_s']:>8.3f} {r['speedup_vs_linalg_svd']:>7.2f}x"
                 if "vsfast_svd_s" in r else f"  {'-':>8} {'-':>8} {'-':>8}")
        label = r["workload"] if len(r["workload"]) <= 40 else "…" + r["workload"][-39:]
        lines.append(f"{label:<40} {r['k']:>4}  {r['vsfast_rsvd_s']:>8.3f} {r['torch_svd_lowrank_s']:>8.3f} "
                     f"{r['speedup_vs_svd_lowrank']:>7.2f}x  {r['vsfast_rsvd_error']:>9.2e} "
                     f"{r['torch_svd_lowrank_error']:>9.2e}{exact}")
    return "\n".join(lines)


def write_json(rows: list[dict], path: str | os.PathLike, *, command: str = "") -> Path:
    """The results and where they were measured, as JSON."""
    path = Path(path)
    path.write_text(json.dumps({"command": command, "machine": machine(), "results": rows}, indent=1) + "\n",
                    encoding="utf-8")
    return path
