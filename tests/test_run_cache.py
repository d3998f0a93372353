"""The run cache answers only for the run asked for, and a finished run's result is never lost.

In-process, through the Python API (the process-level scenarios, SIGTERM, two processes and
kill -9, are in test_run_cache_cli.py and test_resume_kill.py). Interruptions here are real
SIGTERMs sent to this process: bz's own handler saves ``last.ckpt`` and raises ``Preempted``.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from bz_lightning import BzConfigError, BzError, Trainer
from bz_lightning.checkpointing import Preempted
from bz_lightning.metrics import Accuracy, F1Score
from bz_lightning.plugins import ConsoleOutPlugin, EarlyStoppingPlugin, Plugin
from conftest import CountingAccuracy, TermAt, make_dataset, make_model


def train(loader, *, epochs=2, model=None, plugins=(), val=None, optimizer=None, **kwargs):
    model = model if model is not None else make_model()
    trainer = Trainer()
    for plugin in plugins:
        trainer.add_plugin(plugin)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("compile", False)
    return model, trainer.train(model, optimizer, nn.CrossEntropyLoss(), loader, val, epochs=epochs, **kwargs)


def loader(seed: int = 0, n: int = 48, **kwargs) -> DataLoader:
    return DataLoader(make_dataset(n, seed=seed), batch_size=8, **kwargs)


class Seen(Plugin):
    """What plugins see: every stage fired, the context's training batch count (and
    ``resumed_batches``) when each training loop starts, and the context at each epoch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[tuple[str, int]] = []
        self.loop_starts: list[tuple[int, int, int | None]] = []
        self.epochs: list[dict] = []

    def run_stage(self, stage, context) -> None:
        self.stages.append((str(getattr(stage, "value", stage)), context.epoch))
        if str(getattr(stage, "value", stage)) == "start_training_loop":
            self.loop_starts.append((context.epoch, context.training_batch_count,
                                     context.extra.get("resumed_batches")))
        if str(getattr(stage, "value", stage)) == "end_epoch":
            self.epochs.append({
                "epoch": context.epoch,
                "training": (context.training_batch_count, round(context.training_loss_total, 6)),
                "validation": (context.validation_batch_count, round(context.validation_loss_total, 6)),
                "training_metrics": dict(context.training_metrics),
                "validation_metrics": dict(context.validation_metrics),
            })

    def run_signature(self):
        return None


# ------------------------------------------------------------------ a different run is trained
def test_fewer_epochs_than_a_finished_run_train_their_own(tmp_path) -> None:
    _, three = train(loader(), epochs=3, runs_root=str(tmp_path))
    model, one = train(loader(), epochs=1, runs_root=str(tmp_path))
    assert not one.reused and one.epochs_completed == 1 and one.signature != three.signature
    _, reference = train(loader(), epochs=1)  # the same 1-epoch run, never checkpointed
    assert one.metrics == reference.metrics != three.metrics


def test_another_dataset_is_another_run_and_its_model_is_trained(tmp_path) -> None:
    _, on_a = train(loader(seed=0), runs_root=str(tmp_path))
    model_b = make_model()
    untrained = [p.detach().clone() for p in model_b.parameters()]
    _, on_b = train(loader(seed=1), model=model_b, runs_root=str(tmp_path))
    assert not on_b.reused and on_b.signature != on_a.signature and on_b.metrics != on_a.metrics
    assert not all(torch.equal(a, b) for a, b in zip(untrained, model_b.parameters()))
    # Same length, same first batch, another last batch: still another run.
    tail = make_dataset(48, seed=0)
    tail.tensors[0][-1] += 1.0
    _, on_tail = train(DataLoader(tail, batch_size=8), runs_root=str(tmp_path))
    assert not on_tail.reused and on_tail.signature != on_a.signature


