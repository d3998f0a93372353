"""Checkpoints: the signature, the safe format, and resume="auto"/"never"/"must" in-process.

The kill/SIGTERM tests, which need real subprocesses, are in test_resume_kill.py.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import BzCheckpointError, BzConfigError, Trainer, compute_training_signature
from bz_lightning.checkpointing import (
    CHECKPOINT_VERSION,
    AtomicCheckpointIO,
    Preempted,
    find_latest_checkpoint_epoch,
    load_checkpoint,
    plan_resume,
    remove_stale_temp_files,
    to_plain,
)
from bz_lightning.plugins import Plugin
from bz_lightning.plugins.early_stopping import EarlyStoppingPlugin
from conftest import TermAt, make_dataset, make_model

# ----------------------------------------------------------------------------- signature
BASE = {
    "seed": 42, "epochs": 5, "device": "cpu", "compile": False, "checkpoint_interval": 0, "resume": "auto",
    "print_config": True, "task_name": "train", "optimized_metric": "val_accuracy",
    "paths": {"data_dir": "data", "output_dir": "outputs/train/runs/2024-01-01_00-00-00"},
    "model": {"_target_": "bz_lightning.models.MLP", "hidden": 64},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
    "data": {"batch_size": 32},
    "loss": {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.0},
    "trainer": {"max_epochs": 5, "enable_progress_bar": True, "log_every_n_steps": 50, "gradient_clip_val": None},
    "plugins": {"console_out": {"verbose": True}, "early_stopping": {"patience": 3}},
}

SAME = {
    "paths.output_dir": ("paths.output_dir", "outputs/train/runs/2025-02-02_11-11-11"),
    "resume": ("resume", "never"),
    "print_config": ("print_config", False),
    "checkpoint_interval": ("checkpoint_interval", 2),
    "progress bar": ("trainer.enable_progress_bar", False),
    "log_every_n_steps": ("trainer.log_every_n_steps", 1),
    "console plugin": ("plugins.console_out.verbose", False),
    "task_name": ("task_name", "other"),
    "pin_memory": ("data.pin_memory", True),
}
DIFFERENT = {
    # A 2-epoch run is not the first half of a 50-epoch one (a cosine schedule's T_max...).
    "epochs": ("epochs", 50),
    "trainer.max_epochs": ("trainer.max_epochs", 50),
    "lr": ("optimizer.lr", 0.01),
    "optimizer class": ("optimizer._target_", "torch.optim.SGD"),
    "model width": ("model.hidden", 128),
    "seed": ("seed", 0),
    "batch size": ("data.batch_size", 64),
    "label smoothing": ("loss.label_smoothing", 0.1),
    "early stopping": ("plugins.early_stopping.patience", 4),
    "gradient clipping": ("trainer.gradient_clip_val", 1.0),
    "device": ("device", "cuda"),
    "matmul precision": ("trainer.float32_matmul_precision", "high"),
}


def _signature(config=BASE, model=None, lr=0.1, loss=None) -> str:
    model = model if model is not None else make_model()
    return compute_training_signature(model, torch.optim.SGD(model.parameters(), lr=lr),
                                      loss if loss is not None else nn.CrossEntropyLoss(), config)


def _with(key: str, value) -> dict:
    config = OmegaConf.create(BASE)
    OmegaConf.update(config, key, value)
    return OmegaConf.to_container(config)


@pytest.mark.parametrize("key, value", SAME.values(), ids=list(SAME))
def test_signature_ignores_what_does_not_change_the_result(key, value) -> None:
    assert _signature(_with(key, value)) == _signature()


@pytest.mark.parametrize("key, value", DIFFERENT.values(), ids=list(DIFFERENT))
def test_signature_changes_with_what_defines_the_run(key, value) -> None:
    assert _signature(_with(key, value)) != _signature()


def test_the_readme_lists_exactly_the_ignored_keys() -> None:
    from bz_lightning.checkpointing import IGNORED_CONFIG_KEYS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### What defines a run: the signature", 1)[1].split("Everything else counts", 1)[0]
    listed = section.split("(`bz_lightning.checkpointing.IGNORED_CONFIG_KEYS`):", 1)[1]
    assert set(re.findall(r"`(\w+)`", listed)) == set(IGNORED_CONFIG_KEYS)


def test_signature_covers_objects_but_never_weights() -> None:
    base = _signature()
    assert len(base) == 16 and int(base, 16) >= 0
    assert _signature(model=make_model(seed=123)) == base  # other initial weights: same run
    assert _signature(lr=0.2) != base
    assert _signature(model=nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3))) != base
    assert _signature(loss=nn.CrossEntropyLoss(label_smoothing=0.1)) != base
    assert _signature(loss=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0]))) != base
    assert _signature(config=OmegaConf.create(BASE)) == base  # DictConfig and dict agree


# ----------------------------------------------------------------------------- format
def test_to_plain_converts_omegaconf_and_numpy_and_names_what_it_cannot_store() -> None:
    state = {"cfg": OmegaConf.create({"a": [1, 2]}), "n": np.float32(0.5), "arr": np.arange(3),
             "t": (1, "x"), "rng": np.random.get_state()}
    plain = to_plain(state)
    assert plain["cfg"] == {"a": [1, 2]} and type(plain["n"]) is float and torch.equal(plain["arr"], torch.arange(3))
    with pytest.raises(BzCheckpointError, match=r"at checkpoint\['plugin'\]\['obj'\].*weights_only=True"):
        to_plain({"plugin": {"obj": object()}})


def test_atomic_io_writes_through_a_temp_file_in_the_destination_directory(tmp_path, monkeypatch) -> None:
    moves: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((str(a), str(b))), real_replace(a, b)))
    monkeypatch.setenv("TMPDIR", "/dev/shm")
    target = tmp_path / "sub" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}, "np": np.int64(3)}, target)
    ((src, dst),) = moves
    assert Path(src).parent == target.parent and Path(src).name.startswith(".last.ckpt.tmp-") and dst == str(target)
    loaded = load_checkpoint(target)
    assert loaded["bz_checkpoint_version"] == CHECKPOINT_VERSION and loaded["np"] == 3
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path) -> None:
    """What a full disk does to a write: some bytes land, then ENOSPC."""
    import errno

    from bz_lightning._atomic import atomic_write_bytes, write_json
    from bz_lightning.errors import BzDiskFullError

    path = tmp_path / "metrics.json"
    write_json(path, {"old": 1})

    def half_then_full(f) -> None:
        f.write(b'{"new": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BzDiskFullError, match=f"no space left on {path} ") as raised:
        atomic_write_bytes(path, half_then_full)
    assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
    assert path.read_text() == '{\n  "old": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_stale_temp_files_are_removed_at_start(tmp_path, train_loader) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    dead = ckpt / ".last.ckpt.tmp-999999999"
    dead.write_bytes(b"half a checkpoint")
    assert remove_stale_temp_files(ckpt) == [dead] and not dead.exists()
    dead.write_bytes(b"half a checkpoint")
    _train(train_loader, ckpt, epochs=1)
    assert not dead.exists()


# ----------------------------------------------------------------------------- training
class Recorder(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.loaded_at: list[int] = []

    def load_checkpoint(self, context) -> None:
        self.loaded_at.append(context.epoch)

    def run_signature(self):
        return None  # it only records: the same run with or without it


def _train(loader, ckpt_dir, epochs=2, plugins=(), model=None, **kwargs):
    model = model if model is not None else make_model()
    trainer = Trainer()
    for plugin in plugins:
        trainer.add_plugin(plugin)
    result = trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), loader,
                           device="cpu", epochs=epochs, compile=False,
                           checkpoint_dir=None if ckpt_dir is None else str(ckpt_dir), **kwargs)
    return model, result


def _preempted(loader, ckpt_dir, term: TermAt, **kwargs) -> None:
    """A run stopped by a real SIGTERM, as a scheduler's preemption stops it."""
    with pytest.raises(Preempted):
        _train(loader, ckpt_dir, plugins=[term, *kwargs.pop("plugins", ())], **kwargs)


