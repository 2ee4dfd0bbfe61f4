"""pytest-benchmark suite: vsfast and its torch baselines on the same workloads.

    .venv/bin/python -m pytest benchmarks/ --benchmark-group-by=param:workload

For ratios measured in one run, use ``benchmarks/ratios.py`` (kernels against the GEMM floor
and torch), ``benchmarks/analysis.py`` (whole models against numpy and torch) and
``benchmarks/inverse.py`` (inverse maps against gradient descent).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import vsfast  # noqa: E402
from common import (  # noqa: E402
    K, OVERSAMPLE, POWER_ITERS, RSVD_SHAPES, TorchChain, fcnn5_like_chain, layer_like, torch_lowrank,
    torch_projection,
)

torch.set_num_threads(vsfast.get_num_threads())


@pytest.fixture(scope="module", params=RSVD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def matrix(request):
    return layer_like(request.param)


@pytest.mark.parametrize("impl", ["vsfast", "torch"])
def test_rsvd(benchmark, matrix, impl):
    benchmark.group = "rsvd " + "x".join(map(str, matrix.shape))
    if impl == "vsfast":
        benchmark(vsfast.rsvd, matrix, K, oversample=OVERSAMPLE, power_iters=POWER_ITERS)
    else:
        benchmark(torch_lowrank, torch.from_numpy(matrix))


@pytest.mark.parametrize("impl", ["vsfast", "torch"])
def test_project_10000(benchmark, impl):
    benchmark.group = "project 10000x784 onto rank 512"
    sp = vsfast.spaces(layer_like((512, 784)))
    x = np.random.default_rng(0).standard_normal((10_000, 784), dtype=np.float32)
    if impl == "vsfast":
        benchmark(vsfast.project, x, sp)
    else:
        benchmark(torch_projection, torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(sp.signal)))


@pytest.mark.parametrize("impl", ["vsfast", "torch"])
def test_reconstruct_10000(benchmark, impl):
    benchmark.group = "reconstruct 10000 targets through 784-512-256-128-64-10"
    layers = fcnn5_like_chain()
    chain = vsfast.Chain(layers)
    y = chain.forward(np.random.default_rng(0).random((10_000, 784), dtype=np.float32))
    if impl == "vsfast":
        benchmark(chain.reconstruct, y)
    else:
        benchmark(TorchChain.from_layers(layers).reconstruct, torch.from_numpy(y))


def test_solve_1000(benchmark):
    """Gauss-Newton through the forward map (the repair of out-of-range targets); its comparison
    with gradient descent on the trained FCNN-5 is benchmarks/inverse.py."""
    benchmark.group = "solve 1000 targets through 784-512-256-128-64-10 from other inputs"
    chain = vsfast.Chain(fcnn5_like_chain())
    rng = np.random.default_rng(1)
    y = chain.forward(rng.random((1000, 784), dtype=np.float32))
    benchmark(chain.solve, y, reference=rng.random((1000, 784), dtype=np.float32), reference_layers="all")


@pytest.mark.parametrize("impl", ["vsfast", "torch"])
def test_analyze_resnet18(benchmark, impl):
    from analysis import resnet18, weights

    benchmark.group = "exact spaces of every ResNet18 layer"
    model, _ = resnet18()
    if impl == "vsfast":
        benchmark(vsfast.analyze, model)
    else:
        mats = weights(model)
        benchmark(lambda: [torch.linalg.svd(w, full_matrices=False) for w in mats])
