"""Sweeps through Hydra's joblib launcher (parallel local jobs) and submitit's local executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

pytestmark = pytest.mark.slow

BZ_TRAIN = str(Path(sys.executable).with_name("bz-train"))
# Tiny jobs: digits, 1 epoch of 2 batches, no plugins.
TINY = ["epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "print_config=false",
        "plugins=none"]


def _sweep(tmp_path: Path, *args: str, timeout: int = 300) -> dict:
    sweep = tmp_path / "sweep"
    proc = subprocess.run([BZ_TRAIN, "-m", *args, *TINY, f"paths.runs_dir={tmp_path / 'runs'}",
                           f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((sweep / "summary.json").read_text())


def test_joblib_sweep_of_4_jobs_with_2_workers(tmp_path: Path) -> None:
    summary = _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "optimizer.lr=1e-3,1e-2", "model.dropout=0.0,0.1")
    assert [job["job"] for job in summary["jobs"]] == ["0", "1", "2", "3"]
    assert {job["status"] for job in summary["jobs"]} == {"complete"}
    assert summary["best_job"] is not None


def test_submitit_local_sweep(tmp_path: Path) -> None:
    summary = _sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                     "optimizer.lr=1e-3,1e-2")
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]
    assert {job["status"] for job in summary["jobs"]} == {"complete"}


def test_slurm_example_config_composes() -> None:
    """The shipped SLURM config: submitit's SLURM launcher, requeueing preempted jobs."""
    proc = subprocess.run([BZ_TRAIN, "hydra/launcher=slurm", "--cfg", "hydra", "--package", "hydra.launcher"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout and "max_num_timeout: 3" in proc.stdout
