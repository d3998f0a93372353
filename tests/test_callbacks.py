"""Keras-style callbacks: the hook table, the exact call sequence and logs, stopping,
registration checks, ``CallbackList`` and the plain-Lightning path."""

from __future__ import annotations

import inspect
import re
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import BzConfigError, BzModule, BzPluginError, LifecycleCallback, Stage, Trainer
from bz_lightning.callbacks import (
    HOOK_STAGES,
    BaseCallback,
    CallbackList,
    CallbackPlugin,
    TrainerLike,
    TrainerView,
    TrainingCallback,
    implemented_hooks,
)
from bz_lightning.plugins import implemented_stages
from conftest import CountingAccuracy, make_dataset, make_model

HOOKS = set(HOOK_STAGES)
LOGS_HOOKS = {"on_batch_end", "on_validation_end", "on_epoch_end"}



class Recorder(BaseCallback):
    """Overrides every hook and records (hook, positional args, logs copy, trainer)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any] | None]] = []
        self.trainers: list[Any] = []
        self.steps: list[tuple[int, int]] = []

    def _record(self, hook: str, trainer: Any, *args: Any) -> None:
        self.trainers.append(trainer)
        if hook in LOGS_HOOKS:
            *args, logs = args
            self.calls.append((hook, tuple(args), dict(logs)))
        else:
            self.calls.append((hook, tuple(args), None))

    def on_train_begin(self, trainer): self._record("on_train_begin", trainer)
    def on_train_end(self, trainer): self._record("on_train_end", trainer)
    def on_epoch_begin(self, trainer, epoch): self._record("on_epoch_begin", trainer, epoch)
    def on_batch_begin(self, trainer, batch): self._record("on_batch_begin", trainer, batch)
    def on_batch_end(self, trainer, batch, logs): self._record("on_batch_end", trainer, batch, logs)
    def on_validation_begin(self, trainer): self._record("on_validation_begin", trainer)
    def on_validation_end(self, trainer, logs): self._record("on_validation_end", trainer, logs)

    def on_epoch_end(self, trainer, epoch, logs):
        self.steps.append((trainer.current_epoch, trainer.global_step))
        self._record("on_epoch_end", trainer, epoch, logs)

    @property
    def sequence(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(hook, args) for hook, args, _ in self.calls]


def reference_run(epochs: int, lr: float = 0.1) -> list[tuple[str, tuple[Any, ...], dict[str, float] | None]]:
    """The calls bz must make, with logs from a hand-written loop (same init, data, SGD)."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    train = DataLoader(make_dataset(48, seed=0), batch_size=16)
    val = DataLoader(make_dataset(20, seed=1), batch_size=8)
    loss_fn = nn.CrossEntropyLoss()
    calls: list[tuple[str, tuple[Any, ...], dict[str, float] | None]] = [("on_train_begin", (), None)]
    for epoch in range(epochs):
        calls.append(("on_epoch_begin", (epoch,), None))
        losses, correct, seen = [], 0, 0
        for i, (x, y) in enumerate(train):
            calls.append(("on_batch_begin", (i,), None))
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            correct += int((out.argmax(-1) == y).sum())
            seen += len(y)
            calls.append(("on_batch_end", (i,), {"loss": losses[-1], "acc": correct / seen}))
        with torch.no_grad():
            val_losses, val_correct, val_seen = [], 0, 0
            for x, y in val:
                out = model(x)
                val_losses.append(loss_fn(out, y).item())
                val_correct += int((out.argmax(-1) == y).sum())
                val_seen += len(y)
        # bz's epoch loss is the mean of the batch losses, not weighted by batch size.
        val_logs = {"val_loss": sum(val_losses) / len(val_losses), "val_acc": val_correct / val_seen}
        calls += [("on_validation_begin", (), None), ("on_validation_end", (), val_logs)]
        calls.append(("on_epoch_end", (epoch,), {"loss": sum(losses) / len(losses), "acc": correct / seen, **val_logs}))
    calls.append(("on_train_end", (), None))
    return calls


def train(callbacks: list[Any], epochs: int = 2, *, validate: bool = True, **kwargs: Any):
    model = make_model()
    result = Trainer().train(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        DataLoader(make_dataset(48, seed=0), batch_size=16),
        DataLoader(make_dataset(20, seed=1), batch_size=8) if validate else None,
        device="cpu",
        compile=False,
        epochs=epochs,
        callbacks=callbacks,
        **kwargs,
    )
    return model, result


