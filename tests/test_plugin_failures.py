"""A failing plugin: logged with its traceback, counted, disabled after 5 in a row, reported at
the end; or, with ``plugin_errors="raise"``, the end of the run."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from bz_lightning import Stage, Trainer
from bz_lightning.errors import BzPluginError
from bz_lightning.plugins import ConsoleOutPlugin, Plugin


class Broken(Plugin):
    """Raises in the stages listed in ``fail_in``, on the calls that ``when(n)`` selects."""

    def __init__(self, *fail_in: str, when=lambda n: True) -> None:
        super().__init__()
        self.fail_in = fail_in
        self.when = when
        self.calls: dict[str, int] = {}
        self.epochs_ended: list[int] = []

    def _maybe_fail(self, stage: str) -> None:
        self.calls[stage] = n = self.calls.get(stage, 0) + 1
        if stage in self.fail_in and self.when(n):
            raise ValueError(f"broken in {stage} (call {n})")

    def end_training_batch(self, context):
        self._maybe_fail("end_training_batch")

    def end_epoch(self, context):
        self.epochs_ended.append(context.epoch)
        self._maybe_fail("end_epoch")

    def end_training_session(self, context):
        self._maybe_fail("end_training_session")


class SessionWatcher(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []
        self.ended: list[BaseException | None] = []

    def start_epoch(self, context):
        self.started.append(context.epoch)

    def end_training_session(self, context):
        self.ended.append(context.extra.get("exception"))


def train(plugins, model, loader, epochs=2, **kwargs):
    trainer = Trainer()
    for plugin in plugins:
        trainer.add_plugin(plugin)
    return trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), loader,
                         device="cpu", compile=False, epochs=epochs, **kwargs)


def test_failure_is_logged_with_traceback_and_training_continues(model, train_loader, caplog):
    broken = Broken("end_epoch")
    with caplog.at_level(logging.ERROR, logger="bz_lightning"):
        result = train([broken], model, train_loader)
    assert result.epochs_completed == 2
    assert [(f.plugin, f.stage, f.epoch) for f in result.plugin_failures] == [
        ("Broken", Stage.END_EPOCH, 0), ("Broken", Stage.END_EPOCH, 1)]
    assert isinstance(result.plugin_failures[0].error, ValueError)
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(records) == 2
    message = records[0].getMessage()
    assert "plugin 'Broken' failed in stage 'end_epoch' (epoch 1)" in message  # epochs counted from 1
    assert "Traceback (most recent call last)" in message and "ValueError: broken in end_epoch (call 1)" in message


class BatchCounter(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def end_training_batch(self, context):
        self.batches += 1


def test_five_failures_in_a_row_disable_the_plugin(model, train_loader, caplog):
    # Its end_epoch succeeds between failing batches: the streak is counted per stage.
    broken, counter = Broken("end_training_batch"), BatchCounter()
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        result = train([broken, counter], model, train_loader, epochs=3)  # 9 batches
    assert result.epochs_completed == 3
    assert broken.calls["end_training_batch"] == 5 and len(result.plugin_failures) == 5
    # Disabled in every stage after the 5th failure (batch 1 of epoch 1).
    assert broken.epochs_ended == [0] and "end_training_session" not in broken.calls
    # The plugin after it is still called at every batch, also the one that disabled it.
    assert counter.batches == 9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["plugin 'Broken' failed 5 times in a row and is disabled for the rest of the run"]


def test_failures_that_are_not_consecutive_do_not_disable(model, train_loader, caplog):
    broken = Broken("end_training_batch", when=lambda n: n % 2 == 1)
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        result = train([broken], model, train_loader, epochs=3)
    assert broken.calls["end_training_batch"] == 9
    assert len(result.plugin_failures) == 5
    assert [(f.epoch, f.stage) for f in result.plugin_failures][:2] == [
        (0, Stage.END_TRAINING_BATCH), (0, Stage.END_TRAINING_BATCH)]
    assert not [r for r in caplog.records if "disabled" in r.getMessage()]


def test_raise_policy_stops_the_run_naming_plugin_and_stage(model, train_loader):
    watcher = SessionWatcher()
    with pytest.raises(BzPluginError) as info:
        train([Broken("end_epoch"), watcher], model, train_loader, epochs=3, plugin_errors="raise")
    err = info.value
    assert (err.plugin, err.stage) == ("Broken", "end_epoch")
    assert str(err) == "plugin 'Broken' failed in stage 'end_epoch': ValueError: broken in end_epoch (call 1)"
    assert isinstance(err.__cause__, ValueError)
    assert watcher.started == [0]
    # The other plugins still end their session (files closed), told why it ended.
    assert watcher.ended == [err]


def test_raise_policy_in_end_training_session_ends_it_once(model, train_loader):
    broken = Broken("end_training_session")
    with pytest.raises(BzPluginError, match="'Broken' failed in stage 'end_training_session'"):
        train([broken], model, train_loader, epochs=1, plugin_errors="raise")
    assert broken.calls["end_training_session"] == 1


def test_failures_are_listed_in_the_console_summary(model, train_loader, capsys):
    def failing_once(preds, targets, calls=[]):  # noqa: B006  (counts calls across batches)
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("bad batch")
        return nn.functional.cross_entropy(preds, targets)

    trainer = Trainer()
    trainer.add_plugin(Broken("end_epoch"))
    trainer.add_plugin(ConsoleOutPlugin(len(train_loader), update_interval=100))
    trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), failing_once, train_loader, device="cpu",
                  compile=False, epochs=2)
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("training finished: 2 epochs"))
    assert lines[start + 2:] == [
        "  plugin failures: 2",
        "    Broken in end_epoch (epoch 1): ValueError: broken in end_epoch (call 1)",
        "    Broken in end_epoch (epoch 2): ValueError: broken in end_epoch (call 2)",
        "  skipped batches: 1",
    ]
