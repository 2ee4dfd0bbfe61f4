"""A checkpoint is analysed a tensor at a time: a process's anonymous memory stays a few
matrices' worth however large the file. Sparse checkpoints (benchmarks/checkpoint_memory.py
builds them: zeros but one row of known values per tensor) keep the disk free; the analysis runs
in a fresh process whose RssAnon a thread samples. The default suite's case is small; the slow
one is larger than the machine's available memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import vsfast

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from checkpoint_memory import measure, write_sparse_checkpoint  # noqa: E402
from conftest import measures_memory  # noqa: E402

pytest.importorskip("safetensors")
linux = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc (Linux)")
MIB = 1 << 20


def check(result: dict, norms: dict[str, float]) -> None:
    assert result["sigma_max"].keys() == norms.keys()
    for name, norm in norms.items():
        assert result["sigma_max"][name] == pytest.approx(norm, rel=1e-5), name
    assert not result["torch"], "a checkpoint's analysis needs no torch"


@linux
@measures_memory
def test_a_checkpoint_streams_in_a_few_matrices_of_memory(tmp_path):
    # 4 tensors of 64 MiB: top-k through the randomized SVD reads each matrix from the memory
    # map, never copying it in its precision; the process grows by its bases and BLAS buffers
    # (under 64 MiB) and, on a CPU with AVX512-BF16, the bfloat16 copy its passes may read (half
    # a matrix), not by a matrix.
    shape = (4096, 4096)
    norms = write_sparse_checkpoint(tmp_path, 4, shape, shards=2)
    result = measure(tmp_path, 4)
    check(result, norms)
    assert result["peak"] - result["baseline"] < 64 * MIB + bfloat16_copy(shape)


def bfloat16_copy(shape) -> int:
    """Bytes of the bfloat16 copy rsvd's passes read where this CPU has AVX512-BF16, else 0."""
    return 2 * shape[0] * shape[1] if vsfast._core.bf16_supported() else 0


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


@linux
@measures_memory
@pytest.mark.slow
def test_a_checkpoint_larger_than_the_free_memory(tmp_path):
    # Tensors of 1 GiB in 4 shards, a quarter more of them than the memory now available holds.
    shape = (16384, 16384)
    count = int(1.25 * available_memory() / (4 * shape[0] * shape[1])) + 1
    norms = write_sparse_checkpoint(tmp_path, count, shape, shards=4)
    result = measure(tmp_path, 2)
    check(result, norms)
    assert result["peak"] - result["baseline"] < 600 * MIB + bfloat16_copy(shape)
