"""Shared machinery of the benchmarks: round-robin timing, paired ratios, call counts.

Wall-clock time on a shared machine is noisy, so every benchmark here

* runs all its variants in one process, round-robin, in a new shuffled order each round,
  and discards the first (warm-up) round;
* turns each round into ratios against the baseline measured *in the same round*
  (paired), and reports the median ratio with its min..max over rounds;
* prints beside each row a deterministic count of Python calls per step: the number of
  function calls cProfile sees (Python and built-in functions) for a run of ``n2`` steps
  minus that for ``n1`` steps, divided by ``n2 - n1``. Setup and teardown cancel out, and
  the count does not depend on machine load, so tests may gate on it.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Spread", "interleave", "paired", "calls_per_step", "top_calls_per_step", "fmt_ratio"]


@dataclass(frozen=True)
class Spread:
    """The median of some per-round values with their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


def interleave(
    variants: Mapping[str, Callable[[], float]], rounds: int, *, seed: int = 0, warmup: int = 1
) -> dict[str, list[float]]:
    """Call every variant once per round, in a shuffled order each round.

    Each variant returns the quantity it measured (seconds per step, say). The first
    ``warmup`` rounds are discarded. Returns the measured values by variant, one per kept round,
    so that index ``i`` of every list comes from the same round.
    """
    rng = random.Random(seed)
    kept: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            value = variants[name]()
            if round_ >= warmup:
                kept[name].append(value)
    return kept


def paired(values: Mapping[str, Sequence[float]], baseline: str) -> dict[str, Spread]:
    """Each variant's per-round ratio to ``baseline`` (same round), as median and range."""
    base = values[baseline]
    return {name: Spread.of([v / b for v, b in zip(vals, base)]) for name, vals in values.items()}


def _profile(run: Callable[[int], object], steps: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run(steps)
    finally:
        profiler.disable()
    return pstats.Stats(profiler)


def calls_per_step(run: Callable[[int], object], n1: int = 20, n2: int = 60) -> float:
    """Python calls per step of ``run(steps)``: (calls(n2) - calls(n1)) / (n2 - n1).

    Run it once beforehand (or let the first profile be a throwaway) so that one-time
    imports and caches do not land in either count.
    """
    run(n1)  # first-use imports and caches land here, in neither count
    first = _profile(run, n1).total_calls  # type: ignore[attr-defined]
    second = _profile(run, n2).total_calls  # type: ignore[attr-defined]
    return (second - first) / (n2 - n1)


def top_calls_per_step(run: Callable[[int], object], n1: int = 20, n2: int = 60, limit: int = 40) -> list[tuple[float, str]]:
    """The functions whose call counts grow with the steps, as (calls per step, function)."""
    run(n1)
    first = _profile(run, n1).stats  # type: ignore[attr-defined]
    second = _profile(run, n2).stats  # type: ignore[attr-defined]
    rows = []
    for func, (_, ncalls, *_rest) in second.items():
        before = first.get(func, (0, 0))[1]
        per_step = (ncalls - before) / (n2 - n1)
        if per_step:
            filename, line, name = func
            rows.append((per_step, f"{name} ({filename.rsplit('site-packages/', 1)[-1]}:{line})"))
    rows.sort(reverse=True)
    return rows[:limit]


def fmt_ratio(spread: Spread) -> str:
    return f"{spread.median:5.2f}x ({spread.low:.2f}..{spread.high:.2f})"
