"""vsfast on a Dask cluster: the analysis of checkpoints (a model zoo) as Dask tasks, and the
randomized SVD of a dask array too large for one worker.

Dask schedules, vsfast computes: every task runs vsfast's compiled kernels on the worker that
holds its data, and tasks carry block keys, file paths and small results, never weights through
the scheduler. Any Dask scheduler serves: the current ``distributed.Client`` (a LocalCluster,
dask-jobqueue's SLURMCluster, dask-mpi under mpirun...) or, without one, Dask's threads.
docs/distributed.md says what moves over the network and how to size chunks and workers.

>>> report = vsfast.distributed.analyze("model/")     # the same Report as vsfast.analyze("model/")
>>> U, S, Vh = vsfast.distributed.rsvd(x, 50)        # x: a dask array chunked by rows
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # the [dask] extra
    raise ModuleNotFoundError("vsfast.distributed needs Dask: pip install 'vsfast[dask]'", name="dask") from exc

from ._arrays import check_int
from ._backends import cpu
from .linalg import SVDResult, _rsvd_params

__all__ = ["analyze", "connect", "rsvd"]

log = logging.getLogger(__name__)

# Partial sums combined by one reduction task. The tree is fixed by the blocks' order, not by
# where they are or when they finish, so sums are bitwise the same on any number of workers.
_SPLIT_EVERY = 8


# --- the analysis of checkpoints ----------------------------------------------------------------

# Equal-shape tensors share a task up to this many bytes: small tensors do not each pay a task's
# overhead, and a lost worker costs little to redo.
_TASK_BYTES = 64 << 20


@dataclass
class _Task:
    """Tensors of one checkpoint analysed by one task: their names and the files they are in."""

    checkpoint: int   # index into the paths
    names: list[str]
    files: list[str]


def _plan(path: Path, index: int, conv_view: str) -> tuple[list[_Task], list[tuple[str, str]]]:
    """The tasks for one checkpoint (its analysed tensors, equal shapes and dtypes together up
    to _TASK_BYTES a task) and what it skips, from its header(s) alone, by the rules the local
    analysis applies (vsfast.analysis)."""
    from . import checkpoint
    from .analysis import _checkpoint_items

    with checkpoint.Checkpoint(path) as reader:
        _, skipped = _checkpoint_items(reader, reader.tensors, conv_view, None)
        not_analysed = {name for name, _ in skipped}
        tensors = [info for info in reader.tensors if info.name not in not_analysed]
        count = len(reader.tensors)
    if not tensors:
        raise checkpoint.CheckpointError(path, f"no tensor of two or more dimensions to analyse among {count}")
    groups: dict[tuple, list] = defaultdict(list)
    for info in tensors:
        groups[(info.shape, info.dtype)].append(info)
    tasks = []
    for members in groups.values():
        size = _TASK_BYTES  # start a new task with the first member
        for info in members:
            if size + info.nbytes > _TASK_BYTES:
                tasks.append(_Task(index, [], []))
                size = 0
            tasks[-1].names.append(info.name)
            tasks[-1].files.append(str(info.file))
            size += info.nbytes
    return tasks, skipped


def _failure(exc: BaseException, file: str, names: Sequence[str]) -> Exception:
    """exc with the file and tensor(s) named, as the nearest built-in exception (which any
    process can unpickle), the original as its cause."""
    kind = next(k for k in type(exc).__mro__ if k.__module__ == "builtins" and issubclass(k, Exception))
    text = str(exc).removeprefix(f"{file}: ")
    which = f"tensor {names[0]!r}" if len(names) == 1 else f"tensors {', '.join(map(repr, names))}"
    failure = kind(f"{file}: {which}: {text}")
    failure.__cause__ = exc
    return failure


def _analyze_tensors(names: list[str], files: list[str], options: dict, bases: bool) -> list:
    """One task: the LayerAnalysis of each named tensor, read by this worker from the file that
    holds it (only that file's header is parsed); bases (spaces) only with `bases`."""
    from .analysis import analyze_tensor

    layers = []
    for name, file in zip(names, files):
        try:
            found = analyze_tensor(file, name, **options)
            if bases:
                _attach_bases(file, name, found, options)
        except Exception as exc:
            raise _failure(exc, file, [name]) from exc
        layers.extend(found)
    return layers


def _attach_bases(file: str, name: str, layers: list, options: dict) -> None:
    """Each layer's Spaces, from the tensor read again: as many triplets as its spectrum has
    values, by the method that computed it (the singular values stay analyze_tensor's)."""
    from .analysis import _compute_dtype, matrix_views
    from .checkpoint import read_tensor
    from .linalg import spaces

    tensor = read_tensor(file, name)
    takes = {view.name: view.take for view in matrix_views(name, tensor.shape, options["conv_view"])}
    for layer in layers:
        matrix = _compute_dtype(np.ascontiguousarray(takes[layer.name](tensor)), options["dtype"])
        complete = layer.k == min(layer.shape)
        layer._spaces = spaces(matrix, k=None if complete else layer.k, method=layer.method)


def analyze(path_or_paths: Any, *, client: Any = None, method: str = "auto", k: int | str | None = None,
            conv_view: str = "patch", dtype: Any = None, bases: bool = False, progress: bool = False):
    """The analysis of one checkpoint, or of many (a model zoo), as Dask tasks: the same
    :class:`vsfast.Report` as ``vsfast.analyze(path, ...)``, equal to it (bitwise: the same
    kernels on the same tensors; a randomized spectrum with its fixed seed).

    The client reads the checkpoints' headers only and plans one task per tensor, or per batch
    of equal-shape tensors (up to 64 MB). Each worker opens the files itself (a filesystem the
    workers share with the client) and returns per-layer results: singular values, rank,
    metrics, and with ``bases`` the :class:`vsfast.Spaces` too. Weights never travel through
    the scheduler. Results are gathered only once every task has finished: a worker that dies
    has its tasks rerun by Dask (up to ``distributed.scheduler.allowed-failures`` times), and the
    call returns every layer once or raises — never a partial report. A tensor that fails (NaN
    values, a corrupt shard) fails the call with its file and name in the message.

    Parameters
    ----------
    path_or_paths : a checkpoint (see :func:`vsfast.analyze`: a ``.safetensors`` file, a
        directory of shards, a ``.pt``/``.pth``/``.bin`` state dict), or a sequence of them.
    client : a ``distributed.Client``; default the current one, else a LocalCluster of one
        single-threaded worker process per core of this machine, closed after the call.
    method, k, conv_view, dtype : as in :func:`vsfast.analyze`.
    bases : also compute and return each matrix's spaces (its bases travel back: (m + n) k
        values a matrix).
    progress : a progress bar over the tensors (tqdm).

    Returns
    -------
    Report for one path; a list of Reports, in the paths' order, for a sequence.
    """
    from .analysis import Report, _check_options, _natural

    _check_options(method, k, conv_view, "weights", dtype, 1, 0)
    single = isinstance(path_or_paths, (str, os.PathLike))
    paths = [Path(p) for p in ([path_or_paths] if single else path_or_paths)]
    if not paths:
        raise ValueError("path_or_paths: expected a checkpoint or a non-empty sequence of them")
    plans = [_plan(path, i, conv_view) for i, path in enumerate(paths)]
    tasks = [task for plan, _ in plans for task in plan]
    options = dict(method=method, k=k, conv_view=conv_view, dtype=dtype)
    with _using(client) as c:
        results = _run(c, tasks, options, bases, progress)
    layers: list[list] = [[] for _ in paths]
    for task, found in zip(tasks, results):
        layers[task.checkpoint].extend(found)
    reports = [Report(sorted(found, key=lambda layer: _natural(layer.name)), skipped, source=str(path))
               for found, (_, skipped), path in zip(layers, plans, paths)]
    return reports[0] if single else reports


def _run(client, tasks: list[_Task], options: dict, bases: bool, progress: bool) -> list:
    """Submit the tasks and gather their results, in order, once all are done; on the first
    failure cancel the rest and raise it (a task names its tensors; a task whose workers all
    died is named here)."""
    from distributed import KilledWorker, as_completed

    futures = [client.submit(_analyze_tensors, t.names, t.files, options, bases, pure=False,
                             key=f"vsfast-analyze-{i}-{os.urandom(4).hex()}")
               for i, t in enumerate(tasks)]
    which = {future.key: task for future, task in zip(futures, tasks)}
    bar = _progress(sum(len(t.names) for t in tasks), progress)
    try:
        for future in as_completed(futures):
            task = which[future.key]
            if future.status == "error":
                exc = future.exception()  # before the cancel, which would release it
                client.cancel(futures)
                if isinstance(exc, KilledWorker):
                    raise RuntimeError(f"{task.files[0]}: tensors {', '.join(map(repr, task.names))}: {exc}; "
                                       "no report without them") from exc
                raise exc
            bar.update(len(task.names))
        return client.gather(futures)
    finally:
        bar.close()


def _progress(total: int, enabled: bool):
    from .analysis import _progress as bar

    return bar(total, enabled)


@contextlib.contextmanager
def _using(client) -> Iterator[Any]:
    """The client given, else the current one, else a LocalCluster sized to this machine for the
    length of the call."""
    if client is None:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:  # no current client
            pass
    if client is not None:
        yield client
        return
    with connect() as started:
        yield started


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for the length of a ``with`` block: to the scheduler at
    ``scheduler`` (``tcp://host:8786``, or a scheduler file's path), or of a LocalCluster of
    ``workers`` single-threaded worker processes (default: one per core this process may use).
    The Dask dashboard's address is logged (the ``vsfast`` logger, INFO)."""
    from distributed import Client, LocalCluster

    if scheduler is not None and workers is not None:
        raise ValueError("connect: give a scheduler address or a number of local workers, not both")
    if scheduler is not None:
        target = dict(scheduler_file=scheduler) if Path(scheduler).is_file() else dict(address=scheduler)
        with Client(**target) as client:
            log.info("Dask dashboard: %s", client.dashboard_link)
            yield client
        return
    count = check_int(workers, "workers", low=1) if workers is not None else _usable_cores()
    # A local cluster serves this machine only: scheduler and dashboard on the loopback address,
    # the dashboard on a free port (8787 may be another cluster's).
    with LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        log.info("Dask dashboard: %s (a LocalCluster of %d worker processes)", client.dashboard_link, count)
        yield client


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- the blocks of a dask array -----------------------------------------------------------------

@dataclass
class _Blocks:
    """A dask array as the blocks of rows of its tall orientation M: x itself when it has more rows
    than columns, else x^T, whose blocks of rows are x's blocks of columns (``transposed``)."""

    tasks: list           # Delayed numpy blocks, in order along M's rows
    rows: tuple           # M's rows in each block
    names: list[str]      # how errors name each block: x[0:5000] or x[:, 0:5000]
    transposed: bool
    dtype: np.dtype


def _blocks(x: Any) -> _Blocks:
    if not isinstance(x, da.Array):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__}; for an array in memory use "
                        "vsfast.rsvd")
    if x.ndim != 2 or 0 in x.shape or any(np.isnan(d) for d in x.shape):
        raise ValueError(f"x: expected a matrix with known, non-empty dimensions, got shape {x.shape}")
    if type(x._meta) is not np.ndarray:
        raise TypeError(f"x: expected a dask array of numpy blocks, got blocks of {type(x._meta).__name__}")
    dtype = cpu._float_dtype(x.dtype, "x")
    if dtype != x.dtype:  # integers and booleans, as numpy.linalg takes them
        x = x.astype(dtype)
    # The orientation follows the shape alone, as in vsfast.rsvd (a square matrix counts as wide),
    # so that the sketch, and with it the result, does not depend on the chunks.
    m, n = x.shape
    transposed = n >= m
    short_axis = 0 if transposed else 1
    if x.numblocks[short_axis] > 1:  # each block must span the short side: a shuffle, said in the docs
        x = x.rechunk({short_axis: -1})
    grid = x.to_delayed()
    tasks = list(grid[0, :] if transposed else grid[:, 0])
    rows = x.chunks[1 - short_axis]
    bounds = np.cumsum((0,) + rows)
    names = [f"x[:, {a}:{b}]" if transposed else f"x[{a}:{b}]" for a, b in zip(bounds[:-1], bounds[1:])]
    return _Blocks(tasks, rows, names, transposed, np.dtype(dtype))


