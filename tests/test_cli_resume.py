"""Re-running a bz-train command continues it: single runs, resume modes, sweeps, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUICK = ("plugins=none", "print_config=false", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2")


def bz_train(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "bz_lightning.cli.train", *args, *QUICK], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def record(cwd: Path, run: str = "run") -> dict:
    return json.loads((cwd / run / "metrics.json").read_text())


def test_rerun_continues_then_reuses_a_finished_run(tmp_path: Path) -> None:
    bz_train("epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    first = record(tmp_path)
    assert first["resumed_from"] is None and not first["reused"]
    ckpt_dir = Path(first["checkpoint_dir"])
    assert ckpt_dir == Path("runs") / first["signature"] / "checkpoints"

    bz_train("epochs=2", "hydra.run.dir=run", cwd=tmp_path)  # raising epochs continues it
    second = record(tmp_path)
    assert second["signature"] == first["signature"]
    assert second["resumed_from"] == str(ckpt_dir / "last.ckpt")
    assert second["epochs"] == 2 and not second["reused"]

    bz_train("epochs=2", "hydra.run.dir=run", cwd=tmp_path)  # the same command: nothing to do
    third = record(tmp_path)
    assert third["reused"] and third["metrics"] == second["metrics"]

    bz_train("epochs=2", "optimizer.lr=0.01", "hydra.run.dir=run", cwd=tmp_path)  # another run
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


def test_rerun_sweep_reuses_finished_jobs_and_resumes_the_unfinished_one(tmp_path: Path) -> None:
    # lr=0.01 ran one epoch before (as an interrupted job would have); lr=0.001 never ran.
    bz_train("epochs=1", "optimizer.lr=0.01", "hydra.run.dir=single", cwd=tmp_path)
    sweep = ("-m", "optimizer.lr=0.001,0.01", "epochs=2")
    bz_train(*sweep, "hydra.sweep.dir=sweep1", cwd=tmp_path)
    jobs = {r["overrides"][0]: r for r in json.loads((tmp_path / "sweep1/summary.json").read_text())["jobs"]}
    resumed = record(tmp_path, "sweep1/1")
    assert resumed["resumed_from"] is not None and resumed["epochs"] == 2
    assert record(tmp_path, "sweep1/0")["resumed_from"] is None
    assert len(jobs) == 2

    bz_train(*sweep, "hydra.sweep.dir=sweep2", cwd=tmp_path)
    again = json.loads((tmp_path / "sweep2/summary.json").read_text())["jobs"]
    assert [record(tmp_path, f"sweep2/{j}")["reused"] for j in (0, 1)] == [True, True]
    assert {r["overrides"][0]: r["metrics"] for r in again} == {k: r["metrics"] for k, r in jobs.items()}


def test_sigterm_saves_last_checkpoint_exits_143_and_rerun_finishes(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "bz_lightning.cli.train", *QUICK, "epochs=500"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    while not list(runs.glob("*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.2)  # the first epoch ended: training is under way
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert "run the same command again to continue" in out

    import torch

    from bz_lightning.cli.runs import list_runs

    (last,) = runs.glob("*/checkpoints/last.ckpt")
    stopped_in = torch.load(last, weights_only=True)["epoch"]
    (stopped,) = list_runs(runs)  # bz runs: unfinished, as far as the checkpoint got
    assert (stopped.status, stopped.epochs, stopped.value) == ("unfinished", 500, None)
    target = stopped_in + 2
    proc = bz_train(f"epochs={target}", "hydra.run.dir=run", cwd=tmp_path)
    finished = record(tmp_path)
    assert finished["resumed_from"].endswith("last.ckpt") and finished["epochs"] == target
    # bz runs counted the epochs done as the resume did.
    assert f"from {last.relative_to(tmp_path)} (epoch {stopped.epochs_done} done" in proc.stdout + proc.stderr
    (done,) = list_runs(runs)
    assert (done.status, done.epochs_done, done.epochs) == ("complete", target, target)
    assert done.value == finished["metrics"]["val_loss"]
