"""bz plugins, early stopping and Keras-style callbacks under a user's own LightningModule.

The module is not a ``BzModule``: it logs its own loss and accuracy with ``self.log``. The
context must hold what Lightning tracks, checked against the values the module computed
itself, aggregated by hand the way Lightning aggregates logged values (a mean weighted by
batch size) and bz counts losses (a mean over batches).
"""

from __future__ import annotations

import io
import logging

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import LifecycleCallback
from bz_lightning.callbacks import BaseCallback
from bz_lightning.plugins import ConsoleOutPlugin, EarlyStoppingPlugin, Plugin
from conftest import make_dataset

EPOCHS = 3


class OwnModule(pl.LightningModule):
    """Logs ``train_loss`` (per step), ``train_acc`` (per step and epoch), ``val_loss`` and ``val_acc``,
    and records what it logged, per epoch, for the test to aggregate."""

    def __init__(self, return_loss: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        self.return_loss = return_loss
        self.train_steps: list[list[tuple[float, float, int]]] = []
        self.val_steps: list[list[tuple[float, float, int]]] = []

    def _step(self, batch):
        x, y = batch
        out = self.net(x)
        return nn.functional.cross_entropy(out, y), (out.argmax(1) == y).float().mean(), len(y)

    def on_train_epoch_start(self) -> None:
        self.train_steps.append([])

    def training_step(self, batch, batch_idx):
        loss, acc, n = self._step(batch)
        self.log("train_loss", loss)
        # Both: Lightning adds train_acc_step and train_acc_epoch, which are not metrics of their own.
        self.log("train_acc", acc, on_step=True, on_epoch=True)
        self.train_steps[-1].append((float(loss.detach()), float(acc), n))
        return loss if self.return_loss else {"other": loss.detach()}

    def on_validation_epoch_start(self) -> None:
        self.val_steps.append([])

    def validation_step(self, batch, batch_idx):
        loss, acc, n = self._step(batch)
        self.log("val_loss", loss)
        self.log("val_acc", acc)
        self.val_steps[-1].append((float(loss), float(acc), n))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # Lightning's check before training: not an epoch
            self.val_steps.pop()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def weighted(steps: list[tuple[float, float, int]], column: int) -> float:
    """Lightning's epoch value of a logged step value: the mean weighted by batch size."""
    return sum(s[column] * s[2] for s in steps) / sum(s[2] for s in steps)


class Seen(Plugin):
    """What the context says at the stages plugins read it."""

    def __init__(self) -> None:
        self.at: dict[str, list[dict]] = {"end_training_batch": [], "end_training_loop": [],
                                          "end_validation_loop": [], "end_epoch": []}

    def _keep(self, stage: str, context) -> None:
        self.at[stage].append({
            "epoch": context.epoch,
            "train": (context.training_loss_total, context.training_batch_count, dict(context.training_metrics)),
            "val": (context.validation_loss_total, context.validation_batch_count, dict(context.validation_metrics)),
        })

    def end_training_batch(self, context):
        self._keep("end_training_batch", context)

    def end_training_loop(self, context):
        self._keep("end_training_loop", context)

    def end_validation_loop(self, context):
        self._keep("end_validation_loop", context)

    def end_epoch(self, context):
        self._keep("end_epoch", context)


class EpochLogs(BaseCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []
        self.batch_logs: list[dict] = []

    def on_batch_end(self, trainer, batch, logs):
        self.batch_logs.append(dict(logs))

    def on_epoch_end(self, trainer, epoch, logs):
        self.logs.append(dict(logs))


def fit(module: pl.LightningModule, bridge: LifecycleCallback, validate: bool = True) -> None:
    train = DataLoader(make_dataset(48, seed=0), batch_size=20)  # 20, 20, 8: the weights matter
    val = DataLoader(make_dataset(20, seed=1), batch_size=8)  # 8, 8, 4
    pl.Trainer(max_epochs=EPOCHS, callbacks=[bridge], logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=2).fit(module, train, val if validate else None)


def test_context_holds_what_the_module_logged() -> None:
    module, seen, logs = OwnModule(), Seen(), EpochLogs()
    stopper = EarlyStoppingPlugin({"monitor": "val_acc", "mode": "max", "patience": 10, "verbose": False})
    fit(module, LifecycleCallback([seen, stopper], callbacks=[logs]))

    for epoch in range(EPOCHS):
        train, val = module.train_steps[epoch], module.val_steps[epoch]
        train_loss = sum(s[0] for s in train) / len(train)  # bz: the mean over batches
        loop = seen.at["end_training_loop"][epoch]
        total, count, metrics = loop["train"]
        assert count == 3 and total / count == pytest.approx(train_loss, rel=1e-6)
        assert metrics == {}  # Lightning aggregates train_acc only at the epoch's end
        total, count, metrics = seen.at["end_validation_loop"][epoch]["val"]
        assert count == 3 and total / count == pytest.approx(weighted(val, 0), rel=1e-6)
        assert metrics == {"acc": pytest.approx(weighted(val, 1), rel=1e-6)}
        end = seen.at["end_epoch"][epoch]
        assert end["train"][2] == {"acc": pytest.approx(weighted(train, 1), rel=1e-6)}
        assert end["val"][2] == {"acc": pytest.approx(weighted(val, 1), rel=1e-6)}
        # Keras-style logs: the same values under their names.
        assert logs.logs[epoch] == {"loss": pytest.approx(train_loss, rel=1e-6),
                                    "acc": pytest.approx(weighted(train, 1), rel=1e-6),
                                    "val_loss": pytest.approx(weighted(val, 0), rel=1e-6),
                                    "val_acc": pytest.approx(weighted(val, 1), rel=1e-6)}
    # Running totals at batch ends: the batches so far, each with the loss its step returned.
    running = [b["train"][:2] for b in seen.at["end_training_batch"][:3]]
    first = module.train_steps[0]
    assert [c for _, c in running] == [1, 2, 3]
    assert [t for t, _ in running] == pytest.approx([sum(s[0] for s in first[:i]) for i in (1, 2, 3)], rel=1e-6)
    assert [b["loss"] for b in logs.batch_logs[:3]] == pytest.approx([s[0] for s in first], rel=1e-6)
    # Early stopping found its metric every epoch (and judged the values the module logged).
    assert stopper.history == pytest.approx([weighted(v, 1) for v in module.val_steps], rel=1e-6)


def test_without_validation_training_metrics_arrive_at_the_end_of_the_training_loop() -> None:
    module, seen = OwnModule(), Seen()
    stopper = EarlyStoppingPlugin({"monitor": "train_acc", "mode": "max", "patience": 10, "verbose": False})
    fit(module, LifecycleCallback([seen, stopper]), validate=False)
    accs = [weighted(steps, 1) for steps in module.train_steps]
    assert [s["train"][2] for s in seen.at["end_training_loop"]] == [{"acc": pytest.approx(a)} for a in accs]
    assert seen.at["end_validation_loop"] == []
    assert stopper.history == pytest.approx(accs)


def test_training_metric_monitor_is_judged_at_end_epoch_when_validating() -> None:
    """With validation, train_<name> is known only at end_epoch: early stopping must wait for
    it rather than report a monitor that does not exist."""
    module = OwnModule()
    stopper = EarlyStoppingPlugin({"monitor": "training_acc", "mode": "max", "patience": 10, "verbose": False})
    bridge = LifecycleCallback([stopper], plugin_errors="raise")
    fit(module, bridge)
    assert stopper.history == pytest.approx([weighted(steps, 1) for steps in module.train_steps])


def test_console_output_under_an_own_module_shows_its_values() -> None:
    module, out = OwnModule(), io.StringIO()
    fit(module, LifecycleCallback([ConsoleOutPlugin(3, 3, stream=out, interactive=False)]))
    text = out.getvalue()
    assert "nan" not in text
    last_train, last_val = module.train_steps[-1], module.val_steps[-1]
    # What the module logged, as Lightning aggregated it: train_loss on_step only (its last
    # step's value), train_acc on_step and on_epoch (the epoch's batch-weighted mean).
    train_loss = last_train[-1][0]
    expected = (f"train_loss {train_loss:.4f}  train_acc {weighted(last_train, 1):.4f}  "
                f"val_loss {weighted(last_val, 0):.4f}  val_acc {weighted(last_val, 1):.4f}")
    assert f"epoch 3/3  {expected}" in text
    assert f"  final  {expected}" in text


def test_a_step_that_returns_no_loss_is_reported_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    class ManualModule(OwnModule):
        def __init__(self) -> None:
            super().__init__(return_loss=False)
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            loss, _, _ = self._step(batch)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            return None

    seen = Seen()
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        fit(ManualModule(), LifecycleCallback([seen]))
    assert [s["train"][:2] for s in seen.at["end_training_loop"]] == [(0.0, 0)] * EPOCHS
    assert [m for m in caplog.messages if "training_step returned no loss for 3 of 3 batches" in m]
