"""ConsoleProgressBar: Lightning's kind of progress bar, for any LightningModule (issue 17),
refreshing by time and reading values only when it shows them (issue 18)."""

from __future__ import annotations

import io
import re

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import bz_lightning.progress as progress
from bz_lightning import LifecycleCallback
from bz_lightning.plugins import ConsoleOutPlugin
from bz_lightning.progress import ConsoleProgressBar
from conftest import make_dataset, make_model


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refreshes_by_time_and_reads_values_only_when_it_shows_them(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress, "monotonic", clock)
    out = io.StringIO()
    bar = ConsoleProgressBar(refresh_seconds=0.5, stream=out, interactive=False)
    reads = []

    def values() -> dict[str, float]:
        reads.append(clock.now)
        return {"loss": 1.0}

    bar.start_run(max_epochs=3)
    bar.start_epoch(0)
    bar.start_loop("train", 10, values)
    for done in range(1, 11):
        clock.now += 0.2
        bar.batch_done(done)
    bar.end_loop()
    shown = [line.split("  ")[1] for line in out.getvalue().splitlines()]
    # 0.5 s passed at batches 3 (0.6 s), 6 and 9; batch 10 is shown by the loop's end.
    assert shown == ["train 3/10", "train 6/10", "train 9/10", "train 10/10"]
    assert len(reads) == 4  # never per batch


def test_update_interval_bounds_refreshes_and_zero_seconds_means_every_interval(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress, "monotonic", clock)
    out = io.StringIO()
    bar = ConsoleProgressBar(update_interval=4, refresh_seconds=0, stream=out, interactive=False)
    bar.start_run(None)
    bar.start_epoch(1)
    bar.start_loop("val", 10, lambda: {"loss": 0.5})
    for done in range(1, 11):
        bar.batch_done(done)
    bar.end_loop()
    assert [line.split("  ")[:2] for line in out.getvalue().splitlines()] == [
        ["epoch 2", "val 4/10"], ["epoch 2", "val 8/10"], ["epoch 2", "val 10/10"]]


@pytest.mark.parametrize("options, message", [
    (dict(update_interval=0), "update_interval must be an integer >= 1, got 0"),
    (dict(refresh_seconds=-1), "refresh_seconds must be a number >= 0 or None, got -1"),
])
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ConsoleProgressBar(**options)


class UsersModule(pl.LightningModule):
    """A LightningModule of a user's own: logs its loss, records what it logged."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()
        self.logged: dict[tuple[int, str], list[float]] = {}

    def _loss(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if not self.trainer.sanity_checking:
            self.logged.setdefault((self.current_epoch, split), []).append(float(loss))
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, "train")
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch, "val"), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


EPOCH_LINE = re.compile(r"^epoch (\d)/2  train_loss (\S+)  val_loss (\S+)  time \d+\.\d\ds$")


def _check_epoch_lines(text: str, module: UsersModule) -> None:
    lines = [m.groups() for m in map(EPOCH_LINE.match, text.splitlines()) if m]
    assert [int(g[0]) for g in lines] == [1, 2]
    for epoch, (_, train, val) in enumerate(lines):
        # Every batch has 16 samples here, so Lightning's epoch mean is the plain mean.
        for shown, split in ((train, "train"), (val, "val")):
            values = module.logged[(epoch, split)]
            assert float(shown) == pytest.approx(sum(values) / len(values), abs=6e-5)


def test_a_users_module_under_a_plain_lightning_trainer(capsys) -> None:
    out = io.StringIO()
    bar = ConsoleProgressBar(update_interval=2, refresh_seconds=0, stream=out)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=2, callbacks=[bar])
    module = UsersModule()
    train, val = DataLoader(make_dataset(48), batch_size=16), DataLoader(make_dataset(32, seed=1), batch_size=16)
    trainer.fit(module, train, val)
    assert trainer.progress_bar_callback is bar  # Lightning's own bar was not added
    text = out.getvalue()
    assert "\r" not in text and "Sanity" not in text
    captured = capsys.readouterr()
    assert "Epoch 0" not in captured.out + captured.err
    _check_epoch_lines(text, module)
    # Progress lines show what the module logs with prog_bar=True, every 2 batches and at the end.
    progress_lines = [line for line in text.splitlines() if re.match(r"^epoch \d/2  (train|val) ", line)]
    assert [line.split("  ")[1] for line in progress_lines][:3] == ["train 2/3", "train 3/3", "val 2/2"]
    assert "train_loss_step" in progress_lines[0]
    assert re.match(r"^training finished: 2 epochs in \d+\.\d\ds$", text.splitlines()[-2])
    assert text.splitlines()[-1].startswith("  final  train_loss ")


def test_console_plugin_shows_a_users_module_under_a_lifecycle_callback(capsys) -> None:
    out = io.StringIO()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=True,
                         callbacks=[LifecycleCallback([ConsoleOutPlugin(3, 2, stream=out)])])
    module = UsersModule()
    trainer.fit(module, DataLoader(make_dataset(48), batch_size=16), DataLoader(make_dataset(32, seed=1), batch_size=16))
    assert trainer.progress_bar_callback.is_disabled  # Lightning's bar switched off: one display
    captured = capsys.readouterr()
    assert "Epoch 0" not in captured.out + captured.err
    _check_epoch_lines(out.getvalue(), module)
    assert "training finished: 2 epochs" in out.getvalue()