def test_every_file_written_loads_with_weights_only(tmp_path, train_loader, val_loader) -> None:
    hyper = {"cfg": OmegaConf.create({"lr": 0.1}), "np": np.float64(1.5)}
    early = EarlyStoppingPlugin({"patience": 5, "verbose": False})
    scheduler = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # noqa: E731
    _train(train_loader, tmp_path / "ckpt", epochs=2, plugins=[early], checkpoint_interval=1,
           hyperparameters=hyper, scheduler=scheduler, validation_loader=val_loader)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["epoch-1.ckpt", "epoch-2.ckpt", "final-weights.pt", "last.ckpt", "result.json"]
    for name in files[:-1]:
        checkpoint = torch.load(tmp_path / "ckpt" / name, weights_only=True)
        assert checkpoint["bz_checkpoint_version"] == CHECKPOINT_VERSION and checkpoint["bz_signature"]
        if name != "final-weights.pt":
            assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]
    assert find_latest_checkpoint_epoch(tmp_path / "ckpt") == 2


def test_latest_checkpoint_epoch_counts_last_ckpt(tmp_path, train_loader) -> None:
    """With checkpoint_interval=0 only last.ckpt exists; with an interval, last.ckpt may be
    newer than the newest epoch-N.ckpt."""
    _train(train_loader, tmp_path / "last_only", epochs=2)
    assert sorted(p.name for p in (tmp_path / "last_only").iterdir()) == ["final-weights.pt", "last.ckpt", "result.json"]
    assert find_latest_checkpoint_epoch(tmp_path / "last_only") == 2
    _train(train_loader, tmp_path / "both", epochs=3, checkpoint_interval=2)
    assert find_latest_checkpoint_epoch(tmp_path / "both") == 3
    (tmp_path / "both" / "last.ckpt").write_bytes(b"truncated")
    assert find_latest_checkpoint_epoch(tmp_path / "both") == 2  # unreadable: logged, not counted
    assert find_latest_checkpoint_epoch(tmp_path / "none") is None