# ----------------------------------------------------------------------- the one table
def test_hook_table_matches_protocol_base_class_and_list():
    protocol_hooks = {n for n, v in vars(TrainingCallback).items() if inspect.isfunction(v) and not n.startswith("_")}
    base_hooks = {n for n, v in vars(BaseCallback).items() if callable(v) and not n.startswith("_")}
    list_hooks = {n for n in vars(CallbackList) if n.startswith("on_")}
    assert set(HOOK_STAGES) == protocol_hooks == base_hooks == list_hooks
    assert len(set(HOOK_STAGES.values())) == len(HOOK_STAGES)
    for hook in HOOK_STAGES:  # BaseCallback's signatures are the protocol's
        assert list(inspect.signature(getattr(BaseCallback, hook)).parameters) == list(
            inspect.signature(getattr(TrainingCallback, hook)).parameters
        )


# ------------------------------------------------------- sequence, arguments and logs
def test_exact_call_sequence_and_logs_for_two_epochs_with_validation():
    recorder = Recorder()
    model, result = train([recorder], epochs=2, metrics=[CountingAccuracy("acc")])
    expected = reference_run(epochs=2)

    assert recorder.sequence == [(hook, args) for hook, args, _ in expected]
    for (hook, args, logs), (_, _, want) in zip(recorder.calls, expected):
        if want is None:
            assert logs is None
            continue
        assert logs.keys() == want.keys(), (hook, args)
        assert logs == pytest.approx(want, rel=1e-5, abs=1e-7), (hook, args)
        assert all(type(v) is float for v in logs.values()), (hook, args)

    view = recorder.trainers[0]
    assert all(t is view for t in recorder.trainers)
    assert isinstance(view, TrainerView) and isinstance(view, TrainerLike)
    assert view.model is model
    assert view.lightning_module is result.module
    assert view.lightning_trainer is result.lightning_trainer
    assert recorder.steps == [(0, 3), (1, 6)]  # current_epoch, global_step at on_epoch_end
    assert not view.should_stop


def test_without_validation_no_validation_hooks_and_no_val_logs():
    recorder = Recorder()
    train([recorder], epochs=1, validate=False)
    hooks = [hook for hook, _ in recorder.sequence]
    assert "on_validation_begin" not in hooks and "on_validation_end" not in hooks
    epoch_logs = recorder.calls[-2][2]
    assert recorder.calls[-2][0] == "on_epoch_end" and set(epoch_logs) == {"loss"}


# ------------------------------------------------------------------- doc examples
# Pasted unchanged from training-callbacks.md (only the import path differs).
class MyCallback(BaseCallback):
    def on_epoch_end(self, trainer, epoch, metrics):
        print(f"Epoch {epoch} completed with loss: {metrics.get('loss', 'N/A')}")


class LoggingCallback(BaseCallback):
    def on_batch_end(self, trainer: TrainerLike, batch: int, logs: dict):
        if batch % 100 == 0:
            print(f"Batch {batch}: {logs}")


def test_document_examples_run_unchanged(capsys):
    callbacks = CallbackList([LoggingCallback()])
    train([MyCallback(), callbacks], epochs=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("Epoch", "Batch"))]
    assert [line.split(":")[0] for line in lines] == ["Batch 0", "Epoch 0 completed with loss", "Batch 0",
                                                      "Epoch 1 completed with loss"]
    assert re.fullmatch(r"Batch 0: \{'loss': [0-9.]+\}", lines[0])
    assert re.fullmatch(r"Epoch 0 completed with loss: [0-9.]+", lines[1])


# ------------------------------------------------------------------------- stopping
class StopAfterFirstEpoch(BaseCallback):
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.ended = False

    def on_epoch_begin(self, trainer, epoch):
        self.epochs.append(epoch)

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            trainer.should_stop = True

    def on_train_end(self, trainer):
        self.ended = trainer.should_stop


def test_should_stop_in_epoch_end_of_epoch_0_ends_training_after_epoch_0():
    callback = StopAfterFirstEpoch()
    _, result = train([callback], epochs=5)
    assert callback.epochs == [0]
    assert result.epochs_completed == 1 and result.stopped_early
    assert callback.ended  # on_train_end still runs, and sees the stop


