"""ConsoleOutPlugin: what a 2-epoch run prints, in non-interactive and interactive mode."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bz_lightning import Trainer
from bz_lightning.plugins import ConsoleOutPlugin, Plugin
from conftest import CountingAccuracy


class EpochValues(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def end_epoch(self, context):
        self.epochs.append({
            "train_loss": context.training_loss_total / context.training_batch_count,
            "train_accuracy": context.training_metrics["accuracy"],
            "val_loss": context.validation_loss_total / context.validation_batch_count,
            "val_accuracy": context.validation_metrics["accuracy"],
        })


def train(console, model, train_loader, val_loader, epochs=2):
    values = EpochValues()
    trainer = Trainer()
    trainer.add_plugin(values)
    trainer.add_plugin(console)
    result = trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                           train_loader, val_loader, device="cpu", compile=False, epochs=epochs,
                           metrics=[CountingAccuracy()])
    return values, result


EPOCH_LINE = re.compile(
    r"^epoch (\d+)/2  train_loss (\S+)  train_accuracy (\S+)  val_loss (\S+)  val_accuracy (\S+)  time \d+\.\d\ds$"
)


def test_non_interactive_run_prints_plain_lines(model, train_loader, val_loader, capsys):
    spec = SimpleNamespace(training_loader=train_loader, validation_loader=val_loader, hyperparameters={})
    console = ConsoleOutPlugin.init(spec, update_interval=2)
    console.bar.refresh_seconds = 0  # every update_interval batches, not by time
    assert (console.training_data_len, console.validation_data_len) == (3, 3)
    values, result = train(console, model, train_loader, val_loader)
    out = capsys.readouterr().out  # a pipe, not a terminal: no bars
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()

    epoch_lines = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert [int(g[0]) for g in epoch_lines] == [1, 2]
    for groups, expected in zip(epoch_lines, values.epochs):
        shown = dict(zip(["train_loss", "train_accuracy", "val_loss", "val_accuracy"], groups[1:]))
        assert shown == {k: f"{v:.4f}" for k, v in expected.items()}

    # Every update_interval batches and at a loop's last batch: batches 2 and 3 of 3.
    progress = [line.split("  loss")[0] for line in lines if re.match(r"^epoch \d/2  (train|val) \d/3", line)]
    assert progress == [f"epoch {e}/2  {split} {b}/3" for e in (1, 2) for split in ("train", "val") for b in (2, 3)]
    last_train = [line for line in lines if line.startswith("epoch 2/2  train 3/3")][0]
    assert last_train.endswith(f"loss {result.training_loss:.4f}  accuracy {result.training_metrics['accuracy']:.4f}")

    summary = lines[lines.index(next(line for line in lines if line.startswith("training finished"))):]
    assert re.match(r"^training finished: 2 epochs in \d+\.\d\ds$", summary[0])
    assert summary[1] == (
        f"  final  train_loss {result.training_loss:.4f}  train_accuracy {result.training_metrics['accuracy']:.4f}"
        f"  val_loss {result.validation_loss:.4f}  val_accuracy {result.validation_metrics['accuracy']:.4f}"
    )
    assert len(summary) == 2  # nothing failed, nothing skipped, no warnings


def test_interactive_run_draws_tqdm_bars(model, train_loader, val_loader):
    out = io.StringIO()
    console = ConsoleOutPlugin(len(train_loader), len(val_loader), stream=out, interactive=True)
    values, _ = train(console, model, train_loader, val_loader)
    text = out.getvalue()
    assert "epoch 1/2 train" in text and "epoch 2/2 val" in text and "\r" in text  # tqdm redraws
    assert "0/3 [" in text and "batch/s" in text  # tqdm itself limits redraws to 10 per second
    summaries = [line.split("\r")[-1] for line in text.split("\n") if EPOCH_LINE.match(line.split("\r")[-1])]
    assert len(summaries) == 2
    assert f"val_loss {values.epochs[1]['val_loss']:.4f}" in summaries[1]


def test_stop_and_failure_are_reported(model, train_loader, capsys):
    class StopAfterFirst(Plugin):
        def end_epoch(self, context):
            context.should_stop_training = True

    trainer = Trainer()
    trainer.add_plugin(StopAfterFirst())
    trainer.add_plugin(ConsoleOutPlugin(len(train_loader), update_interval=10))
    trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), train_loader,
                  device="cpu", compile=False, epochs=5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines if "train_loss" in line and "final" not in line] == ["epoch 1/5"]
    assert "training finished: 1 epoch in" in lines[-3]
    assert lines[-1] == "  stopped early by a plugin after epoch 1"


def test_update_interval_is_checked():
    with pytest.raises(ValueError, match="update_interval must be an integer >= 1, got 0"):
        ConsoleOutPlugin(10, update_interval=0)


def test_lightning_progress_bar_is_switched_off_under_a_plain_lightning_trainer(
    model, train_loader, capsys: pytest.CaptureFixture[str]
) -> None:
    import lightning.pytorch as pl

    from bz_lightning import BzModule, LifecycleCallback

    out = io.StringIO()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=True,
                         callbacks=[LifecycleCallback([ConsoleOutPlugin(len(train_loader), stream=out)])])
    trainer.fit(BzModule(model, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1)), train_loader)
    assert trainer.progress_bar_callback.is_disabled
    captured = capsys.readouterr()
    assert "Epoch 0" not in captured.err + captured.out  # Lightning's bar never drew
    assert "epoch 2/2" in out.getvalue() and "training finished" in out.getvalue()