def test_rerun_reuses_a_finished_run_loudly_with_its_weights(tmp_path, train_loader, caplog) -> None:
    trained, first = _train(train_loader, tmp_path / "ckpt", epochs=2)
    assert first.resumed_from is None and first.epochs_completed == 2 and not first.reused
    fresh = make_model(seed=5)
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        _, again = _train(train_loader, tmp_path / "ckpt", epochs=2, model=fresh, plugins=[Recorder()])
    assert again.reused and again.epochs_completed == 2 and again.module is None
    assert again.metrics == first.metrics and again.context.training_batch_count == 3
    # The caller's model holds the run's final weights, not its own untrained ones.
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    (message,) = [r.getMessage() for r in caplog.records if "reusing the finished run" in r.getMessage()]
    assert first.signature in message and "resume='never'" in message and "result.json" in message


def test_more_epochs_is_another_run_and_an_explicit_directory_says_what_changed(tmp_path, train_loader) -> None:
    _, two = _train(train_loader, None, epochs=2, runs_root=str(tmp_path / "runs"))
    _, three = _train(train_loader, None, epochs=3, runs_root=str(tmp_path / "runs"))
    assert three.signature != two.signature and not three.reused and three.resumed_from is None
    assert three.epochs_completed == 3
    _train(train_loader, tmp_path / "ckpt", epochs=2)
    with pytest.raises(BzCheckpointError, match="belongs to a run with signature .*: the call changed; "
                                                "pass resume='never'"):
        _train(train_loader, tmp_path / "ckpt", epochs=3)


def test_preempted_run_resumes_and_fires_load_checkpoint(tmp_path, train_loader, caplog) -> None:
    _preempted(train_loader, tmp_path / "ckpt", TermAt(1, "end_epoch"), epochs=3)  # after epoch 2's last.ckpt
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="bz_lightning"):
        _, more = _train(train_loader, tmp_path / "ckpt", epochs=3, plugins=[recorder])
    assert more.epochs_completed == 3 and more.resumed_from.endswith("last.ckpt") and not more.reused
    assert recorder.loaded_at == [2]
    assert any("resuming run" in r.message and "last.ckpt (epoch 2 done)" in r.message for r in caplog.records)