# --- what a task does with one block (module-level functions: workers unpickle them) ------------

def _largest(block: np.ndarray, name: str | None) -> float:
    """The block's largest magnitude, NaN and inf refused, naming the block; 0 when not scanned."""
    return 0.0 if name is None else cpu.block_largest(block, name)


def _range_step(block, z, transposed: bool, exponent: int, name: str | None):
    """(largest, Y, (Y^T Y,)) of the block: its rows of Y = M Z and its term of Y's Gram matrix."""
    largest = _largest(block, name)
    y, gram = cpu.block_range(block, z, transposed, exponent)
    return largest, y, (gram,)


def _power_step(block, z, transposed: bool, exponent: int, name: str | None):
    """(largest, Y, (Y^T Y, M^T Y)) of the block: both products of a power iteration in one task,
    one read of the block."""
    largest, y, (gram,) = _range_step(block, z, transposed, exponent, name)
    return largest, y, (gram, cpu.block_corange(block, y, transposed, exponent))


def _corange_step(block, q, transposed: bool, exponent: int):
    """The block's term of M^T Q."""
    return cpu.block_corange(block, q, transposed, exponent)


def _solve_step(y, r, with_gram: bool):
    """(Y R^-1, its Gram matrix or None) of the block's rows of Y."""
    return cpu.solve_factor(y, r, with_gram)


