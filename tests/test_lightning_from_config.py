"""All of Lightning from bz-train's config: any ``lightning.Trainer`` argument as
``trainer.KEY``, the ``logger`` and ``callbacks`` groups, ``ckpt_path``, a project's own keys.

Each run is one tiny bz-train run in-process (digits, a few batches); what Lightning wrote
is read back from the files (CSV, MLflow's store, checkpoints) and compared with
``metrics.json``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_cli_bad_input import assert_one_line
from torch import nn

from bz_lightning.cli import train as train_cli
from bz_lightning.cli._launch import compose_run
from bz_lightning.errors import BzCheckpointError, BzConfigError
from bz_lightning.models import MLP
from bz_lightning.module import BzModule

TINY = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "print_config=false"]


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, name: str = "run", debug: bool = True) -> dict:
    """One bz-train run in ``tmp_path/name``; returns its ``metrics.json``. ``debug``: a
    few batches per epoch (a debug run: no checkpoints, nothing stored); else all of digits."""
    out = tmp_path / name
    tiny = TINY if debug else ["print_config=false"]
    monkeypatch.setattr(sys, "argv", ["bz-train", *tiny, *args, f"hydra.run.dir={out}"])
    train_cli.main()
    return json.loads((out / "metrics.json").read_text())


def fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """bz-train's one-line error for ``args`` (exit code 2, nothing written)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["bz-train", *args])
    with pytest.raises(SystemExit) as stop:
        train_cli.main()
    assert stop.value.code == 2
    assert not Path("outputs").exists() and not Path("runs").exists()
    return assert_one_line(capsys.readouterr().err, "bz-train", [])


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ trainer.* keys
@pytest.mark.parametrize("args, fragments", [
    # Keys bz sets itself name the bz key to use.
    (["trainer.max_epochs=5"], ["trainer.max_epochs=5", "bz sets lightning.Trainer's max_epochs itself, from epochs",
                                "use epochs=5"]),
    (["trainer.logger=true"], ["trainer.logger=True", "from the logger group", "logger=csv"]),
    (["trainer.callbacks=[]"], ["trainer.callbacks", "the callbacks group"]),
    (["trainer.accelerator=cpu"], ["trainer.accelerator=cpu", "from trainer.device"]),
    (["trainer.enable_checkpointing=true"], ["trainer.enable_checkpointing=True", "checkpoint_interval"]),
    # Any other key is checked against lightning.Trainer's own signature.
    (["trainer.check_val_every_n_epochs=2"], ["trainer.check_val_every_n_epochs=2", "unknown key",
                                              "did you mean 'check_val_every_n_epoch'?"]),
    (["+trainer.profilr=simple"], ["trainer.profilr=simple", "did you mean 'profiler'?"]),
    # bz's own checks stay.
    (["trainer.precision=17"], ["trainer.precision=17", "expected one of"]),
    (["trainer.plugin_errors=ignore"], ["trainer.plugin_errors=ignore", "expected one of log, raise"]),
])
def test_trainer_keys_are_checked_against_lightning_and_bz(args, fragments, monkeypatch, capsys) -> None:
    line = fails(monkeypatch, capsys, *args)
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.slow
def test_any_lightning_trainer_argument_reaches_lightning(tmp_path, monkeypatch) -> None:
    """``trainer.check_val_every_n_epoch=2`` (no ``+``, not in the trainer group): epoch 0
    is not validated, epoch 1 is. The CSV logger shows it, hyperparameters and final
    metrics included."""
    record = run(tmp_path, monkeypatch, "epochs=2", "logger=csv", "trainer.check_val_every_n_epoch=2")
    rows = csv_rows(tmp_path / "run")
    validated = sorted({int(r["epoch"]) for r in rows if r.get("val_loss")})
    assert validated == [1]
    trained = sorted({int(r["epoch"]) for r in rows if r.get("train_loss")})
    assert trained == [0, 1]
    # Final metrics: the record's values, once.
    (final,) = [r for r in rows if r.get("final_val_loss")]
    for name, value in record["metrics"].items():
        assert float(final[f"final_{name}"]) == pytest.approx(value, rel=1e-6), name
    last_val = [r for r in rows if r.get("val_loss")][-1]
    assert float(last_val["val_loss"]) == pytest.approx(record["metrics"]["val_loss"], rel=1e-6)
    # Hyperparameters: the resolved config bz-train ran.
    hparams = yaml.safe_load((tmp_path / "run" / "csv" / "hparams.yaml").read_text())
    assert hparams["bz_config"]["epochs"] == 2
    assert hparams["bz_config"]["trainer"]["check_val_every_n_epoch"] == 2