def test_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    loader = DataLoader(make_dataset(48), batch_size=16, shuffle=True)
    whole, _ = _train(loader, tmp_path / "a", epochs=3)
    _preempted(loader, tmp_path / "b", TermAt(0, "end_epoch"), epochs=3)
    model = make_model()  # (seeds torch with 0, as the uninterrupted run's model did)
    torch.manual_seed(99)  # the re-run's own RNG state must not matter: the checkpoint's is restored
    resumed, result = _train(loader, tmp_path / "b", epochs=3, model=model)
    assert result.resumed_from is not None
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_corrupt_last_ckpt_falls_back_to_the_newest_readable(tmp_path, train_loader, caplog) -> None:
    _preempted(train_loader, tmp_path / "ckpt", TermAt(2, "start_training_batch"), epochs=3, checkpoint_interval=1)
    last = tmp_path / "ckpt" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.ERROR, logger="bz_lightning"):
        _, result = _train(train_loader, tmp_path / "ckpt", epochs=3, checkpoint_interval=1)
    assert result.resumed_from.endswith("epoch-2.ckpt") and result.epochs_completed == 3
    assert any("cannot read checkpoint" in r.message and "last.ckpt" in r.message for r in caplog.records)


def test_resume_must_fails_naming_the_directory(tmp_path, train_loader) -> None:
    with pytest.raises(BzCheckpointError, match=r"resume='must'.*" + str(tmp_path / "ckpt")):
        _train(train_loader, tmp_path / "ckpt", resume="must")


def test_resume_never_starts_fresh_beside_old_checkpoints(tmp_path, train_loader) -> None:
    _train(train_loader, tmp_path / "ckpt", epochs=1)
    before = (tmp_path / "ckpt" / "last.ckpt").read_bytes()
    _, fresh = _train(train_loader, tmp_path / "ckpt", epochs=1, resume="never")
    assert fresh.resumed_from is None and fresh.checkpoint_dir == str(tmp_path / "ckpt-1")
    assert (tmp_path / "ckpt" / "last.ckpt").read_bytes() == before
    # auto (and must) now continue the newest attempt: here, reuse its result
    _, later = _train(train_loader, tmp_path / "ckpt", epochs=1, resume="must")
    assert later.reused and later.checkpoint_dir == str(tmp_path / "ckpt-1")


def test_bad_resume_value_and_foreign_signature_are_refused(tmp_path, train_loader) -> None:
    with pytest.raises(BzConfigError, match="resume must be one of 'auto', 'never', 'must', got 'always'"):
        _train(train_loader, tmp_path / "ckpt", resume="always")
    _train(train_loader, tmp_path / "ckpt", epochs=1, hyperparameters={"lr": 0.1})
    with pytest.raises(BzCheckpointError, match="belongs to a run with signature .*resume='never'"):
        _train(train_loader, tmp_path / "ckpt", epochs=1, hyperparameters={"lr": 0.2})


def test_runs_root_gives_a_stable_per_signature_directory(tmp_path, train_loader) -> None:
    _, result = _train(train_loader, None, epochs=1, runs_root=str(tmp_path / "runs"))
    assert result.checkpoint_dir == str(tmp_path / "runs" / result.signature / "checkpoints")
    assert plan_resume(result.checkpoint_dir, "auto", result.signature).finished["epochs_completed"] == 1


def test_early_stopping_state_and_best_weights_survive_resume(tmp_path, train_loader, val_loader) -> None:
    def plugin():
        return EarlyStoppingPlugin({"patience": 10, "monitor": "val_loss", "verbose": False})

    whole = plugin()
    _train(train_loader, tmp_path / "a", epochs=4, plugins=[whole], validation_loader=val_loader)
    part1, part2 = plugin(), plugin()
    _preempted(train_loader, tmp_path / "b", TermAt(1, "end_epoch"), epochs=4, plugins=[part1],
               validation_loader=val_loader)
    _, result = _train(train_loader, tmp_path / "b", epochs=4, plugins=[part2], validation_loader=val_loader)
    assert result.resumed_from is not None
    assert part2.history == whole.history and len(whole.history) == 4
    assert (part2.best_epoch, part2.wait, part2.best_score) == (whole.best_epoch, whole.wait, whole.best_score)
    for key, value in whole.best_weights.items():
        assert torch.equal(value, part2.best_weights[key]), key
