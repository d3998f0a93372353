"""Issue 18's gate: host reads per training step, counted on the CPU (deterministic).

On a GPU every read of a device value on the host waits for the device; ``bench_host_reads``
counts those reads (``.item()``, ``float(t)``, ``.tolist()``...) by wrapping the torch
methods that make them. Budgets, over a 200-step epoch (validation and epoch-end reads are
counted apart and not held to them): bz's bare ``Trainer`` <= 0.01 reads per step,
``bz-train``'s default experience <= 0.05.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import Trainer
from bz_lightning.plugins import Plugin
from conftest import make_dataset, make_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

bench = pytest.importorskip("bench_host_reads")

BARE_BUDGET = 0.01
DEFAULT_BUDGET = 0.05


@pytest.fixture(scope="module")
def reads() -> dict[str, dict[str, float]]:
    return {name: bench.count_reads(name, steps=200) for name in ("bz_bare", "bz_default")}


def test_bare_trainer_reads_the_host_at_most_once_per_100_steps(reads) -> None:
    counted = reads["bz_bare"]
    assert counted["per_step"] <= BARE_BUDGET, f"bz's bare Trainer: {counted}"


def test_default_experience_reads_the_host_at_most_5_times_per_100_steps(reads) -> None:
    counted = reads["bz_default"]
    assert counted["per_step"] <= DEFAULT_BUDGET, f"bz-train's default: {counted}"


class ReadsEveryBatch(Plugin):
    """Reads the running loss at every batch: one host read per step, by design."""

    def end_training_batch(self, context):
        self.total = context.training_loss_total


def test_the_counter_sees_a_read_per_step() -> None:
    # The gate above would pass vacuously if the counter missed reads.
    counted = bench.count_reads("bz_bare", steps=30, val_steps=2, extra_plugins=(ReadsEveryBatch(),))
    assert counted["steps"] >= 30


def _reads_in_steps(steps: int, **train_kwargs) -> float:
    loader = DataLoader(make_dataset(8 * steps), batch_size=8)
    model = make_model()
    with bench.ReadCounter() as counter:
        Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), loader,
                        device="cpu", compile=False, **train_kwargs)
    return counter.counts["steps"]


def test_only_skip_reads_the_loss_at_every_step() -> None:
    # "raise" (the default): the loss is checked on the device, read once, at the loop's end.
    assert _reads_in_steps(20) == 1
    # "skip" must decide before backward: one read per step, as documented.
    assert _reads_in_steps(20, on_nonfinite_loss="skip") == 20
