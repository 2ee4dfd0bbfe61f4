"""Concurrent calls give the serial results; repeated calls do not grow the process."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import vsfast
from conftest import measures_memory


@pytest.fixture(scope="module")
def workload():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 200)).astype(np.float32)
    x = rng.standard_normal((500, 200)).astype(np.float32)
    chain = vsfast.Chain([(rng.standard_normal((40, 64)).astype(np.float32), None, ("leaky_relu", 0.1)),
                          (rng.standard_normal((10, 40)).astype(np.float32), None, None)])
    y = chain.forward(rng.standard_normal((300, 64)).astype(np.float32))
    return w, x, chain, y


def run_all(w, x, chain, y):
    u, s, vh = vsfast.rsvd(w, 16, seed=3)
    sp = vsfast.spaces(w)
    signal, residual = vsfast.project(x, sp)
    inputs, _ = chain.reconstruct(y)
    solved = chain.solve(y[:150], reference=x[:1, :64], reference_layers="all")
    return [u, s, vh, sp.singular_values, signal, residual, inputs, solved.inputs, solved.steps]


def test_eight_threads_at_once_match_serial_calls(workload):
    serial = run_all(*workload)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: run_all(*workload), range(32)))
    for result in results:
        for got, want in zip(result, serial):
            np.testing.assert_array_equal(got, want)


@pytest.fixture
def two_threads():
    """vsfast on two threads for one test, whatever the machine has: the parallel regions below
    then run on its pool of workers (or, for a concurrent caller, on threads of their own)."""
    before = vsfast.get_num_threads()
    vsfast.set_num_threads(2)
    yield
    vsfast.set_num_threads(before)


def parallel_workload():
    """An rsvd and a projection large enough for every step to run in parallel."""
    a = np.random.default_rng(5).standard_normal((300, 2500)).astype(np.float32)
    u, s, vh = vsfast.rsvd(a, 32, seed=1)
    signal, residual = vsfast.project(a, vsfast.spaces(a[:64]))
    return u, s, vh, signal, residual


def test_concurrent_callers_share_the_workers_and_match_serial_calls(two_threads):
    serial = parallel_workload()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: parallel_workload(), range(12)))
    for result in results:
        for got, want in zip(result, serial):
            np.testing.assert_array_equal(got, want)


def _child_workload(conn):
    conn.send(parallel_workload())
    conn.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()")
# Forking a multi-threaded process is the point here; Python 3.12+ warns about it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_workers_of_its_own(two_threads):
    """A child of fork() has none of its parent's worker threads: it must start its own rather
    than wait for threads that do not exist."""
    parent = parallel_workload()  # the parent's workers exist from here on
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_workload, args=(send,), daemon=True)
    child.start()
    assert receive.poll(60), "the forked child did not finish its workload"
    result = receive.recv()
    child.join(30)
    assert child.exitcode == 0
    for got, want in zip(result, parent):
        np.testing.assert_array_equal(got, want)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read the resident size")
@measures_memory
def test_ten_thousand_calls_leave_resident_memory_flat():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((20, 30))
    x = rng.standard_normal((5, 30))
    chain = vsfast.Chain([(w, None, "selu")])
    y = chain.forward(x)
    calls = [lambda: vsfast.rsvd(w, 4), lambda: vsfast.svd(w), lambda: vsfast.spaces(w).rejected,
             lambda: vsfast.project(x, vsfast.spaces(w)), lambda: vsfast.pinv(w), lambda: chain.reconstruct(y),
             lambda: chain.forward(x), lambda: chain.solve(y, max_iter=3)]
    for call in calls:  # warm-up: allocator pools and caches settle
        for _ in range(200):
            call()
    before = resident_bytes()
    for call in calls:
        for _ in range(10_000):
            call()
    # A leak of even 100 bytes a call would add 8 MB; allocator noise stays well below.
    assert resident_bytes() - before < 4 * 2**20


def test_a_request_too_large_for_memory_is_a_memory_error():
    big = np.ones((4, 4), np.float32)
    with pytest.raises((MemoryError, ValueError)):
        vsfast.spaces(np.broadcast_to(big[:1, :1], (2**20, 2**20)))