def test_lightning_refusing_a_value_is_one_line_before_training(monkeypatch, capsys) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["bz-train", *TINY, "trainer.check_val_every_n_epoch=abc"])
    with pytest.raises(SystemExit) as stop:
        train_cli.main()
    assert stop.value.code == 2
    line = assert_one_line(capsys.readouterr().err, "bz-train", ["lightning.Trainer refused its options",
                                                                 "check_val_every_n_epoch", "'abc'"])
    assert line


# ------------------------------------------------------------------------ loggers
def test_a_missing_logger_client_names_the_extra(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python marks a module as not importable
    line = fails(monkeypatch, capsys, "logger=mlflow")
    assert "logger.mlflow" in line and "pip install 'bz-lightning[mlflow]'" in line


def test_a_callback_that_needs_a_logger_without_one_fails_before_training(monkeypatch, capsys) -> None:
    line = fails(monkeypatch, capsys, "callbacks=[lr_monitor]")
    assert "callbacks.lr_monitor" in line and "logger=csv" in line


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs mlflow: pip install 'bz-lightning[mlflow]'")
def test_mlflow_logs_the_config_and_final_metrics_to_a_sqlite_store(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = run(tmp_path, monkeypatch, "epochs=2", "logger=many", f"logger.mlflow.tracking_uri={uri}",
                 "task_name=mlflow_test")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlflow_test")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["bz_config/epochs"] == "2"
    assert mlflow_run.data.params["bz_config/optimizer/lr"] == "0.001"
    for name, value in record["metrics"].items():
        assert mlflow_run.data.metrics[f"final_{name}"] == pytest.approx(value, rel=1e-6), name
    history = client.get_metric_history(mlflow_run.info.run_id, "val_loss")
    assert len(history) == 2
    assert history[-1].value == pytest.approx(record["metrics"]["val_loss"], rel=1e-6)
    # `many` is CSV and MLflow at once.
    assert float(csv_rows(tmp_path / "run")[-1]["final_val_loss"]) == pytest.approx(record["metrics"]["val_loss"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="needs wandb: pip install 'bz-lightning[wandb]'")
def test_wandb_runs_offline_into_the_output_directory(tmp_path, monkeypatch) -> None:
    """Offline by default: nothing is sent; the run file is kept under the output directory.
    wandb keeps no reader for its offline files: the keys and values are found in it."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    record = run(tmp_path, monkeypatch, "epochs=1", "logger=wandb")
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    assert b"final_val_loss" in data and b"bz_config" in data
    assert json.dumps(record["metrics"]["val_loss"]).encode() in data
    # Finished, also when training fails: the next job of a sweep in this process must not
    # log into it (wandb would hand it the open run).
    import wandb

    assert wandb.run is None
    with pytest.raises(SystemExit):
        run(tmp_path, monkeypatch, "epochs=1", "logger=wandb", "optimizer.lr=1e30", "on_nonfinite_loss=raise",
            name="failed")
    assert wandb.run is None


# ---------------------------------------------------------------------- callbacks
@pytest.mark.slow
def test_model_checkpoint_keeps_the_top_k_by_optimized_metric(tmp_path, monkeypatch) -> None:
    """3 epochs, top 2 by val_accuracy (higher is better: mode max without being told);
    the files' names and contents are the CSV logger's per-epoch values. The learning rate
    monitor logs the optimizer's lr. A kept checkpoint loads into a BzModule."""
    run(tmp_path, monkeypatch, "epochs=3", "optimized_metric=val_accuracy", "logger=csv", "optimizer.lr=0.01",
        "callbacks=[model_checkpoint,lr_monitor]", "callbacks.model_checkpoint.save_top_k=2")
    rows = csv_rows(tmp_path / "run")
    accuracy = {int(r["epoch"]): float(r["val_accuracy"]) for r in rows if r.get("val_accuracy")}
    assert sorted(accuracy) == [0, 1, 2]
    best = sorted(accuracy, key=lambda e: -accuracy[e])[:2]
    expected = {f"epoch_{e}-val_accuracy_{accuracy[e]:.4f}.ckpt" for e in best}
    files = {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert files == expected
    assert [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")] == [0.01] * 3

    path = tmp_path / "run" / "checkpoints" / sorted(expected)[0]
    stored = torch.load(path, weights_only=True)  # bz's format: plain values only
    module = BzModule.load_from_checkpoint(str(path), model=MLP([1, 8, 8], 10), loss_fn=nn.CrossEntropyLoss(),
                                           optimizer=torch.optim.Adam)
    for key, value in module.state_dict().items():
        assert torch.equal(value, stored["state_dict"][key]), key
    assert module.hparams["bz_config"]["optimized_metric"] == "val_accuracy"
    # bz validate takes it too: the stored config names Lightning's logger and callbacks,
    # which it compares but never builds.
    from bz_lightning.cli._checkpoint import validate_checkpoint

    notes: list[str] = []
    scores = validate_checkpoint(str(path), overrides=["data.batch_size=64"], note=notes.append)
    assert 0 <= scores["val_accuracy"] <= 1
    assert "callbacks.model_checkpoint._target_ (stored lightning.pytorch.callbacks.ModelCheckpoint" in notes[0]


@pytest.mark.slow
def test_rich_callbacks_run_beside_bz(tmp_path, monkeypatch, capsys) -> None:
    """Lightning refuses a progress bar callback while bz turns its bar off; the user's turns it on."""
    pytest.importorskip("rich", reason="needs rich: pip install 'bz-lightning[rich]'")
    record = run(tmp_path, monkeypatch, "epochs=1", "plugins=none", "callbacks=[rich_progress_bar,rich_model_summary]")
    assert record["epochs"] == 1
    out = capsys.readouterr().out
    assert "Trainable params" in out and "Epoch 0/0" in out


def test_load_from_checkpoint_needs_the_code_from_the_caller(tmp_path) -> None:
    """Lightning's load_from_checkpoint would build BzModule from the stored hparams (a
    TypeError before); bz never builds what a file names: the model is the caller's."""
    module = BzModule(MLP([4], 3, hidden_sizes=[5]), nn.CrossEntropyLoss(), torch.optim.SGD,
                      hyperparameters={"note": "kept"})
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    with pytest.raises(BzConfigError, match="needs model=..., loss_fn=..., optimizer=..."):
        BzModule.load_from_checkpoint(str(path))
    loaded = BzModule.load_from_checkpoint(str(path), model=MLP([4], 3, hidden_sizes=[5]),
                                           loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD)
    assert loaded.hparams["note"] == "kept"
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(BzCheckpointError, match="do not fit the model"):
        BzModule.load_from_checkpoint(str(path), model=MLP([4], 3, hidden_sizes=[6]),
                                      loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD)


# ----------------------------------------------------------------------- ckpt_path
class _Payload:
    def __reduce__(self):  # what an unrestricted torch.load would call
        return (os.system, ("touch executed",))


def test_bad_ckpt_path_fails_before_training_naming_the_key(tmp_path, monkeypatch, capsys) -> None:
    assert "ckpt_path=missing.ckpt: no such file" in fails(monkeypatch, capsys, "ckpt_path=missing.ckpt")
    Path("notes.txt").write_text("not a checkpoint\n")
    line = fails(monkeypatch, capsys, "ckpt_path=notes.txt")
    assert line.startswith("bz-train: error: ckpt_path=notes.txt: notes.txt cannot be read as a checkpoint")
    torch.save({"state_dict": {}, "hook": _Payload()}, "hostile.ckpt")
    line = fails(monkeypatch, capsys, "ckpt_path=hostile.ckpt")
    assert "ckpt_path=hostile.ckpt" in line and "refused" in line and "posix.system" in line
    assert not Path("executed").exists()
    torch.save({"weights": {}}, "other.ckpt")
    assert "not a Lightning checkpoint" in fails(monkeypatch, capsys, "ckpt_path=other.ckpt")


@pytest.mark.slow
def test_ckpt_path_continues_from_a_checkpoint_exactly(tmp_path, monkeypatch) -> None:
    """Start a 2-epoch run from the epoch-0 checkpoint of another 2-epoch run: its epoch 1
    is the other run's epoch 1 (weights, optimizer state and loop restored), and it is a
    run of its own (its own signature and checkpoint directory)."""
    first = run(tmp_path, monkeypatch, "epochs=2", "logger=csv", "callbacks=[model_checkpoint]", name="first",
                debug=False)
    (start,) = (tmp_path / "first" / "checkpoints").glob("epoch_0-*.ckpt")
    second = run(tmp_path, monkeypatch, "epochs=2", "logger=csv", f"ckpt_path={start}", name="second", debug=False)
    assert second["resumed_from"] == str(start)
    assert second["signature"] != first["signature"]
    assert second["metrics"]["val_loss"] == pytest.approx(first["metrics"]["val_loss"], rel=1e-6)
    assert second["metrics"]["train_loss"] == pytest.approx(first["metrics"]["train_loss"], rel=1e-6)
    assert sorted({int(r["epoch"]) for r in csv_rows(tmp_path / "second") if r.get("epoch")}) == [1]
    # Same path, other content: another run (keyed by the file's content), not the stored result.
    (other,) = (tmp_path / "first" / "checkpoints").glob("epoch_1-*.ckpt")
    start.write_bytes(other.read_bytes())
    third = run(tmp_path, monkeypatch, "epochs=2", "logger=csv", f"ckpt_path={start}", name="third", debug=False)
    assert not third["reused"] and third["signature"] != second["signature"]
    # The same command again: the run's own result, whatever the logger objects were.
    again = run(tmp_path, monkeypatch, "epochs=2", "logger=csv", f"ckpt_path={start}", name="again", debug=False)
    assert again["reused"] and again["signature"] == third["signature"]
    hparams = yaml.safe_load((tmp_path / "again" / "csv" / "hparams.yaml").read_text())
    assert hparams["bz_config"]["ckpt_path"] == str(start)
    assert float(csv_rows(tmp_path / "again")[-1]["final_val_loss"]) == pytest.approx(third["metrics"]["val_loss"])


# ------------------------------------------------------------------ a project's keys
def test_a_project_declares_its_own_top_level_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # bz-train reads ./conf of the directory it runs in
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "wide.yaml").write_text(
        "# @package _global_\nextra_keys: [width]\nwidth: 24\nmodel:\n  hidden_sizes: [\"${width}\"]\n"
    )
    values = compose_run(["experiment=wide"])
    assert values["model"]["hidden_sizes"] == [24] and values["width"] == 24
    values = compose_run(["experiment=wide", "width=32"])
    assert values["model"]["hidden_sizes"] == [32]
    # Typos of bz's keys, and undeclared keys, are still caught.
    with pytest.raises(BzConfigError, match=r"epoch=3: unknown key \(did you mean 'epochs'\?\)"):
        compose_run(["experiment=wide", "epoch=3"])
    with pytest.raises(BzConfigError, match="widht=3: unknown key"):
        compose_run(["experiment=wide", "+widht=3"])
    with pytest.raises(BzConfigError, match="extra_keys: 'epochs' is one of bz's keys"):
        compose_run(["experiment=wide", "extra_keys=[width,epochs]"])


def test_extras_hold_a_projects_values(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    values = compose_run(["+extras.width=12", "model.hidden_sizes=[${extras.width}]"])
    assert values["model"]["hidden_sizes"] == [12] and values["extras"] == {"width": 12}


@pytest.mark.slow
def test_python_api_ckpt_path_continues_exactly(tmp_path) -> None:
    """``Trainer.train(ckpt_path=...)`` without bz's checkpointing: one epoch, a
    ModelCheckpoint file, then a second epoch from it, ends with the weights of two epochs
    in one go (weights, optimizer state and loop restored from the file)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from bz_lightning.trainer import Trainer
    from conftest import make_dataset, make_model

    def train(epochs: int, **kwargs):
        model = make_model()
        data = DataLoader(make_dataset(), batch_size=8)
        result = Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                 nn.CrossEntropyLoss(), data, DataLoader(make_dataset(16, seed=1), batch_size=8),
                                 device="cpu", compile=False, epochs=epochs, **kwargs)
        return model, result

    straight, _ = train(2)
    train(1, callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="first", monitor="val_loss")])
    continued, result = train(2, ckpt_path=str(tmp_path / "first.ckpt"))
    assert result.resumed_from == str(tmp_path / "first.ckpt") and result.epochs_completed == 2
    for (name, a), b in zip(straight.state_dict().items(), continued.state_dict().values()):
        assert torch.equal(a, b), name
