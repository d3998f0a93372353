"""The per-step Python-call budgets of issue 9, as deterministic counts (never a time).

Counts come from ``benchmarks/bench_steps.py``: cProfile's call count for a run of 30 steps
minus that of 10 steps, over 20 (MLP 784-256-10, batch 64, pre-batched list). They do not
depend on machine load; ``make bench`` prints them beside the timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

bench_steps = pytest.importorskip("bench_steps")

#: bz's own layer (bridge, module, loader guard) over the plain-Lightning config it maps to.
BZ_LAYER_BUDGET = 150
#: bz-train's default experience: console, TensorBoard, loss, accuracy and F1.
DEFAULT_EXPERIENCE_BUDGET = 3000


@pytest.fixture(scope="module")
def calls() -> dict[str, float]:
    return {name: bench_steps.count_calls(name, n1=10, n2=30) for name in ("lightning", "bz_bare", "bz_default")}


def test_bz_layer_adds_at_most_150_calls_per_step(calls: dict[str, float]) -> None:
    extra = calls["bz_bare"] - calls["lightning"]
    assert extra <= BZ_LAYER_BUDGET, f"bz's layer costs {extra:.0f} Python calls per step (budget {BZ_LAYER_BUDGET})"


def test_default_experience_within_3000_calls_per_step(calls: dict[str, float]) -> None:
    assert calls["bz_default"] <= DEFAULT_EXPERIENCE_BUDGET, (
        f"bz's default plugins and metrics cost {calls['bz_default']:.0f} Python calls per step "
        f"(budget {DEFAULT_EXPERIENCE_BUDGET})"
    )


def test_unimplemented_step_hooks_are_switched_off() -> None:
    """A per-step hook no plugin implements is not called at all (Lightning skips None)."""
    from bz_lightning.bridge import LifecycleCallback
    from bz_lightning.plugins import Plugin

    class EpochOnly(Plugin):
        def end_epoch(self, context):  # type: ignore[no-untyped-def]
            pass

    class PerBatch(Plugin):
        def end_training_batch(self, context):  # type: ignore[no-untyped-def]
            pass

    bridge = LifecycleCallback([EpochOnly()])
    for hook in ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_validation_batch_end"):
        assert getattr(bridge, hook) is None
    bridge.add_plugin(PerBatch())
    assert callable(bridge.on_train_batch_end)
    assert bridge.on_train_batch_start is None
