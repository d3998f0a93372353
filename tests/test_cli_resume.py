"""Re-running a bz-train command: a finished run is reused, other epochs are another run,
resume modes, sweeps. (SIGTERM and the re-run after it: test_run_cache_cli.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Whole epochs (limit_*_batches would make these debug runs, which are never stored or
# reused), of few large batches.
QUICK = ("plugins=none", "print_config=false", "data.batch_size=360")


def bz_train(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "bz_lightning.cli.train", *args, *QUICK], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def record(cwd: Path, run: str = "run") -> dict:
    return json.loads((cwd / run / "metrics.json").read_text())


def test_rerun_reuses_a_finished_run_and_other_epochs_train_their_own(tmp_path: Path) -> None:
    bz_train("epochs=3", "hydra.run.dir=run", cwd=tmp_path)
    first = record(tmp_path)
    assert first["resumed_from"] is None and not first["reused"] and first["epochs"] == 3
    ckpt_dir = Path(first["checkpoint_dir"])
    assert ckpt_dir == Path("runs") / first["signature"] / "checkpoints"

    proc = bz_train("epochs=3", "hydra.run.dir=run", cwd=tmp_path)  # the same command: nothing to do
    again = record(tmp_path)
    assert again["reused"] and again["metrics"] == first["metrics"] and again["signature"] == first["signature"]
    assert f"reused the finished run {first['signature']}" in proc.stdout and "resume=never" in proc.stdout

    bz_train("epochs=1", "hydra.run.dir=run", cwd=tmp_path)  # fewer epochs: its own run, trained
    one = record(tmp_path)
    assert one["signature"] != first["signature"] and not one["reused"] and one["epochs"] == 1
    assert one["metrics"]["train_loss"] != first["metrics"]["train_loss"]

    bz_train("epochs=3", "optimizer.lr=0.01", "hydra.run.dir=run", cwd=tmp_path)  # another run
    assert record(tmp_path)["signature"] != first["signature"]


def test_resume_must_fails_naming_the_directory_and_never_keeps_old_checkpoints(tmp_path: Path) -> None:
    proc = bz_train("epochs=1", "resume=must", "hydra.run.dir=run", cwd=tmp_path, ok=False)
    assert proc.returncode == 2
    assert "bz-train: error: resume='must'" in proc.stderr and "runs/" in proc.stderr

    bz_train("epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    first = record(tmp_path)
    old = {p.name: p.stat().st_mtime_ns for p in Path(tmp_path, first["checkpoint_dir"]).iterdir()}
    bz_train("epochs=1", "resume=never", "hydra.run.dir=run", cwd=tmp_path)
    fresh = record(tmp_path)
    assert fresh["checkpoint_dir"] != first["checkpoint_dir"] and fresh["resumed_from"] is None
    assert {p.name: p.stat().st_mtime_ns for p in Path(tmp_path, first["checkpoint_dir"]).iterdir()} == old


def test_rerun_sweep_reuses_finished_jobs_and_shows_it(tmp_path: Path) -> None:
    # lr=0.01 ran before as a single run; lr=0.001 never ran.
    bz_train("epochs=2", "optimizer.lr=0.01", "hydra.run.dir=single", cwd=tmp_path)
    sweep = ("-m", "optimizer.lr=0.001,0.01", "epochs=2")
    proc = bz_train(*sweep, "hydra.sweep.dir=sweep1", cwd=tmp_path)
    jobs = {r["overrides"][0]: r for r in json.loads((tmp_path / "sweep1/summary.json").read_text())["jobs"]}
    assert [record(tmp_path, f"sweep1/{j}")["reused"] for j in (0, 1)] == [False, True]
    assert record(tmp_path, "sweep1/1")["metrics"] == record(tmp_path, "single")["metrics"]
    assert [jobs[f"optimizer.lr={lr}"]["reused"] for lr in ("0.001", "0.01")] == [False, True]
    header = next(line for line in proc.stdout.splitlines() if line.strip().startswith("job"))
    assert header.split()[:4] == ["job", "status", "reused", "overrides"]

    bz_train(*sweep, "hydra.sweep.dir=sweep2", cwd=tmp_path)
    again = json.loads((tmp_path / "sweep2/summary.json").read_text())["jobs"]
    assert [record(tmp_path, f"sweep2/{j}")["reused"] for j in (0, 1)] == [True, True]
    assert {r["overrides"][0]: r["metrics"] for r in again} == {k: r["metrics"] for k, r in jobs.items()}
