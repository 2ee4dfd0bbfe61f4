"""The fuzz suite: every public entry point of vsfast and the ``vsfast`` command against random
shapes (0 and 1 sized included), ranks 0-4, every numpy dtype, NaN and inf, huge and tiny values,
negative and huge integers, non-contiguous, reversed, byte-swapped and read-only arrays, tensors
that require grad and tensors on the meta device. The cases live in tests/fuzz_cases.py; each
target runs in its own process, so a crash fails its test and names the case."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fuzz_cases.py")
# Cases per target in the default suite: a few seconds each. The command's cases run real jobs.
EXAMPLES = {"command": 30, "analyze": 150, "invert": 150, "threads": 50, "figures": 60, "loading": 100}
TARGETS = ["rsvd", "svd", "spaces", "project", "pinv", "reconstruct", "threads", "targets", "analyze", "invert",
           "figures", "loading", "command"]


def run_target(target: str, examples: int, tmp_path: Path, *, random: bool = False) -> int:
    log = tmp_path / "case.txt"
    command = [sys.executable, "-X", "faulthandler", str(WORKER), target, "--examples", str(examples),
               "--log", str(log)] + (["--random"] if random else [])
    env = {**os.environ, "VSFAST_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path)
    case = log.read_text() if log.exists() else "(before the first case)"
    assert proc.returncode == 0, (
        f"{target}: exit status {proc.returncode} (negative: killed by that signal) in the case\n{case}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return int(re.search(r"cases: (\d+)", proc.stdout).group(1))


def _needs_data(target: str) -> None:
    if target == "command" and not os.environ.get("VSFAST_DATA"):
        pytest.skip("the command reads MNIST: needs VSFAST_DATA (the test command sets it)")


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target, tmp_path):
    _needs_data(target)
    pytest.importorskip("torch")
    assert run_target(target, EXAMPLES.get(target, 300), tmp_path) > 0


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_campaign(target, tmp_path):
    """New random cases, ten times as many: run with -m slow."""
    _needs_data(target)
    pytest.importorskip("torch")
    cases = run_target(target, 10 * EXAMPLES.get(target, 300), tmp_path, random=True)
    print(f"{target}: {cases} cases")  # shown with -s
