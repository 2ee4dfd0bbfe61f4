"""vsfast.distributed on a LocalCluster of two worker processes on the loopback address, started
and closed here: checkpoint analyses against the local vsfast.analyze (also with a worker killed
in the middle, and with a corrupt shard), and the randomized SVD of dask arrays against the
in-memory vsfast.rsvd, its independence of the chunks and of the workers."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import vsfast  # noqa: E402
from vsfast import distributed as vd  # noqa: E402

from conftest import EPS, orthonormality_error, with_spectrum  # noqa: E402

# The in-memory call that vsfast.distributed.rsvd reproduces: subspace iteration, full precision.
SUBSPACE = {"method": "subspace", "precision": "full"}


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, on 127.0.0.1 (the dashboard on a free port): the
    cluster every test of this module shares (the current client while they run)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
                      worker_dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


# --- analyze ----------------------------------------------------------------------------------

def save(path, tensors: dict) -> None:
    safetensors = pytest.importorskip("safetensors.numpy")
    safetensors.save_file(tensors, str(path))


def same_report(got, want) -> None:
    """The distributed report is the local one: the same layers in the same order, bitwise the
    same singular values, the same metrics (NaN where the local one has NaN), skipped, source."""
    assert (got.source, got.skipped) == (want.source, want.skipped)
    assert [layer.name for layer in got] == [layer.name for layer in want]
    for a, b in zip(got, want):
        assert np.array_equal(a.singular_values, b.singular_values), a.name
        assert a.singular_values.dtype == b.singular_values.dtype
        ra, rb = a.row(), b.row()
        assert ra.keys() == rb.keys()
        for key in ra:
            both_nan = isinstance(ra[key], float) and math.isnan(ra[key]) and math.isnan(rb[key])
            assert ra[key] == rb[key] or both_nan, (a.name, key, ra[key], rb[key])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small model's checkpoint: equal-shape layers (one task), a stack of experts, attention's
    stacked projections, a convolution, and tensors the analysis skips (1-D, integers)."""
    rng = np.random.default_rng(7)
    tensors = {f"blocks.{i}.mlp.weight": rng.standard_normal((48, 40)).astype(np.float32) for i in range(11)}
    tensors |= {
        "embed.weight": rng.standard_normal((300, 2100)).astype(np.float32),   # top-k by default
        "attn.in_proj_weight": rng.standard_normal((96, 32)).astype(np.float32),
        "moe.experts.weight": rng.standard_normal((3, 20, 30)),                   # float64
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "norm.bias": np.zeros(40, np.float32),
        "steps": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save(path, tensors)
    return path


@pytest.mark.parametrize("options", [{}, {"k": 5}, {"k": 5, "method": "exact"}, {"dtype": "float64",
                                                                                 "conv_view": "kernel"}])
def test_distributed_analysis_equals_the_local_one(client, checkpoint, options):
    same_report(vd.analyze(checkpoint, **options), vsfast.analyze(checkpoint, **options))


def test_a_model_zoo_gives_one_report_per_checkpoint_in_order(client, checkpoint, tmp_path):
    rng = np.random.default_rng(8)
    other = tmp_path / "other.safetensors"
    save(other, {"w": rng.standard_normal((30, 20)).astype(np.float32)})
    reports = vd.analyze([other, checkpoint, other])
    assert [r.source for r in reports] == [str(other), str(checkpoint), str(other)]
    for got, path in zip(reports, [other, checkpoint, other]):
        same_report(got, vsfast.analyze(path))


def test_bases_only_on_request(client, checkpoint):
    assert all(layer.spaces is None for layer in vd.analyze(checkpoint, k=5))
    layer = vd.analyze(checkpoint, k=5, bases=True)["blocks.3.mlp.weight"]
    from safetensors.numpy import load_file

    w = load_file(str(checkpoint))["blocks.3.mlp.weight"]
    local = vsfast.spaces(w, k=5, method=layer.method)
    assert np.array_equal(np.asarray(layer.spaces.singular_values), np.asarray(local.singular_values))
    assert np.array_equal(np.asarray(layer.spaces.signal), np.asarray(local.signal))


def test_a_tensor_with_nan_in_one_shard_fails_naming_its_file_and_tensor(client, tmp_path):
    rng = np.random.default_rng(9)
    first = {f"h.{i}.w": rng.standard_normal((16, 12)).astype(np.float32) for i in range(3)}
    second = {f"h.{i}.w": rng.standard_normal((16, 12)).astype(np.float32) for i in range(3, 6)}
    second["h.4.w"][3, 5] = np.nan
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save(tmp_path / names[0], first)
    save(tmp_path / names[1], second)
    weight_map = {name: names[0] for name in first} | {name: names[1] for name in second}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shard = tmp_path / names[1]
    with pytest.raises(ValueError, match=rf"{shard}: tensor 'h.4.w': .*expected finite values"):
        vd.analyze(tmp_path)


def _analysis_progress(dask_scheduler) -> tuple[dict, int]:
    """On the scheduler: finished analysis tasks per worker, and the number not finished."""
    done, pending = Counter(), 0
    for key, task in dask_scheduler.tasks.items():
        if str(key).startswith("vsfast-analyze"):
            if task.state == "memory":
                done.update(worker.address for worker in task.who_has)
            else:
                pending += 1
    return dict(done), pending


def test_a_worker_killed_mid_analysis_loses_and_duplicates_no_layer(client, tmp_path):
    """40 tensors of distinct shapes (40 tasks); once a few results are held, the worker holding
    the most is killed (SIGKILL to its process): Dask reruns its tasks, results it held
    included, on the other worker, and the report is the local one, every layer once."""
    rng = np.random.default_rng(10)
    path = tmp_path / "many.safetensors"
    save(path, {f"layer.{i}.weight": rng.standard_normal((500 + i, 500)).astype(np.float32) for i in range(40)})
    result, killed = {}, {}
    run = threading.Thread(target=lambda: result.setdefault("report", vd.analyze(path, client=client)))
    run.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        done, pending = client.run_on_scheduler(_analysis_progress)
        if sum(done.values()) >= 3 and pending >= 10:
            victim = max(done, key=done.get)
            killed["pid"] = client.run(os.getpid, workers=[victim])[victim]
            killed["pending"] = pending
            os.kill(killed["pid"], signal.SIGKILL)
        time.sleep(0.01)
    run.join(timeout=120)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for the tests after this one
    assert killed, "the analysis ended before a worker could be killed in its middle"
    report = result["report"]
    assert len(report) == 40 and len({layer.name for layer in report}) == 40
    same_report(report, vsfast.analyze(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two small checkpoints, for the command (which also draws figures of every spectrum)."""
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("tiny")
    for name in ("first", "second"):
        save(folder / f"{name}.safetensors", {"a.weight": rng.standard_normal((12, 9)).astype(np.float32),
                                              "b.weight": rng.standard_normal((7, 12)).astype(np.float32)})
    return [folder / "first.safetensors", folder / "second.safetensors"]


def test_the_command_analyses_a_zoo_on_the_cluster(client, tiny, tmp_path, caplog, capsys):
    from vsfast import cli

    out = tmp_path / "out"
    caplog.set_level("INFO", logger="vsfast")
    status = cli.main(["analyze", *map(str, tiny), "--scheduler", client.scheduler.address, "--out", str(out)])
    assert status == 0
    assert "Dask dashboard: " in caplog.text
    for path in tiny:
        written = json.loads((out / path.stem / "layers.json").read_text())
        assert written == json.loads(vsfast.analyze(path).to_json())
    assert capsys.readouterr().out.count("report: ") == 2


def test_the_command_takes_checkpoints_only_on_a_cluster(client, tiny, capsys):
    from vsfast import cli

    address = client.scheduler.address
    assert cli.main(["analyze", "fcnn1", "--scheduler", address]) == 1
    assert "fcnn1: a model, not a checkpoint" in capsys.readouterr().err
    assert cli.main(["analyze", str(tiny[0]), "--scheduler", address, "--workers", "2"]) == 2


def test_analyze_refuses_bad_arguments(checkpoint):
    with pytest.raises(ValueError, match="method"):
        vd.analyze(checkpoint, method="fast")
    with pytest.raises(ValueError, match="non-empty sequence"):
        vd.analyze([])
    with pytest.raises(ValueError, match="no such file"):
        vd.analyze(checkpoint.parent / "absent.safetensors")


# --- rsvd -------------------------------------------------------------------------------------

def rounding(dtype, a: np.ndarray, s0: float) -> float:
    """How far two computations of the same rsvd may differ: the products sum max(m, n) terms
    each, in a different order when the blocks differ; random rounding errors grow like
    sqrt(max(m, n)) eps |A| (10 covers the few further products of the small steps)."""
    return 10 * np.sqrt(max(a.shape)) * EPS[dtype] * s0


def product(U, S, Vh) -> np.ndarray:
    return (np.asarray(U, dtype=np.float64) * S) @ np.asarray(Vh, dtype=np.float64)


CHUNKINGS = {  # shape: chunkings of x (rows or columns along the long side, merged across the short one)
    (600, 90): [(600, 90), (70, 90), (250, 45)],
    (90, 600): [(90, 130), (45, 333)],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", list(CHUNKINGS))
@pytest.mark.parametrize("power_iters", [0, 2])
def test_rsvd_equals_in_memory_rsvd_to_rounding_whatever_the_chunks(client, rng, dtype, shape, power_iters):
    """With no power iteration and a slowly decaying spectrum the sketch decides the result: only
    the in-memory call's own sketch gives it to rounding."""
    a, _ = with_spectrum(rng, *shape, "slow")
    a = a.astype(dtype)
    u, s, vh = vsfast.rsvd(a, 12, power_iters=power_iters, seed=5, **SUBSPACE)
    expected = product(u, s, vh)
    tol = rounding(dtype, a, s[0])
    for chunks in CHUNKINGS[shape]:
        U, S, Vh = vd.rsvd(da.from_array(a, chunks=chunks), 12, power_iters=power_iters, seed=5)
        assert S.dtype == dtype and np.abs(S - s).max() <= tol, chunks
        assert np.abs(product(U, S, Vh) - expected).max() <= tol, chunks


@pytest.mark.parametrize("shape, chunks, long_axis", [((900, 120), (200, 120), 0), ((120, 900), (120, 200), 1)])
def test_rsvd_factors_shapes_kinds_and_orthonormality(client, rng, shape, chunks, long_axis):
    a, _ = with_spectrum(rng, *shape, "fast")
    x = da.from_array(a, chunks=chunks)
    U, S, Vh = vd.rsvd(x, 7)
    long_factor, short_factor = (U, Vh) if long_axis == 0 else (Vh, U)
    assert isinstance(long_factor, da.Array) and isinstance(short_factor, np.ndarray)
    assert long_factor.chunks[long_axis] == x.chunks[long_axis]
    assert U.shape == (shape[0], 7) and S.shape == (7,) and Vh.shape == (7, shape[1])
    assert orthonormality_error(np.asarray(U)) < 50 * EPS[np.float64]
    assert orthonormality_error(np.asarray(Vh).T) < 50 * EPS[np.float64]
    assert np.all(np.diff(S) <= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_bitwise_the_same_on_any_number_of_workers(client, rng, dtype):
    """Two worker processes, or one thread in this process (Dask's synchronous scheduler): the
    same blocks give bitwise the same result."""
    a, _ = with_spectrum(rng, 700, 90, "slow")
    x = da.from_array(a.astype(dtype), chunks=(90, 90))
    on_cluster = vd.rsvd(x, 9, seed=11)
    with dask.config.set(scheduler="synchronous"):
        alone = vd.rsvd(x, 9, seed=11)
    for got, want in zip(on_cluster, alone):
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_rsvd_is_seeded(client, rng):
    a, _ = with_spectrum(rng, 400, 60, "slow")
    x = da.from_array(a, chunks=(100, 60))
    first = vd.rsvd(x, 5, power_iters=0, seed=3).S
    assert np.array_equal(first, vd.rsvd(x, 5, power_iters=0, seed=3).S)
    assert not np.array_equal(first, vd.rsvd(x, 5, power_iters=0, seed=4).S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_rank_deficient_sketch_goes_through_tsqr(client, rng, dtype, monkeypatch):
    """A matrix of rank 3 makes the sketch's Gram matrix singular: CholeskyQR2 gives way to TSQR,
    whose leaves include blocks with fewer rows than the sketch has columns, and the result is
    still exact to rounding."""
    calls = []
    tsqr = vd._BlockedRsvd._tsqr
    monkeypatch.setattr(vd._BlockedRsvd, "_tsqr", lambda self, ys: calls.append(len(ys)) or tsqr(self, ys))
    a = (rng.standard_normal((60, 3)) @ rng.standard_normal((3, 50))).astype(dtype)
    U, S, Vh = vd.rsvd(da.from_array(a, chunks=(7, 50)), 5)
    assert calls
    s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert np.abs(product(U, S, Vh) - a).max() <= rounding(dtype, a, s[0])
    assert orthonormality_error(np.asarray(U)) < 50 * EPS[dtype]


def test_rsvd_float32_ill_conditioned_sketch_matches_in_memory(client, rng, monkeypatch):
    """sigma_1 / sigma_k = 1e9 in float32: the last basis is too ill-conditioned for CholeskyQR2
    (orthonormalize.hpp's test), as in the in-memory call, which then takes Householder QR."""
    calls = []
    tsqr = vd._BlockedRsvd._tsqr
    monkeypatch.setattr(vd._BlockedRsvd, "_tsqr", lambda self, ys: calls.append(len(ys)) or tsqr(self, ys))
    a, s_true = with_spectrum(rng, 400, 60, np.logspace(0, -9, 60))
    a = a.astype(np.float32)
    S = vd.rsvd(da.from_array(a, chunks=(50, 60)), 20).S
    assert calls
    assert np.abs(S - vsfast.rsvd(a, 20, **SUBSPACE).S).max() <= rounding(np.float32, a, 1.0)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 2.0**60), (np.float32, 2.0**-70), (np.float64, 2.0**600)])
def test_rsvd_rescales_matrices_outside_the_safe_range(client, rng, dtype, scale):
    a, s_true = with_spectrum(rng, 300, 40, "fast")
    x = da.from_array((a * scale).astype(dtype), chunks=(64, 40))
    S = vd.rsvd(x, 4).S
    assert np.all(np.isfinite(S))
    assert np.abs(S / scale - s_true[:4]).max() <= rounding(dtype, a, s_true[0])


def test_rsvd_names_the_block_holding_nan(client, rng):
    a = rng.standard_normal((300, 20))
    a[250, 3] = np.inf
    with pytest.raises(ValueError, match=r"x\[200:300\]: expected finite values"):
        vd.rsvd(da.from_array(a, chunks=(100, 20)), 2)


def test_rsvd_takes_integers_as_float64(client):
    a = np.arange(600).reshape(30, 20)
    U, S, Vh = vd.rsvd(da.from_array(a, chunks=(10, 20)), 2)
    assert S.dtype == np.float64
    assert np.abs(S - vsfast.rsvd(a, 2, **SUBSPACE).S).max() <= rounding(np.float64, a, S[0])


@pytest.mark.parametrize("x, k, error, match", [
    (np.ones((4, 3)), 1, TypeError, "expected a dask.array.Array"),
    (da.ones(3), 1, ValueError, "expected a matrix"),
    (da.ones((4, 3), dtype=np.float16), 1, TypeError, "expected real numbers"),
    (da.ones((4, 3)), 4, ValueError, r"k: expected 1 <= k <= 3"),
    (da.ones((4, 3)), 1.5, TypeError, "k: expected an integer"),
])
def test_rsvd_refuses_bad_arguments(x, k, error, match):
    with pytest.raises(error, match=match):
        vd.rsvd(x, k)


def test_the_command_starts_a_local_cluster_of_n_workers(tiny, tmp_path, caplog):
    """Last in this file: it starts (and closes) a cluster of its own beside the module's."""
    from vsfast import cli

    caplog.set_level("INFO", logger="vsfast")
    assert cli.main(["analyze", str(tiny[0]), "--workers", "1", "--out", str(tmp_path)]) == 0
    assert "a LocalCluster of 1 worker processes" in caplog.text and "on 1 Dask workers" in caplog.text
    assert json.loads((tmp_path / "layers.json").read_text()) == json.loads(vsfast.analyze(tiny[0]).to_json())

