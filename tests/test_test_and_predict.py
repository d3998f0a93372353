"""The test split end to end: ``test_after_fit`` (best or last weights), ``bz validate --split
test`` and ``bz predict``, checked against a hand loop over the saved weights and
scikit-learn's metrics; regression (``experiment=regression``) included."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from bz_lightning.cli import train as train_cli
from bz_lightning.cli._launch import compose_run
from bz_lightning.cli.main import main as bz_main
from bz_lightning.data import DiabetesDataModule, DigitsDataModule
from bz_lightning.errors import BzCheckpointError, BzConfigError
from bz_lightning.metrics import MeanSquaredError
from bz_lightning.models import MLP
from bz_lightning.trainer import Trainer

# A classification run small enough for a test: one epoch (20 batches). (A limit_train_batches
# run is a debug run, which keeps no checkpoints.)
DIGITS = ["epochs=1", "plugins=none", "print_config=false",
          "model.hidden_sizes=[16]", "optimizer.lr=0.01"]
# lr 0.1 overshoots after the first epoch (val_mse about 0.55, 0.63, 0.71 here): the best
# epoch is not the last, so testing the last weights as "best" cannot pass unnoticed.
REGRESSION = ["experiment=regression", "epochs=3", "plugins=none", "print_config=false", "optimizer.lr=0.1",
              "checkpoint_interval=1"]


def bz_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str, name: str = "run") -> dict:
    run_dir = tmp_path / name
    monkeypatch.setattr(sys, "argv", ["bz-train", *overrides, f"hydra.run.dir={run_dir}",
                                      f"paths.runs_dir={tmp_path / 'runs'}"])
    train_cli.main()
    return json.loads((run_dir / "metrics.json").read_text())


def bz(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what ran before is not this command's output
    with pytest.raises(SystemExit) as exit_info:
        bz_main(list(argv))
    out, err = capsys.readouterr()
    # In-process, Hydra's logging setup of an earlier bz-train prints bz's log lines too.
    out = "".join(line for line in out.splitlines(keepends=True) if "][bz_lightning" not in line)
    return exit_info.value.code, out, err


def load(model: nn.Module, path: str | Path) -> nn.Module:
    """The hand-written way to read a checkpoint's network: its ``model.*`` tensors."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    return model.eval()


