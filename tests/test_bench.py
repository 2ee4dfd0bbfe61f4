"""vsfast.bench's timing helper: the order of calls its ratios rely on (not their speed)."""

from __future__ import annotations

from vsfast.bench import interleaved_medians


def calls_of(rounds: int, rewarm: bool) -> list[str]:
    log: list[str] = []
    fns = [lambda name=name: log.append(name) for name in "ab"]
    times = interleaved_medians(fns, rounds, warmup=1, settle=0.0, rewarm=rewarm)
    assert len(times) == 2 and all(t >= 0 for t in times)
    return log


def test_rounds_interleave_the_callables():
    assert calls_of(2, rewarm=False) == ["a", "b", "a", "b", "a", "b"]


def test_rewarm_puts_an_untimed_call_of_its_own_before_each_timed_one():
    assert calls_of(2, rewarm=True) == ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b"]
