"""The 14-stage lifecycle: one enum, one table, bz's order on top of Lightning's."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import STAGE_HOOKS, LifecycleCallback, PluginContext, Stage, Trainer
from bz_lightning.plugins import Plugin, implemented_stages
from conftest import make_model

S = Stage


class Recorder(Plugin):
    """Records every stage with a snapshot of the context fields that matter."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, float, int, float]] = []

    def run_stage(self, stage, context: PluginContext) -> None:
        self.events.append(
            (
                Stage(stage).value,
                context.epoch,
                context.training_batch_count,
                context.training_loss_total,
                context.validation_batch_count,
                context.validation_loss_total,
            )
        )

    @property
    def stages(self) -> list[str]:
        return [e[0] for e in self.events]


def expected_order(epochs: int, train_batches: int, val_batches: int | None) -> list[str]:
    order = [S.START_TRAINING_SESSION]
    for _ in range(epochs):
        order += [S.START_EPOCH, S.START_TRAINING_LOOP]
        order += [S.START_TRAINING_BATCH, S.END_TRAINING_BATCH] * train_batches
        order += [S.END_TRAINING_LOOP]
        if val_batches is not None:
            order += [S.START_VALIDATION_LOOP]
            order += [S.START_VALIDATION_BATCH, S.END_VALIDATION_BATCH] * val_batches
            order += [S.END_VALIDATION_LOOP]
        order += [S.END_EPOCH]
    order += [S.END_TRAINING_SESSION]
    return [s.value for s in order]


