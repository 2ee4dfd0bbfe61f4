"""Workloads, baselines, the GEMM floor and the writing of RESULTS.md, shared by the benchmark
scripts and the pytest-benchmark suite."""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy_openblas32
import torch

import vsfast
# One home for these: `vsfast bench` measures the same way.
from vsfast.bench import cpu_model, interleaved_medians, usable_cores  # noqa: F401 (used by the scripts)

K, OVERSAMPLE, POWER_ITERS = 64, 10, 2
RSVD_SHAPES = [(512, 4608), (4096, 4096), (4096, 11008), (32, 512, 4608)]

_openblas = ctypes.CDLL(str(Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)))
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _cblas_gemm(name: str, scalar) -> Callable:
    f = getattr(_openblas, name)
    f.argtypes = [ctypes.c_int] * 6 + [scalar, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_int, scalar, ctypes.c_void_p, ctypes.c_int]
    return f


_GEMM = {np.dtype(np.float32): _cblas_gemm("scipy_cblas_sgemm", ctypes.c_float),
         np.dtype(np.float64): _cblas_gemm("scipy_cblas_dgemm", ctypes.c_double)}


def _gemm_rowmajor(ta: bool, m: int, n: int, k: int, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """c = op(a) b for C-contiguous float32 or float64 arrays of one dtype, with vsfast's own OpenBLAS."""
    if not (a.dtype == b.dtype == c.dtype and all(x.flags.c_contiguous for x in (a, b, c))):
        raise TypeError(f"expected C-contiguous arrays of one dtype, got {a.dtype}, {b.dtype}, {c.dtype}")
    f = _GEMM[a.dtype]
    f(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, a.shape[1],
      b.ctypes.data, b.shape[1], 0.0, c.ctypes.data, c.shape[1])


class threaded_openblas:
    """OpenBLAS with vsfast's thread count, for timing the GEMM floor (vsfast itself keeps
    OpenBLAS single-threaded and threads around it)."""

    def __enter__(self):
        _openblas.scipy_openblas_set_num_threads(vsfast.get_num_threads())

    def __exit__(self, *exc):
        _openblas.scipy_openblas_set_num_threads(1)


def threaded(fn):
    """fn run with threaded OpenBLAS: a GEMM floor to time beside vsfast and torch."""

    def run():
        with threaded_openblas():
            fn()

    return run


RESULTS = Path(__file__).with_name("RESULTS.md")
# The machine's load when the script started: on a shared machine it says how far to trust a run.
_LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def openblas_version() -> str:
    """The OpenBLAS that vsfast links (scipy-openblas32), with its build configuration and the
    kernel set it chose for this CPU."""
    name, version, *config = scipy_openblas32.get_openblas_config().split()
    return f"{name} {version} ({' '.join(config)})"


def load_average() -> str:
    """The 1-minute load average at the script's start and now, where the system reports one."""
    if _LOAD_AT_START is None:
        return "load average unknown"
    return f"load average {_LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"


def run_header(command: str) -> str:
    """Who measured what, where and with which versions: the first lines of every section."""
    from datetime import date

    return (f"Measured {date.today()} by `{command}` on {cpu_model()}, {usable_cores()} usable cores "
            f"(vsfast's thread count: {vsfast.get_num_threads()}; {load_average()});\n"
            f"vsfast {vsfast.__version__}, numpy {np.__version__}, torch {torch.__version__}, {openblas_version()}.")


def markdown_table(title: str, columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table under its title line; the first column left-aligned, the rest right."""
    lines = [title, "", "| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def add_results_options(parser) -> None:
    """The options every benchmark script shares: where its section goes, or nowhere."""
    parser.add_argument("--no-write", action="store_true", help="print the tables only; leave RESULTS.md alone")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file to update "
                        "(default: benchmarks/RESULTS.md)")


def publish(args, script: str, body: str, echo: bool = True) -> None:
    """Print a script's tables (unless not ``echo``) and, unless ``--no-write``, make them its
    section of the results file, headed by :func:`run_header` with the command line that produced
    them."""
    command = " ".join([f"benchmarks/{script}", *sys.argv[1:]])
    text = f"{run_header(command)}\n\n{body}"
    if echo:
        print(text)
    if not args.no_write:
        write_section(args.results, script, text)
        if echo:
            print(f"\nwrote the {script} section of {args.results}")


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} begin -->", f"<!-- {name} end -->"


def replace_section(document: str, name: str, body: str) -> str:
    """``document`` with the text between ``name``'s markers replaced by ``body``; the section is
    appended, markers included, where the document has none yet."""
    begin, end = section_markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    starts, ends = document.count(begin), document.count(end)
    if starts == ends == 0:
        return document.rstrip("\n") + ("\n\n" if document.strip() else "") + block + "\n"
    if starts != 1 or ends != 1 or document.index(begin) > document.index(end):
        raise ValueError(f"expected one {begin!r} before one {end!r}, found {starts} and {ends}")
    head, rest = document.split(begin)
    return head + block + rest.split(end, 1)[1]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace one named section of a Markdown file in place. The new text goes to a temporary
    file in the same directory that is then renamed over the old one, so a reader never sees a
    half-written file; a lock on the directory keeps two scripts finishing at once from each
    writing over the other's section."""
    import fcntl
    import tempfile

    path = Path(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        document = path.read_text(encoding="utf-8") if path.exists() else ""
        text = replace_section(document, name, body)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    finally:
        os.close(directory)


def median_time(fn, rounds: int, warmup: int = 1, settle: float = 0.3) -> float:
    """Median wall time of ``rounds`` calls after ``warmup`` ones, each after a ``settle``-second
    pause (see :func:`interleaved_medians`)."""
    return interleaved_medians([fn], rounds, warmup, settle)[0]


def layer_like(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 matrices whose spectrum decays like a trained layer's: a rank-256 part with
    power-law singular values plus a small full-rank noise floor."""
    rng = np.random.default_rng(seed)
    *batch, m, n = shape
    r = min(256, m, n)
    scale = (1.0 + np.arange(r)) ** -1.0
    left = rng.standard_normal((*batch, m, r), dtype=np.float32) * scale.astype(np.float32)
    right = rng.standard_normal((*batch, r, n), dtype=np.float32)
    a = left @ right / np.float32(np.sqrt(m * n))
    a += rng.standard_normal(a.shape, dtype=np.float32) * np.float32(1e-3 / np.sqrt(max(m, n)))
    return a


def rsvd_floor_passes(a: np.ndarray, width: int = K + OVERSAMPLE, pairs: int = POWER_ITERS + 1):
    """A callable doing the passes of matrix products over A that a randomized SVD cannot avoid
    (``pairs`` times A Z and A^T Y with ``width`` columns: (2q + 2) passes for q power
    iterations), for one matrix or a batch, with the same OpenBLAS (time it inside
    ``threaded_openblas``)."""
    *_, m, n = a.shape
    mats = a.reshape(-1, m, n)
    sketch_n, sketch_m = np.ones((n, width), a.dtype), np.ones((m, width), a.dtype)
    out_m, out_n = np.empty((m, width), a.dtype), np.empty((n, width), a.dtype)

    def passes():
        for mat in mats:
            for _ in range(pairs):
                _gemm_rowmajor(False, m, width, n, mat, sketch_n, out_m)  # A Z
                _gemm_rowmajor(True, n, width, m, mat, sketch_m, out_n)   # A^T Y

    return passes


def spectral_error(a: np.ndarray, u, s, vh, iters: int = 30, seed: int = 0) -> float:
    """||A - U S Vh||_2 by power iteration on the residual, in float64 (never forms it)."""
    a64, u64, s64, vh64 = (np.asarray(t, np.float64) for t in (a, u, s, vh))
    x = np.random.default_rng(seed).standard_normal(a.shape[1])
    norm = 0.0
    for _ in range(iters):
        x /= np.linalg.norm(x)
        y = a64 @ x - u64 @ (s64 * (vh64 @ x))
        x = a64.T @ y - vh64.T @ (s64 * (u64.T @ y))
        norm = np.sqrt(np.linalg.norm(x))
    return float(norm)


def torch_lowrank(a: torch.Tensor):
    return torch.svd_lowrank(a, q=K + OVERSAMPLE, niter=POWER_ITERS)


def torch_projection(x: torch.Tensor, v: torch.Tensor):
    signal = (x @ v) @ v.T
    return signal, x - signal


@dataclass
class TorchChain:
    """The natural torch version of the chained reconstruction: precomputed pseudoinverses, then
    per layer inverse SELU, bias and a matrix product."""

    pinvs: list
    biases: list
    acts: list

    @classmethod
    def from_layers(cls, layers):
        return cls([torch.linalg.pinv(torch.from_numpy(w)).T.contiguous() for w, _, _ in layers],
                   [torch.from_numpy(b) for _, b, _ in layers], [a for _, _, a in layers])

    def reconstruct(self, y: torch.Tensor) -> torch.Tensor:
        lam, alpha = 1.0507009873554805, 1.6732632423543772
        h = y
        for p, b, act in zip(reversed(self.pinvs), reversed(self.biases), reversed(self.acts)):
            if act == "selu":
                h = torch.where(h > 0, h / lam, torch.log1p(torch.clamp(h / (lam * alpha), min=-1 + 1e-6)))
            h = (h - b) @ p
        return h


def fcnn5_like_chain(seed: int = 0):
    """A chain with the paper's FCNN-5 shape: 784-512-256-128-64-10, SELU between layers."""
    rng = np.random.default_rng(seed)
    widths = [784, 512, 256, 128, 64, 10]
    layers = []
    for i, (n, m) in enumerate(zip(widths[:-1], widths[1:])):
        w = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
        b = (0.1 * rng.standard_normal(m)).astype(np.float32)
        layers.append((w, b, "selu" if i < len(widths) - 2 else "identity"))
    return layers