# ----------------------------------------------------- partial and duck-typed callbacks
class Partial:  # no BaseCallback: two hooks only, with its own parameter names
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_epoch_begin(self, trainer, e):
        self.seen.append(("epoch", e))

    def on_batch_end(self, trainer, index, batch_logs):
        self.seen.append(("batch", index))


def test_duck_typed_partial_callback_runs_only_its_hooks():
    callback = Partial()
    train([callback], epochs=2)
    assert callback.seen == [("epoch", 0), ("batch", 0), ("batch", 1), ("batch", 2),
                             ("epoch", 1), ("batch", 0), ("batch", 1), ("batch", 2)]


def test_unimplemented_hooks_are_never_dispatched():
    bridge = LifecycleCallback(callbacks=[MyCallback(), Partial()])
    my_plugin, partial_plugin = bridge.plugins
    assert implemented_stages(my_plugin) == {Stage.END_EPOCH}
    assert implemented_stages(partial_plugin) == {Stage.START_EPOCH, Stage.END_TRAINING_BATCH}
    assert bridge.listeners(Stage.START_TRAINING_BATCH) == []
    assert implemented_hooks(BaseCallback()) == frozenset()
    assert implemented_hooks(CallbackList([MyCallback(), Partial()])) == {"on_epoch_end", "on_epoch_begin",
                                                                         "on_batch_end"}


# ------------------------------------------------------------ registration checks
class MissingLogs(BaseCallback):
    def on_epoch_end(self, trainer, epoch):
        pass


class ExtraRequired:
    def on_batch_begin(self, trainer, batch, extra):
        pass


class NotCallable:
    on_train_begin = 3


@pytest.mark.parametrize(
    ("callback", "hook", "expected"),
    [
        (MissingLogs(), "on_epoch_end", "def on_epoch_end(self, trainer, epoch, logs) -> None"),
        (ExtraRequired(), "on_batch_begin", "def on_batch_begin(self, trainer, batch) -> None"),
        (NotCallable(), "on_train_begin", "def on_train_begin(self, trainer) -> None"),
    ],
)
def test_wrong_signature_is_rejected_at_registration(callback, hook, expected):
    owner = type(callback).__name__
    for register in (lambda: CallbackList([callback]), lambda: LifecycleCallback(callbacks=[callback]),
                     lambda: train([callback])):
        with pytest.raises(BzConfigError) as err:
            register()
        message = str(err.value)
        assert f"{owner}.{hook}" in message and expected in message


def test_flexible_but_compatible_signatures_are_accepted():
    class Flexible:
        def on_epoch_end(self, *args): ...
        def on_batch_end(self, trainer, batch, logs=None, extra=1): ...
        @staticmethod
        def on_train_begin(trainer): ...

    flexible = Flexible()
    flexible.on_epoch_begin = lambda trainer, epoch: None
    assert len(CallbackList([flexible])) == 1


@pytest.mark.parametrize(
    ("callback", "match"),
    [
        (MyCallback, r"got the class MyCallback.*MyCallback\(\)"),
        (pl.Callback(), "Lightning Callback"),
        (type("Typo", (), {"on_epoch_ends": lambda self, t, e, logs: None})(),
         "implements none of the TrainingCallback hooks.*on_epoch_ends looks like on_epoch_end"),
    ],
)
def test_non_callbacks_are_rejected(callback, match):
    with pytest.raises(BzConfigError, match=match):
        CallbackList([callback])


def test_misspelled_hook_on_a_base_callback_warns():
    class Typo(BaseCallback):
        def on_epoch_ends(self, trainer, epoch, logs): ...

    with pytest.warns(UserWarning, match=r"Typo.on_epoch_ends .*did you mean 'on_epoch_end'"):
        CallbackList([Typo()])


# ---------------------------------------------------------------------- failures
class Failing(BaseCallback):
    def on_epoch_end(self, trainer, epoch, logs):
        raise RuntimeError("boom")


def test_failing_callback_follows_the_plugin_error_policy():
    _, result = train([Failing()], epochs=2)
    assert [(f.plugin, f.stage, f.epoch) for f in result.plugin_failures] == [
        ("Failing", Stage.END_EPOCH, 0), ("Failing", Stage.END_EPOCH, 1)]
    with pytest.raises(BzPluginError, match="plugin 'Failing' failed in stage 'end_epoch'.*boom"):
        train([Failing()], epochs=1, plugin_errors="raise")