def _leaf_qr(y):
    """TSQR's leaf: (Q, R) of the block's rows of Y, or (None, Y) for a block with fewer rows than
    Y has columns, which goes up the tree whole."""
    width, rows = y.shape
    return cpu.householder_qr(y) if rows >= width else (None, y)


def _leaf_basis(q, piece):
    """The block's rows of TSQR's Q: its leaf's Q times its piece of the root's Q."""
    return piece if q is None else cpu.block_range(q, piece, True, 0)[0]


def _lift(q, small, rows_major: bool):
    """The block's rows of Q W (W small, column-major): row-major rows x k, or its transpose."""
    product = cpu.block_range(q, small, True, 0)[0]  # (k, rows): column-major rows x k
    return np.ascontiguousarray(product.T) if rows_major else product


def _sum(*terms):
    """Terms summed in the order given (arrays, or tuples of arrays summed entry by entry)."""
    if isinstance(terms[0], tuple):
        return tuple(_sum(*column) for column in zip(*terms))
    # A first round over a matrix outside the safe range may overflow; it is run again rescaled.
    with np.errstate(over="ignore", invalid="ignore"):
        return functools.reduce(np.add, terms)


def _tree_sum(terms: list):
    """The Delayed sum of Delayed terms, in a fixed tree of _SPLIT_EVERY terms a task."""
    while len(terms) > 1:
        terms = [dask.delayed(_sum)(*terms[i:i + _SPLIT_EVERY]) for i in range(0, len(terms), _SPLIT_EVERY)]
    return terms[0]