def test_editing_the_models_code_is_another_run(tmp_path, monkeypatch) -> None:
    source = tmp_path / "user_models.py"
    source.write_text("from torch import nn\n\nclass Net(nn.Sequential):\n"
                      "    def __init__(self):\n"
                      "        super().__init__(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    user_models = importlib.import_module("user_models")
    _, first = train(loader(), model=user_models.Net(), runs_root=str(tmp_path / "runs"))
    _, again = train(loader(), model=user_models.Net(), runs_root=str(tmp_path / "runs"))
    assert again.reused and again.signature == first.signature
    # The same architecture (repr, parameter shapes), another forward: another run.
    source.write_text(source.read_text() + "\n    def forward(self, x):\n        return super().forward(x * 2)\n")
    sys.modules.pop("user_models", None)
    user_models = importlib.import_module("user_models")
    _, edited = train(loader(), model=user_models.Net(), runs_root=str(tmp_path / "runs"))
    assert not edited.reused and edited.signature != first.signature
    sys.modules.pop("user_models", None)


@pytest.mark.parametrize("option", [{"fast_dev_run": True}, {"overfit_batches": 1}, {"limit_train_batches": 2},
                                    {"limit_val_batches": 1}], ids=lambda o: next(iter(o)))
def test_debug_runs_are_never_stored_nor_reused(tmp_path, option) -> None:
    runs = tmp_path / "runs"
    results = [train(loader(), val=loader(seed=1), runs_root=str(runs), checkpoint_interval=1, **option)[1]
               for _ in range(2)]
    for result in results:
        assert not result.reused and result.signature is None and result.checkpoint_dir is None
        assert result.epochs_completed >= 1 and math.isfinite(result.training_loss)
    assert not runs.exists()


def test_a_plugin_that_decides_is_part_of_the_run(tmp_path) -> None:
    def stopper(patience):
        return EarlyStoppingPlugin({"patience": patience, "monitor": "training_loss", "verbose": False})

    _, first = train(loader(), plugins=[stopper(1)], runs_root=str(tmp_path))
    _, other = train(loader(), plugins=[stopper(5)], runs_root=str(tmp_path))
    assert not other.reused and other.signature != first.signature
    # One that only reports is not: adding it reuses the run.
    _, shown = train(loader(), plugins=[ConsoleOutPlugin(6, stream=io.StringIO()), stopper(1)],
                     runs_root=str(tmp_path))
    assert shown.reused and shown.signature == first.signature


def test_call_options_define_the_run(tmp_path) -> None:
    _, base = train(loader(), runs_root=str(tmp_path))
    for option in ({"gradient_clip_val": 0.5}, {"metrics": [Accuracy()]}, {"accumulate_grad_batches": 2},
                   {"hyperparameters": {"seed": 3}}):
        _, other = train(loader(), runs_root=str(tmp_path), **option)
        assert not other.reused and other.signature != base.signature, option


# ------------------------------------------------------------------ no result is lost
def test_sigterm_in_the_last_validation_then_rerun_stores_the_full_result(tmp_path) -> None:
    # mode "max" on a falling loss: the best epoch is the first, whose weights early
    # stopping puts back when the session ends.
    plugins = lambda: [EarlyStoppingPlugin({"patience": 9, "monitor": "val_loss", "mode": "max",  # noqa: E731
                                            "verbose": False})]
    whole_model, whole = train(loader(), val=loader(seed=1), plugins=plugins(), metrics=[Accuracy()])
    with pytest.raises(Preempted):
        train(loader(), val=loader(seed=1), plugins=[*plugins(), TermAt(1, "end_validation_batch")],
              metrics=[Accuracy()], checkpoint_dir=str(tmp_path))
    assert not (tmp_path / "result.json").exists()
    seen = Seen()
    model, rerun = train(loader(), val=loader(seed=1), plugins=[*plugins(), seen], metrics=[Accuracy()],
                         checkpoint_dir=str(tmp_path))
    assert not rerun.reused and rerun.epochs_completed == 2
    assert [stage for stage, _ in seen.stages] == ["start_training_session", "load_checkpoint",
                                                   "end_training_session"]
    assert rerun.metrics == whole.metrics and set(rerun.metrics) == {"train_loss", "train_accuracy", "val_loss",
                                                                     "val_accuracy"}
    # Early stopping restored its best weights at the end of the session, as uninterrupted.
    for a, b in zip(whole_model.parameters(), model.parameters()):
        assert torch.equal(a, b)
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["metrics"] == whole.metrics
    fresh = make_model(seed=3)
    _, again = train(loader(), val=loader(seed=1), model=fresh, plugins=plugins(), metrics=[Accuracy()],
                     checkpoint_dir=str(tmp_path))
    assert again.reused and again.metrics == whole.metrics
    for a, b in zip(whole_model.parameters(), fresh.parameters()):  # the best weights, stored at the end
        assert torch.equal(a, b)


def test_a_run_stopped_early_and_cut_before_its_record_does_not_train_on(tmp_path) -> None:
    stopper = lambda: EarlyStoppingPlugin({"patience": 1, "min_delta": 1e9, "monitor": "training_loss",  # noqa: E731
                                           "verbose": False, "restore_best_weights": False})
    _, whole = train(loader(), epochs=5, plugins=[stopper()])
    assert whole.stopped_early and whole.epochs_completed == 2
    with pytest.raises(Preempted):  # SIGTERM at the end of the epoch that decided to stop
        train(loader(), epochs=5, plugins=[stopper(), TermAt(1, "end_epoch")], checkpoint_dir=str(tmp_path))
    seen = Seen()
    _, rerun = train(loader(), epochs=5, plugins=[stopper(), seen], checkpoint_dir=str(tmp_path))
    assert rerun.stopped_early and rerun.epochs_completed == 2 and rerun.metrics == whole.metrics
    # Nothing left to train; the plugins still get their session, ending with the last epoch.
    assert seen.stages == [("start_training_session", 1), ("load_checkpoint", 2), ("end_training_session", 1)]


# ------------------------------------------------------------------ resume is exact
@pytest.mark.parametrize("where", ["generator", "workers"])
def test_mid_epoch_resume_is_exact_for_plugins_metrics_and_weights(tmp_path, where) -> None:
    """Loader with its own generator, or 2 worker processes; SIGTERM after batch 3 of epoch 2."""
    def make_loader():
        if where == "generator":
            return loader(shuffle=True, generator=torch.Generator().manual_seed(3))
        return loader(shuffle=True, num_workers=2)

    def dropout_model():  # dropout draws from the global RNG at every training step
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def run(*plugins, model=None, **kwargs):
        model = model if model is not None else dropout_model()
        return train(make_loader(), epochs=3, val=loader(seed=1), model=model, plugins=plugins,
                     optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
                     metrics=[CountingAccuracy(), Accuracy(name="acc"), F1Score(average="macro", name="f1")],
                     **kwargs)

    whole_seen = Seen()
    whole_model, whole = run(whole_seen)
    with pytest.raises(Preempted):
        run(TermAt(1, "end_training_batch", 2), Seen(), checkpoint_dir=str(tmp_path))
    model = dropout_model()  # (seeds torch with 0, as for the other two runs)
    torch.manual_seed(1234)  # the re-run's RNG state must not matter: the checkpoint's is restored
    seen = Seen()
    model, rerun = run(seen, model=model, checkpoint_dir=str(tmp_path))
    assert rerun.resumed_from.endswith("last.ckpt")
    for a, b in zip(whole_model.parameters(), model.parameters()):
        assert torch.equal(a, b)
    # The cut epoch fires every stage and ends with every batch counted, metrics included.
    assert seen.epochs == whole_seen.epochs[1:]
    loaded = seen.stages.index(("load_checkpoint", 1))
    assert seen.stages[loaded + 1:loaded + 4] == [("start_epoch", 1), ("start_training_loop", 1),
                                                  ("start_training_batch", 1)]
    assert ("end_training_loop", 1) in seen.stages
    # Its loop starts with the 3 batches trained before the SIGTERM already counted.
    assert seen.loop_starts == [(1, 3, 3), (2, 0, None)]
    assert whole_seen.loop_starts == [(0, 0, None), (1, 0, None), (2, 0, None)]
    assert rerun.metrics == whole.metrics


def test_plugin_state_follows_its_state_key_not_its_position(tmp_path) -> None:
    def stopper():
        return EarlyStoppingPlugin({"patience": 10, "monitor": "val_loss", "verbose": False})

    whole = stopper()
    train(loader(), epochs=3, val=loader(seed=1), plugins=[whole])
    with pytest.raises(Preempted):
        train(loader(), epochs=3, val=loader(seed=1), plugins=[stopper(), TermAt(1, "end_epoch")],
              checkpoint_dir=str(tmp_path))
    resumed = stopper()
    # A plugin that only reports, added in front: the same run, and early stopping keeps its state.
    _, result = train(loader(), epochs=3, val=loader(seed=1), checkpoint_dir=str(tmp_path),
                      plugins=[ConsoleOutPlugin(6, stream=io.StringIO()), resumed])
    assert result.resumed_from is not None
    assert resumed.history == whole.history and len(whole.history) == 3
    assert (resumed.best_epoch, resumed.best_score) == (whole.best_epoch, whole.best_score)


def test_batches_skipped_before_an_interruption_still_count(tmp_path) -> None:
    class Flaky(TensorDataset):
        def __getitem__(self, i):
            if i == 3:
                raise OSError("corrupt sample 3")
            return super().__getitem__(i)

    data = Flaky(*make_dataset(48).tensors)
    with pytest.raises(Preempted):
        train(DataLoader(data, batch_size=8), epochs=3, plugins=[TermAt(1, "end_training_batch", 1)],
              checkpoint_dir=str(tmp_path))
    _, result = train(DataLoader(data, batch_size=8), epochs=3, checkpoint_dir=str(tmp_path))
    assert [(s.epoch, s.batch) for s in result.skipped_batches] == [(0, 0), (1, 0), (2, 0)]
    with pytest.raises(BzError, match="3 batches failed, more than max_skipped_batches=2"):
        with pytest.raises(Preempted):
            train(DataLoader(data, batch_size=8), epochs=3, plugins=[TermAt(1, "end_training_batch", 1)],
                  checkpoint_dir=str(tmp_path / "b"), max_skipped_batches=2)
        train(DataLoader(data, batch_size=8), epochs=3, checkpoint_dir=str(tmp_path / "b"), max_skipped_batches=2)


def test_resumed_epoch_time_is_its_own_and_messages_count_epochs_from_1(tmp_path) -> None:
    with pytest.raises(Preempted) as stop:
        train(loader(), epochs=2, plugins=[TermAt(1, "end_training_batch", 2)], checkpoint_dir=str(tmp_path))
    assert str(stop.value).startswith("training stopped by SIGTERM in epoch 2 after 3 batches")
    out = io.StringIO()
    started = time.perf_counter()
    train(loader(), epochs=2, plugins=[ConsoleOutPlugin(6, stream=out)], checkpoint_dir=str(tmp_path))
    elapsed = time.perf_counter() - started
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("epoch 2/2  train_loss")]
    shown = float(line.rsplit("time ", 1)[1].rstrip("s"))
    assert 0 <= shown <= elapsed  # this process's part of epoch 2, not time since some origin