@torch.no_grad()
def outputs(model: nn.Module, dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """All outputs and targets of ``dataset`` in order, plus each batch's ``(outputs, targets)``."""
    x, y = dataset.tensors
    batches = [(model(x[i:i + batch_size]), y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    return torch.cat([b[0] for b in batches]), y, batches


# ------------------------------------------------------------------- classification
@pytest.mark.slow
def test_test_pass_on_last_weights_matches_sklearn_and_bz_validate_and_predict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    record = bz_train(tmp_path, monkeypatch, *DIGITS, "test_after_fit=true", "test_weights=last")
    last = Path(record["checkpoint_dir"]) / "last.ckpt"
    assert record["test"] == {"weights": "last", "checkpoint": None, "epoch": None}
    assert not (Path(record["checkpoint_dir"]) / "best.ckpt").exists()  # only test_weights=best keeps one

    dm = DigitsDataModule()
    dm.setup("test")
    model = load(MLP([1, 8, 8], 10, hidden_sizes=[16]), last)
    logits, targets, batches = outputs(model, dm.test_set, batch_size=64)
    metrics = record["metrics"]
    assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(targets, logits.argmax(1)), abs=1e-6)
    assert metrics["test_f1_score"] == pytest.approx(
        skm.f1_score(targets, logits.argmax(1), average="macro"), abs=1e-6)
    # bz's losses are means of batch means (three batches: 64, 64, 52).
    batch_losses = [float(nn.functional.cross_entropy(p, t)) for p, t in batches]
    assert metrics["test_loss"] == pytest.approx(sum(batch_losses) / len(batch_losses), rel=1e-5)
    assert 0 < metrics["test_accuracy"] < 1

    # bz validate --split test evaluates the same weights on the same split.
    code, out, err = bz(capsys, "validate", str(last), "model.hidden_sizes=[16]", "--split", "test", "--json")
    assert code == 0, err
    tested = json.loads(out)
    assert set(tested) == {"test_loss", "test_accuracy", "test_f1_score"}
    for name, value in tested.items():
        assert value == pytest.approx(metrics[name], rel=1e-6), name
    code, out, _ = bz(capsys, "validate", str(last), "model.hidden_sizes=[16]", "--json")
    assert code == 0 and json.loads(out)["val_accuracy"] == pytest.approx(metrics["val_accuracy"], rel=1e-6)

    # bz predict: one row per test sample, in order, with the class and its probabilities.
    code, out, err = bz(capsys, "predict", str(last), "model.hidden_sizes=[16]", "-o", "digits.csv")
    assert code == 0, err
    assert out.strip() == "wrote 180 predictions for the test split to digits.csv"
    with open("digits.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "target", "pred", *(f"prob_{c}" for c in range(10))]
    table = rows[1:]
    assert [int(r[0]) for r in table] == list(range(180))
    assert [int(r[1]) for r in table] == targets.tolist()
    assert [int(r[2]) for r in table] == logits.argmax(1).tolist()
    probs = torch.tensor([[float(v) for v in r[3:]] for r in table])
    assert torch.allclose(probs, torch.softmax(logits, 1), atol=1e-6)


# ------------------------------------------------------------------------ regression
@pytest.mark.slow
def test_regression_end_to_end_with_best_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    record = bz_train(tmp_path, monkeypatch, *REGRESSION, "test_after_fit=true")
    directory = Path(record["checkpoint_dir"])
    best, last = directory / "best.ckpt", directory / "last.ckpt"
    assert record["test"]["weights"] == "best" and record["test"]["checkpoint"] == str(best)
    assert record["optimized_metric"] == "val_mse" and record["epochs"] == 3
    metrics = record["metrics"]
    assert set(metrics) == {f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "mse", "mae")}

    dm = DiabetesDataModule()
    dm.setup("fit")
    model = load(MLP([10], 1, hidden_sizes=[32]), best)
    preds, targets, batches = outputs(model, dm.test_set, batch_size=32)
    assert metrics["test_mse"] == pytest.approx(skm.mean_squared_error(targets, preds), rel=1e-5)
    assert metrics["test_mae"] == pytest.approx(skm.mean_absolute_error(targets, preds), rel=1e-5)
    batch_losses = [float(nn.functional.mse_loss(p, t)) for p, t in batches]
    assert metrics["test_loss"] == pytest.approx(sum(batch_losses) / len(batch_losses), rel=1e-5)

    # best.ckpt holds the epoch with the lowest val_mse, computed by hand from every epoch's
    # checkpoint (epoch-N.ckpt); the last one's is what metrics.json reports.
    def val_mse(path: Path) -> float:
        p, t, _ = outputs(load(MLP([10], 1, hidden_sizes=[32]), path), dm.val_set, batch_size=32)
        return skm.mean_squared_error(t, p)

    per_epoch = [val_mse(directory / f"epoch-{n}.ckpt") for n in (1, 2, 3)]
    assert per_epoch[2] == pytest.approx(metrics["val_mse"], rel=1e-5) == val_mse(last)
    best_epoch = 1 + per_epoch.index(min(per_epoch))
    assert best_epoch != 3, f"the run no longer overshoots ({per_epoch}): the test cannot tell best from last"
    assert record["test"]["epoch"] == best_epoch
    assert val_mse(best) == pytest.approx(min(per_epoch), rel=1e-6)

    # The same command again reuses the finished run and tests the same stored weights.
    again = bz_train(tmp_path, monkeypatch, *REGRESSION, "test_after_fit=true", name="again")
    assert again["reused"] and again["test"] == record["test"]
    assert {k: v for k, v in again["metrics"].items() if k.startswith("test_")} == pytest.approx(
        {k: v for k, v in metrics.items() if k.startswith("test_")}, rel=1e-6)

    # best.ckpt is best by the metric its ModelCheckpoint monitored: asked for another, it is
    # refused rather than passed off as best by that one.
    from bz_lightning.cli._evaluate import _check_monitor

    stored = torch.load(best, weights_only=True)
    _check_monitor(str(best), stored, "val_mse")
    with pytest.raises(BzCheckpointError, match=f"test_weights=best: {best} is the best epoch by val_mse, not by "
                                                "optimized_metric=val_mae; use test_weights=last"):
        _check_monitor(str(best), stored, "val_mae")

    # bz predict writes the model's raw output beside the target.
    code, _, err = bz(capsys, "predict", str(best), "experiment=regression", "-o", "reg.csv")
    assert code == 0, err
    with open("reg.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "target", "pred"] and len(rows) == 1 + len(targets)
    assert torch.allclose(torch.tensor([float(r[2]) for r in rows[1:]]), preds[:, 0], atol=1e-6)
    assert torch.allclose(torch.tensor([float(r[1]) for r in rows[1:]]), targets[:, 0], atol=1e-6)


def test_mse_refuses_a_one_output_model_against_flat_targets_in_training() -> None:
    """MSELoss would broadcast (16, 1) against (16,) to (16, 16); the metric stops the run
    at its first batch, naming both shapes."""
    x, y = torch.randn(32, 6), torch.randn(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = nn.Linear(6, 1)
    with pytest.warns(UserWarning, match="target size"), pytest.raises(
            BzConfigError, match=r"MeanSquaredError: preds of shape \(16, 1\) and targets of shape \(16,\) differ: .*\(16, 16\)"):
        Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), loader,
                        device="cpu", epochs=1, compile=False, metrics=[MeanSquaredError()])


# ---------------------------------------------------------------------- bad input
def test_config_errors_for_the_test_pass_and_the_loss_group() -> None:
    with pytest.raises(BzConfigError, match="test_weights=best: .*optimized_metric, which is null"):
        compose_run(["test_after_fit=true", "optimized_metric=null"])
    with pytest.raises(BzConfigError, match="test_weights=worst: expected one of best, last"):
        compose_run(["test_weights=worst"])
    with pytest.raises(BzConfigError, match="metrics.accuracy: Accuracy counts class predictions, but this run "
                                            "regresses"):
        compose_run(["experiment=regression", "metrics=[accuracy]"])
    with pytest.raises(BzConfigError, match="loss.reduction=none: expected one of mean, sum"):
        compose_run(["experiment=regression", "loss.reduction=none"])
    with pytest.raises(BzConfigError, match="loss=hinge: no option 'hinge' in config group 'loss'"):
        compose_run(["loss=hinge"])
    # Each option builds its torch loss; the default stays cross-entropy.
    assert compose_run([])["loss"] == {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.0}
    assert compose_run(["experiment=regression", "loss=l1"])["loss"]["_target_"] == "torch.nn.L1Loss"


def _checkpoint(tmp_path: Path) -> Path:
    model = MLP([1, 8, 8], 10, hidden_sizes=[16])
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_predict_refuses_bad_input_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path)
    # A broken override would fail composing; each error below comes first, so comes before it.
    broken = "model.hidden_sizes=oops"
    code, out, err = bz(capsys, "predict", str(tmp_path / "missing.ckpt"), broken)
    assert code == 2 and err.splitlines()[0] == f"bz predict: error: checkpoint not found: {tmp_path}/missing.ckpt"
    code, _, err = bz(capsys, "predict", str(ckpt), broken, "--split", "tset")
    assert err.splitlines()[0] == ("bz predict: error: --split tset: unknown split (did you mean 'test'?); "
                                   "available: train, val, test")
    existing = tmp_path / "kept.csv"
    existing.write_text("mine\n")
    code, _, err = bz(capsys, "predict", str(ckpt), broken, "-o", str(existing))
    assert code == 2 and "the file exists and is kept; pass --force" in err
    assert existing.read_text() == "mine\n"
    code, _, err = bz(capsys, "predict", str(ckpt), broken, "-o", str(tmp_path / "no/such/dir/p.csv"))
    assert f"the folder {tmp_path}/no/such/dir does not exist" in err
    code, _, err = bz(capsys, "predict", str(ckpt), broken, "-o", str(tmp_path))
    assert "is a directory; name a file" in err
    # With --force the checks pass and the config is next: its error shows it was reached.
    code, _, err = bz(capsys, "predict", str(ckpt), broken, "-o", str(existing), "--force")
    assert code == 2 and "model.hidden_sizes" in err and existing.read_text() == "mine\n"
    # And a good run overwrites it.
    code, out, err = bz(capsys, "predict", str(ckpt), "model.hidden_sizes=[16]", "-o", str(existing), "--force",
                        "--split", "val")
    assert code == 0, err
    assert out.strip() == f"wrote 359 predictions for the val split to {existing}"
    assert existing.read_text().startswith("index,target,pred,prob_0,")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested")
def test_predict_refuses_an_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, err = bz(capsys, "predict", str(_checkpoint(tmp_path)), "-o", str(locked / "p.csv"))
    assert code == 2 and "not writable" in err


def test_validate_refuses_an_unknown_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bz(capsys, "validate", str(_checkpoint(tmp_path)), "--split", "train")
    assert code == 2 and out == ""
    assert err.splitlines()[0] == "bz validate: error: --split train: unknown split; available: val, test"


def test_split_loader_of_your_own_datamodule_is_never_shuffled() -> None:
    """Predictions are rows 0..N-1 of the split: a DataModule's shuffled training loader is
    read in order; a split it lacks is a one-line error."""
    import lightning.pytorch as pl

    from bz_lightning.cli._evaluate import split_loader

    class Yours(pl.LightningDataModule):
        def setup(self, stage: str) -> None:
            self.data = torch.utils.data.TensorDataset(torch.arange(40.0)[:, None], torch.arange(40))

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.data, batch_size=8, shuffle=True)

    loader = split_loader(Yours(), "train")
    assert torch.cat([y for _, y in loader]).tolist() == list(range(40))
    with pytest.raises(BzConfigError, match=r"data \(Yours\) has no test split: it does not implement test_dataloader"):
        split_loader(Yours(), "test")