# --- the randomized SVD -------------------------------------------------------------------------

class _BlockedRsvd:
    """vsfast.rsvd's algorithm (csrc/vsfast/rsvd.hpp) with M held as blocks of rows: every product
    over M is one task per block, every sum over blocks a fixed tree, and the steps on small
    matrices (Cholesky factors, the small SVD) run here, between the rounds of tasks."""

    def __init__(self, blocks: _Blocks):
        self.blocks = blocks
        self.exponent = 0  # M is worked on as 2^-exponent M, as rsvd rescales matrices outside the safe range

    def _round(self, step, z, scan: bool):
        """Run step(block, Z) on every block: the tasks' results stay on the workers (persisted)
        and the sums of their Gram matrices and other terms come back, with each block's largest
        magnitude when `scan`."""
        b = self.blocks
        shared = dask.delayed(z)  # one key: each worker fetches Z once, not once per task
        tasks = [dask.delayed(step, nout=3)(block, shared, b.transposed, self.exponent, name if scan else None)
                 for block, name in zip(b.tasks, b.names)]
        tasks = dask.persist(*tasks)
        sums = _tree_sum([task[2] for task in tasks])
        largest = [task[0] for task in tasks] if scan else []
        sums, largest = dask.compute(sums, largest)
        return tasks, sums, largest

    def _first_round(self, step, omega):
        """The first round, which also scans the blocks: if the largest magnitude lies outside the
        safe range, the round is run again on the rescaled matrix."""
        tasks, sums, largest = self._round(step, omega, scan=True)
        exponent = cpu.block_exponent(max(largest), self.blocks.dtype)
        if exponent:
            self.exponent = exponent
            tasks, sums, _ = self._round(step, omega, scan=False)
        return tasks, sums

    def range_basis(self, omega: np.ndarray, power_iters: int) -> list:
        """Persisted blocks of an orthonormal basis Q of the range of M Omega after power_iters
        power iterations, column-major (width, rows) each."""
        step = _power_step if power_iters else _range_step
        tasks, sums = self._first_round(step, omega)
        for it in range(1, power_iters + 1):
            gram, corange = sums
            z = self._next_basis([task[1] for task in tasks], gram, corange)
            step = _power_step if it < power_iters else _range_step
            tasks, sums = self._round(step, z, scan=False)[:2]
        return self._orthonormal([task[1] for task in tasks], sums[0])

    def _next_basis(self, ys: list, gram: np.ndarray, corange: np.ndarray) -> np.ndarray:
        """A well-conditioned basis Z of M^T Y's span, as rsvd's power iteration takes it: with
        Y = Q R (R from Y's Gram matrix), M^T Q = (M^T Y) R^-1, then one Cholesky QR pass on Z. When
        Y's Gram matrix is not numerically positive definite, Y is orthonormalised by TSQR and
        M^T Q takes one more pass over M."""
        r = cpu.cholesky_factor(gram, False)
        if r is None:
            q = self._tsqr(ys)
            corange = dask.compute(_tree_sum([dask.delayed(_corange_step)(block, qb, self.blocks.transposed,
                                                                          self.exponent)
                                              for block, qb in zip(self.blocks.tasks, q)]))[0]
            return cpu.householder_qr(corange)[0]
        z, z_gram = cpu.solve_factor(corange, r, True)
        rz = cpu.cholesky_factor(z_gram, False)
        return cpu.solve_factor(z, rz, False)[0] if rz is not None else cpu.householder_qr(z)[0]

    def _orthonormal(self, ys: list, gram: np.ndarray) -> list:
        """Persisted blocks of Q, Y = Q R with Q orthonormal to working precision: CholeskyQR2
        across the blocks (two Gram matrices summed over them, two triangular solves on each), or
        TSQR where CholeskyQR2 cannot be trusted (orthonormalize.hpp's test)."""
        r1 = cpu.cholesky_factor(gram, False)
        if r1 is not None:
            first = dask.persist(*[dask.delayed(_solve_step, nout=2)(y, r1, True) for y in ys])
            r2 = cpu.cholesky_factor(dask.compute(_tree_sum([q[1] for q in first]))[0], True)
            if r2 is not None:
                return list(dask.persist(*[dask.delayed(_solve_step, nout=2)(q[0], r2, False)[0] for q in first]))
        return self._tsqr(ys)

    def _tsqr(self, ys: list) -> list:
        """Persisted blocks of TSQR's Q for the blocks of Y: Householder QR of every block, of the
        stacked R factors here, and each block's Q times its piece of the root's Q. Q is
        orthonormal even where Y is rank deficient."""
        leaves = dask.persist(*[dask.delayed(_leaf_qr, nout=2)(y) for y in ys])
        factors = dask.compute(*[leaf[1] for leaf in leaves])
        root = cpu.householder_qr(np.concatenate(factors, axis=1))[0]
        bounds = np.cumsum([0] + [f.shape[1] for f in factors])
        pieces = [np.ascontiguousarray(root[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return list(dask.persist(*[dask.delayed(_leaf_basis)(leaf[0], piece) for leaf, piece in zip(leaves, pieces)]))

    def project(self, q: list) -> np.ndarray:
        """B = Q^T M (width x short side, row-major): the last pass over M."""
        b = self.blocks
        return dask.compute(_tree_sum([dask.delayed(_corange_step)(block, qb, b.transposed, self.exponent)
                                       for block, qb in zip(b.tasks, q)]))[0]


def rsvd(x: Any, k: int, *, oversample: int = 10, power_iters: int = 2, seed: Any = 0) -> SVDResult:
    """Truncated SVD of a dask array too large for one worker: ``x ~ U @ diag(S) @ Vh``.

    The algorithm of :func:`vsfast.rsvd` with ``method="subspace", precision="full"`` (Halko,
    Martinsson & Tropp, SIAM Review 2011: subspace iteration in the input's precision), with the
    same parameters, the same Gaussian sketch and the same decisions, on a matrix held as blocks:
    x chunked by rows when it has more rows than columns (tall), by columns otherwise (wide; a
    square matrix counts as wide, as in vsfast.rsvd). Every product over x is one task per block
    running vsfast's compiled kernels where the block lives; a power iteration's two products
    share one task and one read of the block. Bases are orthonormalised across the blocks by
    CholeskyQR2 (two Gram matrices of k + oversample columns summed over the blocks), with TSQR
    where CholeskyQR2 cannot be trusted, and the small SVD runs here. x is read (power_iters + 2)
    times: persist it first when it fits in the cluster's memory, else each read computes it
    from its source. A chunking across the short side too is merged first (a shuffle).

    Parameters
    ----------
    x : 2-D dask array of numpy blocks (float32, float64; integers become float64).
    k, oversample, power_iters, seed : as in :func:`vsfast.rsvd` with ``method="subspace"``. The
        same seed gives bitwise the same result on any number of workers, and the in-memory
        result to rounding whatever the chunks.

    Returns
    -------
    SVDResult ``(U, S, Vh)``: for a tall x, U (M, k) a dask array chunked like x's rows (its blocks
    persisted), S (k,) and Vh (k, N) numpy arrays; for a wide x, U (M, k) and S numpy arrays and
    Vh (k, N) a dask array chunked like x's columns.
    """
    blocks = _blocks(x)
    m, n = x.shape
    k = check_int(k, "k", low=1, high=min(m, n))
    # Subspace iteration in the input's precision: the blocked steps implement no other method.
    oversample, power_iters, seed, *_ = _rsvd_params(cpu, "subspace", oversample, power_iters, None, "full", seed,
                                                     min(m, n))
    run = _BlockedRsvd(blocks)
    omega = cpu.sketch(m, n, k, oversample, seed, blocks.dtype)
    q = run.range_basis(omega, power_iters)
    # M ~ Q B, B = Ub S Vh: U = Q Ub, the short side's factor Vh.
    ub, s, vh = cpu.svd(run.project(q).astype(np.float64))
    s = np.ldexp(s[:k], run.exponent)
    if not np.all(np.isfinite(s.astype(blocks.dtype))):
        raise OverflowError(f"x's largest singular value overflows {blocks.dtype}; compute in float64 or scale x down")
    small = np.ascontiguousarray(ub[:, :k].T, dtype=blocks.dtype)  # Ub's first k columns, column-major
    tall = not blocks.transposed
    lifted = [dask.delayed(_lift)(qb, small, tall) for qb in q]
    pieces = [da.from_delayed(piece, shape=(rows, k) if tall else (k, rows), dtype=blocks.dtype)
              for piece, rows in zip(lifted, blocks.rows)]
    long_factor = da.concatenate(pieces, axis=0 if tall else 1).persist()
    s, vh = s.astype(blocks.dtype), np.ascontiguousarray(vh[:k], dtype=blocks.dtype)
    return SVDResult(long_factor, s, vh) if tall else SVDResult(np.ascontiguousarray(vh.T), s, long_factor)
