"""bz-train and bz as real subprocesses: one MNIST epoch, a 2x2 sweep, bz init, bz validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def bz_train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "bz_lightning.cli.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def bz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "bz_lightning.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_mnist_mini_one_epoch_writes_metrics(tmp_path: Path, mnist_mini: Path) -> None:
    bz_train("+experiment=mnist", f"data.root={mnist_mini}", "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    record = json.loads((tmp_path / "run/metrics.json").read_text())
    assert record["epochs"] == 1
    assert record["metrics"]["val_accuracy"] > 0.85
    assert record["overrides"] == ["experiment=mnist", f"data.root={mnist_mini}", "epochs=1"]
    assert (tmp_path / "run/config.yaml").is_file()


def test_two_by_two_sweep_writes_a_summary(tmp_path: Path) -> None:
    proc = bz_train("-m", "optimizer.lr=1e-3,1e-2", "model=mlp,cnn", "epochs=1", "plugins=none",
                    "optimized_metric=val_accuracy", "hydra.sweep.dir=sweep", cwd=tmp_path)
    summary = json.loads((tmp_path / "sweep/summary.json").read_text())
    rows = summary["jobs"]
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert {tuple(r["overrides"][:2]) for r in rows} == {
        (f"optimizer.lr={lr}", f"model={m}") for lr in ("0.001", "0.01") for m in ("mlp", "cnn")
    }
    best = max(rows, key=lambda r: r["metrics"]["val_accuracy"])
    assert [r["best"] for r in rows].count(True) == 1 and best["best"]
    assert "sweep summary:" in proc.stdout and f"best job: {best['job']} by val_accuracy" in proc.stdout


def test_bz_init_project_trains(tmp_path: Path) -> None:
    bz("init", "proj", cwd=tmp_path)
    project = tmp_path / "proj"
    assert (project / "conf/experiment/example.yaml").is_file() and (project / "README.md").is_file()
    bz_train("+experiment=example", "epochs=1", "hydra.run.dir=run", cwd=project)
    record = json.loads((project / "run/metrics.json").read_text())
    assert record["epochs"] == 1
    config = (project / "run/config.yaml").read_text()
    assert "project_models.TinyNet" in config and "batch_size: 32" in config


def test_bz_validate_reproduces_the_run_metrics(tmp_path: Path) -> None:
    bz_train("epochs=1", "checkpoint_interval=1", "plugins=none", "hydra.run.dir=run", cwd=tmp_path)
    record = json.loads((tmp_path / "run/metrics.json").read_text())
    checkpoint = Path(record["checkpoint_dir"]) / "epoch-1.ckpt"  # <runs_dir>/<signature>/checkpoints
    proc = bz("validate", str(checkpoint), "--json", cwd=tmp_path)
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert metrics["val_accuracy"] == pytest.approx(record["metrics"]["val_accuracy"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(record["metrics"]["val_loss"], rel=1e-5)
