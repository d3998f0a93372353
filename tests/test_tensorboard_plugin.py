"""TensorBoardPlugin: event files read back with TensorBoard's own reader."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from bz_lightning import Trainer
from bz_lightning.errors import BzPluginError
from bz_lightning.plugins import Plugin, TensorBoardPlugin
from conftest import CountingAccuracy


class Reported(Plugin):
    """What the run reported: each batch's loss and each epoch's values."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_losses: list[float] = []
        self.epochs: list[dict[str, float]] = []

    def end_training_batch(self, context):
        self.batch_losses.append(float(context.extra["lightning_module"].stats["train"].last_loss))

    def end_epoch(self, context):
        self.epochs.append({
            "loss/train": context.training_loss_total / context.training_batch_count,
            "loss/validation": context.validation_loss_total / context.validation_batch_count,
            **{f"metrics/train_{k}": v for k, v in context.training_metrics.items()},
            **{f"metrics/validation_{k}": v for k, v in context.validation_metrics.items()},
        })


def f32(value: float) -> float:
    """Event files store scalars as float32."""
    return torch.tensor(value, dtype=torch.float32).item()


def read(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


HPARAMS = {"lr": 0.1, "batch_size": 16, "optimizer": {"name": "sgd", "momentum": 0.0}, "layers": [8]}


def test_two_epochs_read_back_with_event_accumulator(model, train_loader, val_loader, tmp_path):
    log_dir = tmp_path / "runs" / "exp"
    board = TensorBoardPlugin.init(SimpleNamespace(training_loader=train_loader, validation_loader=val_loader,
                                                   hyperparameters=HPARAMS), log_dir=str(log_dir))
    assert board.training_loader_len == 3
    reported = Reported()
    trainer = Trainer()
    trainer.add_plugin(board)
    trainer.add_plugin(reported)
    result = trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                           train_loader, val_loader, device="cpu", compile=False, epochs=2,
                           metrics=[CountingAccuracy()], hyperparameters=HPARAMS)
    assert not result.plugin_failures

    events = read(log_dir)
    epoch_tags = ["loss/train", "loss/validation", "metrics/train_accuracy", "metrics/validation_accuracy"]
    assert sorted(events.Tags()["scalars"]) == sorted(["loss/train_batch", *epoch_tags])

    batches = events.Scalars("loss/train_batch")
    assert [e.step for e in batches] == [0, 1, 2, 3, 4, 5]  # epoch * 3 + batch
    assert [e.value for e in batches] == [f32(v) for v in reported.batch_losses]

    for tag in epoch_tags:
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [0, 1]
        assert [e.value for e in scalars] == [f32(epoch[tag]) for epoch in reported.epochs]
    # The last epoch's values are the ones the run returned.
    final = {"loss/train": result.training_loss, "loss/validation": result.validation_loss,
             "metrics/train_accuracy": result.training_metrics["accuracy"],
             "metrics/validation_accuracy": result.validation_metrics["accuracy"]}
    assert {tag: events.Scalars(tag)[-1].value for tag in epoch_tags} == {t: f32(v) for t, v in final.items()}

    # HParams view: flattened scalar hyperparameters, the epoch tags as its metrics.
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert sorted(m.name.tag for m in experiment.metric_infos) == sorted(epoch_tags)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.1 and hparams["batch_size"].number_value == 16
    assert hparams["optimizer.name"].string_value == "sgd" and hparams["layers"].string_value == "[8]"
    assert board._writer is None  # closed at the end of the session


class ReadsBack(Plugin):
    """Reads the event files at every epoch end (after the TensorBoard plugin)."""

    def __init__(self, log_dir) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.steps: list[list[int]] = []

    def end_epoch(self, context):
        self.steps.append([e.step for e in read(self.log_dir).Scalars("loss/train")])


def test_flushed_every_epoch_and_closed_when_training_fails(model, train_loader, tmp_path):
    calls = 0

    def loss_fn(preds, targets):
        nonlocal calls
        calls += 1
        if calls == 5:  # second batch of the second epoch
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(preds, targets)

    board = TensorBoardPlugin(len(train_loader), log_dir=str(tmp_path / "tb"))
    reader = ReadsBack(tmp_path / "tb")
    trainer = Trainer()
    trainer.add_plugin(board)
    trainer.add_plugin(reader)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, train_loader,
                      device="cpu", compile=False, epochs=3, on_batch_error="raise")
    assert reader.steps == [[0]]
    assert board._writer is None
    events = read(tmp_path / "tb")
    assert [e.step for e in events.Scalars("loss/train_batch")] == [0, 1, 2, 3]


class FailsAtEpochEnd(Plugin):
    def end_epoch(self, context):
        raise ValueError("plugin bug")


def test_closed_when_another_plugin_stops_the_run(model, train_loader, tmp_path):
    board = TensorBoardPlugin(len(train_loader), log_dir=str(tmp_path / "tb"))
    trainer = Trainer()
    trainer.add_plugin(board)
    trainer.add_plugin(FailsAtEpochEnd())
    with pytest.raises(BzPluginError, match="'FailsAtEpochEnd' failed in stage 'end_epoch'"):
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), train_loader,
                      device="cpu", compile=False, epochs=2, plugin_errors="raise")
    assert board._writer is None
    assert [e.step for e in read(tmp_path / "tb").Scalars("loss/train")] == [0]


def test_building_the_plugin_writes_nothing(tmp_path):
    TensorBoardPlugin(10, log_dir=str(tmp_path / "tb"))
    assert not (tmp_path / "tb").exists()


def test_batch_log_interval_writes_every_nth_batch_of_each_epoch(model, tmp_path):
    from torch.utils.data import DataLoader

    from conftest import make_dataset

    loader = DataLoader(make_dataset(80), batch_size=16)  # 5 batches per epoch
    board = TensorBoardPlugin(len(loader), log_dir=str(tmp_path / "tb"), batch_log_interval=2)
    reported = Reported()
    trainer = Trainer()
    trainer.add_plugin(board)
    trainer.add_plugin(reported)
    trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), loader,
                  device="cpu", compile=False, epochs=2)
    batches = read(tmp_path / "tb").Scalars("loss/train_batch")
    assert [e.step for e in batches] == [0, 2, 4, 5, 7, 9]  # batches 0, 2, 4 of each epoch
    assert [e.value for e in batches] == [f32(reported.batch_losses[i]) for i in (0, 2, 4, 5, 7, 9)]


@pytest.mark.parametrize("interval", [0, -1, 1.5, True])
def test_batch_log_interval_must_be_a_positive_int(interval):
    with pytest.raises(ValueError, match=f"batch_log_interval must be an int >= 1, got {interval!r}"):
        TensorBoardPlugin(3, batch_log_interval=interval)


def test_writer_is_a_settable_attribute(model, train_loader, tmp_path):
    """Tests and users replace the writer (the spec's ``self.writer = SummaryWriter(...)``)."""
    from torch.utils.tensorboard import SummaryWriter

    board = TensorBoardPlugin(len(train_loader), log_dir=str(tmp_path / "configured"))
    replacement = SummaryWriter(str(tmp_path / "replacement"))
    board.writer = replacement
    assert board.writer is replacement
    trainer = Trainer()
    trainer.add_plugin(board)
    trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), train_loader,
                  device="cpu", compile=False, epochs=1)
    assert [e.step for e in read(tmp_path / "replacement").Scalars("loss/train")] == [0]
    assert not (tmp_path / "configured").exists()  # nothing went to the writer it replaced
