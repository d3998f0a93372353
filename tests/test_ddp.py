"""Multi-process DDP on the CPU (gloo): 2 processes agree with each other and with 1 process.

Each test starts real processes (Lightning re-runs the script or bz-train for rank 1), so
they are marked ``ddp``; together they take well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("_ddp_script.py")
TIMEOUT = 240


def _run_script(out: Path, scenario: str, devices: int) -> list[dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), scenario, str(devices)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(devices)]


def test_two_process_metrics_equal_single_process(tmp_path: Path) -> None:
    (single,) = _run_script(tmp_path / "single", "metrics", 1)
    rank0, rank1 = _run_script(tmp_path / "ddp", "metrics", 2)
    assert rank0["world_size"] == rank1["world_size"] == 2
    # torchmetrics reduces the accuracy over both processes' halves of the validation set
    # (computed from the counts F1 keeps, which the two metrics share).
    assert rank0["validation_metrics"]["accuracy"] == single["validation_metrics"]["accuracy"]
    assert rank0["validation_metrics"]["f1_score"] == pytest.approx(single["validation_metrics"]["f1_score"], abs=1e-6)
    assert rank0["validation_metrics"] == rank1["validation_metrics"]
    assert rank0["validation_loss"] == pytest.approx(single["validation_loss"], rel=1e-6)
    # The bridge sums loss totals and batch counts: every process's plugins see the same.
    assert rank0["seen"] == rank1["seen"]
    assert rank0["seen"][0][1] == 4  # 32 validation samples / batch 8, over both processes


def test_a_batch_failing_on_one_rank_is_skipped_by_both_without_hanging(tmp_path: Path) -> None:
    rank0, rank1 = _run_script(tmp_path, "skip", 2)
    # Sample 3 lands in one batch of one process each epoch (the sampler reshuffles per epoch);
    # both processes skip that step, in the same epoch at the same batch index.
    assert [s[0] for s in rank0["skipped"]] == list(range(6))
    assert [s[:2] for s in rank0["skipped"]] == [s[:2] for s in rank1["skipped"]]
    for mine, theirs in zip(rank0["skipped"], rank1["skipped"]):
        assert sorted([mine[2], theirs[2]]) == ["OSError: corrupt sample 3", "RuntimeError: skipped on another process"]
    for rank in (rank0, rank1):
        # SGD with momentum, lr 0.1: a skipped step leaves the weights and the momentum
        # buffers exactly as they were; every other step (after the first) moves both.
        skipped = [step[1:] for step in rank["steps"] if step[0]]
        trained = [step[1:] for step in rank["steps"][1:] if not step[0]]
        assert len(skipped) == 6 and skipped == [[True, True]] * 6
        assert trained and trained == [[False, False]] * len(trained)
    assert rank0["weights"] == rank1["weights"]  # no update went out of step


def test_mid_epoch_sigterm_resume_under_ddp_is_exact(tmp_path: Path) -> None:
    """2 processes with different dropout masks (each its own RNG), a shuffled loader, Adam:
    SIGTERM after batch 2 of epoch 2, then the same command, ends exactly where an
    uninterrupted run ends, with the interrupted epoch's totals and metrics complete."""
    whole = _run_script(tmp_path / "whole", "whole", 2)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cut"), "cut", "2"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 143, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training stopped by SIGTERM in epoch 2 after 2 batches" in proc.stdout + proc.stderr
    resumed = _run_script(tmp_path / "cut", "rerun", 2)
    for a, b in zip(whole, resumed):
        assert a["state"] == b["state"]
        assert a["seen"][1:] == b["seen"]  # the cut epoch and the next, as each process's plugins saw them
        assert (a["validation_loss"], a["validation_metrics"]) == (b["validation_loss"], b["validation_metrics"])
    # Each process saw other data and other dropout masks, yet they hold the same weights:
    # the gradients were synchronised (lr > 0).
    assert whole[0]["state"] == whole[1]["state"]


def test_early_stopping_stops_both_ranks_at_the_same_epoch(tmp_path: Path) -> None:
    rank0, rank1 = _run_script(tmp_path, "early_stop", 2)
    assert rank0["stop_epoch"] == rank1["stop_epoch"] == 1  # best at epoch 0, patience 1


def test_multirun_of_ddp_jobs_runs_each_job_once(tmp_path: Path) -> None:
    """2 jobs x 2 processes: no sweep started by a DDP child, no stray directories."""
    sweep = tmp_path / "sweep"
    cmd = [
        str(Path(sys.executable).with_name("bz-train")), "-m", "optimizer.lr=1e-3,1e-2", "trainer=ddp_cpu",
        "epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "print_config=false",
        "plugins=[console_out]", f"paths.runs_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    # limit_*_batches make these debug runs: nothing is checkpointed (no runs/).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]
    assert [job["status"] for job in summary["jobs"]] == ["complete", "complete"]
    for job in ("0", "1"):
        # Rank 1 ran the job it belongs to (its Hydra log is in the job's directory)...
        assert (sweep / job / "train_ddp_process_1.log").is_file()
        # ... and only rank 0 wrote: one console summary per job.
    assert proc.stdout.count("training finished") == 2