# -------------------------------------------------------------------- CallbackList
def test_callback_list_api():
    order: list[str] = []

    class Named(BaseCallback):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_epoch_end(self, trainer, epoch, logs):
            order.append(f"{self.name}:{epoch}:{logs['loss']}")

    a, b, c = Named("a"), Named("b"), Named("c")
    callbacks = CallbackList()
    assert len(callbacks) == 0 and list(callbacks) == []
    assert len(CallbackList(None)) == 0
    callbacks = CallbackList([a, b])
    callbacks.append(c)
    callbacks.append(Partial())  # has no on_epoch_end: skipped for that hook
    assert len(callbacks) == 4 and list(callbacks)[:3] == [a, b, c]
    callbacks.on_epoch_end(None, 5, {"loss": 0.5})
    assert order == ["a:5:0.5", "b:5:0.5", "c:5:0.5"]
    callbacks.remove(b)
    order.clear()
    callbacks.on_epoch_end(None, 6, {"loss": 0.25})
    assert order == ["a:6:0.25", "c:6:0.25"] and len(callbacks) == 3
    with pytest.raises(ValueError, match="Named is not in this CallbackList"):
        callbacks.remove(b)
    for hook, params in [("on_train_begin", 1), ("on_train_end", 1), ("on_epoch_begin", 2), ("on_batch_begin", 2),
                         ("on_batch_end", 3), ("on_validation_begin", 1), ("on_validation_end", 2)]:
        getattr(callbacks, hook)(*([None] * params))  # every dispatch method exists and runs
    nested = CallbackList([callbacks])
    order.clear()
    nested.on_epoch_end(None, 7, {"loss": 1.0})
    assert order == ["a:7:1.0", "c:7:1.0"]


# -------------------------------------------------------------- the trainer view
def test_trainer_like_protocol_and_view_before_training():
    class Holder:
        model = nn.Linear(2, 2)

    assert isinstance(Holder(), TrainerLike)
    assert not isinstance(object(), TrainerLike)
    bridge = LifecycleCallback()
    view = TrainerView.of(bridge)
    assert TrainerView.of(bridge) is view
    assert not isinstance(view, TrainerLike)  # no model before training starts
    with pytest.raises(AttributeError, match="trainer.model is available once training starts"):
        _ = view.model
    view.should_stop = True
    assert bridge.context.should_stop_training and view.should_stop
    view.should_stop = False
    assert not bridge.context.should_stop_training


def test_callback_state_is_delegated():
    class Stateful(BaseCallback):
        def __init__(self) -> None:
            self.best = 1.0

        def state_dict(self):
            return {"best": self.best}

        def load_state_dict(self, state):
            self.best = state["best"]

    callback = Stateful()
    plugin = CallbackPlugin(callback, LifecycleCallback())
    assert plugin.name == "Stateful" and plugin.state_dict() == {"best": 1.0}
    plugin.load_state_dict({"best": 0.5})
    assert callback.best == 0.5


# ------------------------------------------------------------- plain Lightning
def test_plain_lightning_trainer_with_bz_module_never_shows_the_sanity_check():
    class CountValidationRuns(pl.Callback):
        runs = 0

        def on_validation_start(self, trainer, pl_module):
            CountValidationRuns.runs += 1

    recorder = Recorder()
    model = make_model()
    module = BzModule(model, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1), metrics=[CountingAccuracy("acc")])
    trainer = pl.Trainer(
        max_epochs=2, num_sanity_val_steps=2, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[LifecycleCallback(callbacks=[recorder]), CountValidationRuns()],
    )
    trainer.fit(module, DataLoader(make_dataset(48, seed=0), batch_size=16),
                DataLoader(make_dataset(20, seed=1), batch_size=8))

    assert CountValidationRuns.runs == 3  # the sanity check ran, and was hidden from callbacks
    expected = reference_run(epochs=2)
    assert recorder.sequence == [(hook, args) for hook, args, _ in expected]
    for (hook, args, logs), (_, _, want) in zip(recorder.calls, expected):
        if want is not None:
            assert logs == pytest.approx(want, rel=1e-5, abs=1e-7), (hook, args)
    assert recorder.trainers[0].model is model
    assert recorder.trainers[0].lightning_trainer is trainer