# ------------------------------------------------------------------ silent successes
def test_a_loss_class_instead_of_an_instance_is_refused() -> None:
    model = make_model()
    with pytest.raises(BzConfigError, match="loss_fn is the class CrossEntropyLoss, not a loss; pass an instance"):
        Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss, loader(),
                        device="cpu", compile=False)


def test_a_one_shot_generator_is_refused_when_it_would_run_dry(tmp_path) -> None:
    batches = list(loader())
    with pytest.raises(BzConfigError, match="training_loader is a one-shot iterator .* epochs 2 to 3 would have"):
        train((b for b in batches), epochs=3)
    with pytest.raises(BzConfigError, match="validation_loader is a one-shot iterator"):
        train(batches, val=iter(batches), epochs=2)
    with pytest.raises(BzConfigError, match="a checkpointed run must be able to read its data again"):
        train((b for b in batches), epochs=1, runs_root=str(tmp_path))
    _, once = train((b for b in batches), epochs=1)  # one epoch of a generator is fine
    assert once.context.training_batch_count == 6


def test_an_epoch_that_trains_no_batch_is_an_error() -> None:
    class Draining:
        """Re-iterable, but each batch comes once: the second epoch finds it empty."""

        def __init__(self) -> None:
            self.batches = list(loader())

        def __iter__(self):
            while self.batches:
                yield self.batches.pop(0)

    with pytest.raises(BzError, match="epoch 2 trained no batch: the training loader yielded no batch"):
        train(Draining(), epochs=2)

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no forward")

    with pytest.raises(BzError, match=r"epoch 1 trained no batch: all 6 of its batches failed \(the first with "
                                      "RuntimeError: no forward"):
        train(loader(), model=nn.Sequential(Broken(), nn.Linear(1, 1)), epochs=1)


