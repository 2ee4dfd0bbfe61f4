"""The profile benchmarks/inverse.py writes beside its table: perf's samples of the running process,
summed per symbol, and the symbols' short names."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from common import _gemm_rowmajor  # noqa: E402
from inverse import perf_samples, profile_table, short_symbol, symbol_shares  # noqa: E402


@pytest.mark.parametrize("name,short", [
    ("vsfast::NewtonSolver<float>::run", "vsfast::NewtonSolver::run"),
    ("vsfast::detail::with_forward<float, vsfast::activate<float>(vsfast::Activation const&, float const*)"
     "::{lambda(auto:1)#1}>", "vsfast::detail::with_forward"),
    ("vsfast::detail::dot<double>", "vsfast::detail::dot"),
    ("sgemm_kernel_SKYLAKEX", "sgemm_kernel_SKYLAKEX"),
])
def test_short_symbol_drops_template_arguments_and_parameters(name, short):
    assert short_symbol(name) == short


def test_symbol_shares_sum_instantiations_and_a_stripped_librarys_addresses():
    report = """# Overhead|Shared Object|Symbol
 50.00% |libscipy_openblas.so |[.] sgemm_kernel_SKYLAKEX
 20.00% |_core.so |[.] 0x000000000005614f
 15.00% |_core.so |[.] 0x0000000000056154
  9.00% |mine.so |[.] vsfast::NewtonSolver<float>::run
  6.00% |mine.so |[.] vsfast::NewtonSolver<double>::run
"""
    assert symbol_shares(report) == [(50.0, "libscipy_openblas.so", "sgemm_kernel_SKYLAKEX"),
                                     (35.0, "_core.so", "(its functions together: stripped)"),
                                     (15.0, "mine.so", "vsfast::NewtonSolver::run")]


def busy_gemm(seconds: float = 1.5) -> None:
    a = np.ones((256, 256), np.float32)
    c = np.empty_like(a)
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        _gemm_rowmajor(False, 256, 256, 256, a, a, c)


def test_perf_samples_find_where_the_time_goes():
    rows, why = perf_samples(busy_gemm)
    if not rows:
        pytest.skip(f"no profile on this machine: {why}")
    assert sum(share for share, _, _ in rows) == pytest.approx(100, abs=1)
    assert rows == sorted(rows, reverse=True)
    gemm = sum(share for share, library, symbol in rows if "openblas" in library and "gemm" in symbol)
    assert gemm > 50, rows[:5]
    assert all(symbol and "<" not in symbol for _, _, symbol in rows)


def test_profile_table_says_why_it_is_empty(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert profile_table("Where the time goes", busy_gemm) == "Where the time goes: no profile (perf is not installed)."