def hand_written_losses(loader: DataLoader, epochs: int, val_loader: DataLoader | None = None):
    """Per-batch losses of the same model, data and SGD, trained without bz or Lightning."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    train, val = [], []
    for _ in range(epochs):
        model.train()
        epoch_losses = []
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        train.append(epoch_losses)
        if val_loader is not None:
            model.eval()
            with torch.no_grad():
                val.append([loss_fn(model(x), y).item() for x, y in val_loader])
    return train, val


def run_bz(train_loader, val_loader=None, epochs=2, plugins=(), **kwargs):
    trainer = Trainer()
    for plugin in plugins:
        trainer.add_plugin(plugin)
    model = make_model()
    return trainer.train(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        train_loader,
        val_loader,
        device="cpu",
        epochs=epochs,
        compile=False,
        **kwargs,
    )


# ------------------------------------------------------------------ one source of truth
def test_stage_values_plugin_methods_and_bridge_table_are_the_same_set() -> None:
    plugin_hooks = {
        name
        for name, member in inspect.getmembers(Plugin, inspect.isfunction)
        if not name.startswith("_") and name not in {"run_stage", "state_dict", "load_state_dict", "run_signature"}
    }
    assert {s.value for s in Stage} == plugin_hooks
    assert set(STAGE_HOOKS) == set(Stage)


def test_stage_enum_is_declared_in_firing_order() -> None:
    documented = (
        "start_training_session load_checkpoint start_epoch start_training_loop start_training_batch "
        "end_training_batch end_training_loop start_validation_loop start_validation_batch "
        "end_validation_batch end_validation_loop save_checkpoint end_epoch end_training_session"
    ).split()
    assert [s.value for s in Stage] == documented


def test_bridge_implements_every_hook_the_table_names() -> None:
    for stage, hooks in STAGE_HOOKS.items():
        for hook in hooks:
            assert getattr(LifecycleCallback, hook) is not getattr(pl.Callback, hook), (stage, hook)


@pytest.mark.parametrize("stage", list(Stage))
def test_dispatch_calls_only_plugins_implementing_the_stage(stage: Stage) -> None:
    calls: list[tuple[str, Stage]] = []

    def method(self, context):
        calls.append((self.name, stage))

    Only = type("Only", (Plugin,), {stage.value: method})
    Other = type("Other", (Plugin,), {})
    bridge = LifecycleCallback([Only(), Other()])
    assert implemented_stages(Only()) == {stage}
    assert implemented_stages(Other()) == set()
    for s in Stage:
        bridge.dispatch(s)
    assert calls == [("Only", stage)]
    assert list(bridge.listeners(stage)) and not any(bridge.listeners(s) for s in Stage if s != stage)


# ------------------------------------------------------------------ order and values
def test_stage_order_and_context_values_with_validation(train_loader, val_loader) -> None:
    recorder = Recorder()
    run_bz(train_loader, val_loader, epochs=2, plugins=[recorder])
    assert recorder.stages == expected_order(2, len(train_loader), len(val_loader))

    train_losses, val_losses = hand_written_losses(train_loader, 2, val_loader)
    for epoch in range(2):
        end_loop = [e for e in recorder.events if e[0] == "end_training_loop"][epoch]
        assert end_loop[1] == epoch
        assert end_loop[2] == len(train_loader)
        assert end_loop[3] == pytest.approx(sum(train_losses[epoch]), rel=1e-5)
        end_val = [e for e in recorder.events if e[0] == "end_validation_loop"][epoch]
        assert end_val[4] == len(val_loader)
        assert end_val[5] == pytest.approx(sum(val_losses[epoch]), rel=1e-5)
        # batch stages see running totals
        batch_ends = [e for e in recorder.events if e[0] == "end_training_batch" and e[1] == epoch]
        assert [e[2] for e in batch_ends] == list(range(1, len(train_loader) + 1))
        running = [sum(train_losses[epoch][: i + 1]) for i in range(len(train_loader))]
        assert [e[3] for e in batch_ends] == pytest.approx(running, rel=1e-5)


def test_stage_order_without_validation_loader(train_loader) -> None:
    recorder = Recorder()
    result = run_bz(train_loader, None, epochs=2, plugins=[recorder])
    assert recorder.stages == expected_order(2, len(train_loader), None)
    train_losses, _ = hand_written_losses(train_loader, 2)
    assert result.training_loss == pytest.approx(sum(train_losses[1]) / len(train_loader), rel=1e-5)
    assert "val_loss" not in result.metrics


def test_checkpoint_interval_fires_save_checkpoint_before_end_epoch(train_loader, tmp_path) -> None:
    recorder = Recorder()
    run_bz(train_loader, None, epochs=4, plugins=[recorder], checkpoint_interval=2,
           checkpoint_dir=str(tmp_path / "ckpt"))
    ends = [s for s in recorder.stages if s in ("save_checkpoint", "end_epoch")]
    assert ends == ["end_epoch", "save_checkpoint", "end_epoch", "end_epoch", "save_checkpoint", "end_epoch"]
    # last.ckpt (every epoch) and result.json (run finished) are the resume layout, see "Resuming and preemption" in the README
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["epoch-2.ckpt", "epoch-4.ckpt", "final-weights.pt", "last.ckpt", "result.json"]


# ------------------------------------------------------------------ stopping
class StopAt(Plugin):
    def __init__(self, stage: Stage, epoch: int) -> None:
        self.stage, self.epoch = stage, epoch
        self.epochs_started: list[int] = []
        self.batches: list[tuple[int, int]] = []

    def run_stage(self, stage, context) -> None:
        if stage is Stage.START_EPOCH:
            self.epochs_started.append(context.epoch)
        if stage is Stage.END_TRAINING_BATCH:
            self.batches.append((context.epoch, context.training_batch_count))
        if stage is self.stage and context.epoch == self.epoch:
            context.should_stop_training = True


def test_stop_requested_in_end_epoch_means_no_further_epoch(train_loader, val_loader) -> None:
    plugin = StopAt(Stage.END_EPOCH, epoch=1)
    result = run_bz(train_loader, val_loader, epochs=5, plugins=[plugin])
    assert plugin.epochs_started == [0, 1]
    assert result.epochs_completed == 2
    assert result.stopped_early


def test_stop_requested_mid_epoch_finishes_that_epoch(train_loader) -> None:
    plugin = StopAt(Stage.END_TRAINING_BATCH, epoch=0)
    recorder = Recorder()
    run_bz(train_loader, None, epochs=3, plugins=[plugin, recorder])
    assert plugin.epochs_started == [0]
    assert plugin.batches == [(0, i) for i in range(1, len(train_loader) + 1)]
    assert recorder.stages[-2:] == ["end_epoch", "end_training_session"]


# ------------------------------------------------------------------ plain Lightning
def test_bz_module_under_plain_lightning_with_model_checkpoint(train_loader, val_loader, tmp_path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from bz_lightning import BzModule

    model = make_model()
    module = BzModule(model, nn.CrossEntropyLoss(), lambda params: torch.optim.SGD(params, lr=0.1))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1, filename="best")
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[checkpoint, LifecycleCallback([recorder])],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
    )
    trainer.fit(module, train_loader, val_loader)

    # the sanity check is never shown to plugins
    assert recorder.stages == expected_order(3, len(train_loader), len(val_loader))
    assert {"train_loss", "val_loss"} <= set(trainer.callback_metrics)
    best = checkpoint.best_model_path
    assert best.endswith("best.ckpt")
    state = torch.load(best, weights_only=True)
    fresh = make_model(seed=123)
    fresh.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    # the best checkpoint's weights give the best val_loss the run saw
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        val = sum(loss_fn(fresh(x), y).item() for x, y in val_loader) / len(val_loader)
    assert val == pytest.approx(float(checkpoint.best_model_score), rel=1e-5)


def test_result_reports_final_metrics_and_context(train_loader, val_loader) -> None:
    result = run_bz(train_loader, val_loader, epochs=2)
    _, val_losses = hand_written_losses(train_loader, 2, val_loader)
    assert result.validation_loss == pytest.approx(sum(val_losses[1]) / len(val_loader), rel=1e-5)
    assert result.metrics["val_loss"] == result.validation_loss
    assert result.context.epoch == 1
    assert result.epochs_completed == 2
    assert not result.stopped_early