def test_nan_in_validation_data_shows_val_loss_and_metrics_and_counts_it(caplog) -> None:
    data = make_dataset(20, seed=1)
    data.tensors[0][3, 0] = float("nan")
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        _, result = train(loader(), val=DataLoader(data, batch_size=8), metrics=[Accuracy()], epochs=2)
    assert math.isnan(result.metrics["val_loss"]) and "val_accuracy" in result.metrics
    expected = "{}: 1 of 3 validation batches gave a NaN or infinite loss"
    assert [w for w in result.warnings if "validation batches" in w] == [
        w + " (non-finite validation data, or a model that overflows on it); val_loss is not finite"
        for w in (expected.format("epoch 1"), expected.format("epoch 2"))]
    assert sum("validation batches gave a NaN" in r.getMessage() for r in caplog.records) == 2


class RaisesAt(IterableDataset):
    """8 batches of 4 samples; the generator raises at sample ``bad`` (and so ends)."""

    def __init__(self, bad: int) -> None:
        self.data, self.bad = make_dataset(32), bad

    def __iter__(self):
        for i in range(32):
            if i == self.bad:
                raise OSError(f"corrupt sample {i}")
            yield self.data[i]


class Sized(RaisesAt):
    def __len__(self) -> int:
        return 32


def test_an_iterable_that_dies_mid_epoch_says_how_many_batches_never_came() -> None:
    _, result = train(DataLoader(Sized(bad=9), batch_size=4), epochs=1, max_skipped_batches=10)
    # Batches 0 and 1 trained, batch 2 failed, batches 3..7 never came.
    assert result.context.training_batch_count == 2 and len(result.skipped_batches) == 1
    assert result.warnings == ["epoch 1: the training loader stopped after 3 of 8 batches because it raised (a "
                               "generator or an IterableDataset cannot go on after an error); 5 batches never came"]
    with pytest.raises(BzError, match="1 batches failed and 5 never came, more than max_skipped_batches=4"):
        train(DataLoader(Sized(bad=9), batch_size=4), epochs=1, max_skipped_batches=4)
    _, unsized = train(DataLoader(RaisesAt(bad=9), batch_size=4), epochs=1)
    assert "how many batches is unknown" in unsized.warnings[0]


def test_reused_record_keeps_what_the_run_reported(tmp_path) -> None:
    data = make_dataset(20, seed=1)
    data.tensors[0][3, 0] = float("nan")
    _, first = train(loader(), val=DataLoader(data, batch_size=8), runs_root=str(tmp_path))
    _, again = train(loader(), val=DataLoader(data, batch_size=8), runs_root=str(tmp_path))
    assert again.reused and again.warnings == first.warnings and math.isnan(again.metrics["val_loss"])
    assert again.context.validation_batch_count == 3
    assert Path(again.checkpoint_dir, "result.json").is_file()
