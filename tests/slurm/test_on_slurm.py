"""bz-train on a real SLURM cluster, through Hydra's submitit_slurm launcher (``hydra/launcher=slurm``).

Run with ``make test-slurm``: it starts a single-node cluster on this machine
(``tests/slurm/slurm_cluster.py``), runs these tests against it and stops it. Without a
cluster (``BZ_SLURM_CLUSTER`` unset) they are skipped; ``make test`` does not collect them
(marker ``slurm``).

Every job runs with ``OMP_NUM_THREADS=1`` (sbatch hands the submitter's environment to the
job), so a job on SLURM and a local run compute with the same number of threads and give
the same floats.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from slurm_cluster import CLUSTER_ENV

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

BZ_TRAIN = str(Path(sys.executable).with_name("bz-train"))
# bz's shipped SLURM launcher (Hydra's submitit_slurm) sized for this node: one core and
# 1 GB per task, a 10-minute limit.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=10"]
QUIET = ["print_config=false", "plugins=none"]
TIMEOUT = 300
# Columns of a summary row that say where a job ran and for how long, not what it computed.
WHERE_AND_WHEN = ("duration_s", "output_dir", "checkpoint_dir")


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """The environment that reaches the running cluster; skip without one."""
    if not os.environ.get(CLUSTER_ENV) or not os.environ.get("SLURM_CONF"):
        pytest.skip("no SLURM cluster to test against: run `make test-slurm` (as root; it starts one)")
    proc = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True, timeout=30)
    # The runner said a cluster is up: not answering is a failure, not a skip.
    assert proc.returncode == 0 and proc.stdout.split() == ["up", "idle"], proc.stdout + proc.stderr
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


@pytest.fixture(autouse=True)
def _no_job_left_behind(cluster_env: dict[str, str]) -> Iterator[None]:
    """A test that fails while its jobs run cancels them, so the next test has the node."""
    yield
    for run in list(BzTrain.running):
        run.kill()
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.split()
    if jobs:
        subprocess.run(["scancel", *jobs], timeout=30)
        deadline = time.monotonic() + 60
        while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
            assert time.monotonic() < deadline, "jobs still in the queue 60 s after scancel"
            time.sleep(1)


class BzTrain:
    """``bz-train ARGS`` started in ``cwd``, its output in ``cwd/bz-train.out``. Tests start
    the local run they compare with beside the SLURM one: on 2 cores the two overlap."""

    running: list[BzTrain] = []

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.out = cwd / "bz-train.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([BZ_TRAIN, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        BzTrain.running.append(self)

    def wait(self) -> None:
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bz-train still running after {TIMEOUT} s:\n{self.output()}")
        finally:
            self.kill()
        assert self.proc.returncode == 0, self.output()

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self in BzTrain.running:
            BzTrain.running.remove(self)


def bz_train(*runs: BzTrain) -> None:
    """Wait for every run; each must succeed."""
    for run in runs:
        run.wait()


def summary_rows(sweep: Path) -> list[dict[str, Any]]:
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    return [{k: v for k, v in row.items() if k not in WHERE_AND_WHEN} for row in rows]


def task_logs(sweep: Path) -> dict[str, str]:
    """submitit's log of every SLURM task of the sweep, by ``<job id>_<task>``: stdout and
    stderr of the task together (``srun --output/--error``, appended across requeues)."""
    logs = {}
    for out in sorted(sweep.glob(".submitit/*/*_log.out")):
        name = out.name.removesuffix("_log.out")
        err = out.with_name(f"{name}_log.err")
        logs[name] = out.read_text(errors="replace") + (err.read_text(errors="replace") if err.is_file() else "")
    return logs


# ---------------------------------------------------------------------------------- sweeps
def test_a_2x2_sweep_on_slurm_ends_with_the_local_launchers_summary_rows(tmp_path: Path,
                                                                        cluster_env: dict[str, str]) -> None:
    grid = ["optimizer.lr=1e-3,1e-2", "model=mlp,cnn", "epochs=2", "trainer.limit_train_batches=5",
            "trainer.limit_val_batches=3", *QUIET]
    # Each sweep in its own directory, with the default runs_dir (./runs) and sweep
    # directory (outputs/train/multiruns/<time>, which each SLURM job works out again): the
    # overrides in the rows are the same, and the SLURM jobs cannot reuse the local runs'
    # stored results.
    bz_train(BzTrain(tmp_path / "local", cluster_env, "-m", *grid),
             BzTrain(tmp_path / "slurm", cluster_env, "-m", *SLURM, *grid))

    (local_sweep,) = {p.parent for p in (tmp_path / "local").glob("outputs/*/multiruns/*/summary.json")}
    (slurm_sweep,) = {p.parent for p in (tmp_path / "slurm").glob("outputs/*/multiruns/*/summary.json")}
    local, slurm = summary_rows(local_sweep), summary_rows(slurm_sweep)
    assert [row["job"] for row in slurm] == ["0", "1", "2", "3"]
    assert {row["status"] for row in slurm} == {"complete"}
    assert not any(row["reused"] for row in slurm)
    assert slurm == local
    # The jobs ran as the 4 tasks of one SLURM array job, each to completion, each in its
    # own directory of the sweep.
    assert sorted(p.name for p in slurm_sweep.iterdir() if p.is_dir() and p.name != ".submitit") == ["0", "1", "2", "3"]
    logs = task_logs(slurm_sweep)
    array = sorted(logs)[0].split("_")[0]
    assert sorted(logs) == [f"{array}_{i}_0" for i in range(4)]
    assert all("Job completed successfully" in log for log in logs.values())


# ------------------------------------------------------------------------------ preemption
# One epoch is 1,258 batches of one digit (a few seconds): long enough to interrupt the job
# twice in the middle of it. Progress lines every 100 batches (refresh_seconds=0: by count,
# not by time) tell the test where training is.
PREEMPT = ["data.batch_size=1", "epochs=2", "print_config=false", "plugins=[console_out]",
           "plugins.console_out.update_interval=100", "plugins.console_out.refresh_seconds=0"]
TRAIN_BATCHES = 1258  # digits at batch size 1: 1,797 minus 20 % val and 10 % test


def _slurm(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


class OneJob:
    """The sweep of one job on SLURM: where its training is, and its job id."""

    def __init__(self, sweep: Path, proc: subprocess.Popen[bytes]) -> None:
        self.sweep = sweep
        self.proc = proc
        self.seen = 0  # how much of the job's log earlier waits have read

    def log(self) -> str:
        (log,) = task_logs(self.sweep).values() or [""]
        return log

    def wait_for_batch(self, batches: int) -> str:
        """Wait until a progress line of epoch 1, newer than the last wait, shows at least
        ``batches`` batches trained; returns the SLURM job id."""
        progress = re.compile(rf"epoch 1/2  train (\d+)/{TRAIN_BATCHES}")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the sweep ended too soon; see {self.sweep.parent / 'bz-train.out'}"
            logs = task_logs(self.sweep)
            if logs and any(int(n) >= batches for n in progress.findall(self.log()[self.seen:])):
                (name,) = logs
                return name.removesuffix("_0")  # <job>_<task>
            time.sleep(0.2)
        raise AssertionError(f"no line 'epoch 1/2  train {batches}+' in {self.sweep}/.submitit after {TIMEOUT} s")

    def wait_until_requeued(self, job: str) -> dict[str, Any]:
        """Wait until the job is back in the queue (its processes have ended); returns the
        checkpoint it left: the epoch (from 0) and the batches Lightning had trained in it."""
        import torch

        deadline = time.monotonic() + TIMEOUT
        while _slurm("squeue", "-h", "-j", job, "-o", "%T").strip() != "PENDING":
            assert time.monotonic() < deadline, f"job {job} not back in the queue after {TIMEOUT} s"
            time.sleep(0.2)
        self.seen = len(self.log())
        (path,) = self.sweep.parent.glob("runs/**/last.ckpt")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
        return {"path": path, "epoch": checkpoint["epoch"], "batches": progress["processed"]}


def test_a_job_interrupted_twice_mid_epoch_resumes_and_ends_with_the_uninterrupted_weights(
        tmp_path: Path, cluster_env: dict[str, str]) -> None:
    """In its first epoch, the job is preempted with ``scontrol requeue`` (SLURM sends
    SIGTERM and puts it back in the queue); once resumed, in the same epoch, it gets
    submitit's time-limit warning (SIGUSR2: submitit requeues the job itself). Both times
    bz saves last.ckpt at the next batch boundary, and the requeued job continues from
    that very batch. The run ends as the uninterrupted one does."""
    import torch

    uninterrupted_run = BzTrain(tmp_path / "reference", cluster_env, *PREEMPT)
    slurm_dir = tmp_path / "slurm"
    sweep = BzTrain(slurm_dir, cluster_env, "-m", *SLURM, *PREEMPT, "hydra.sweep.dir=sweep")
    run = OneJob(slurm_dir / "sweep", sweep.proc)
    job = run.wait_for_batch(200)
    _slurm("scontrol", "requeue", job)
    preempted = run.wait_until_requeued(job)
    assert run.wait_for_batch(preempted["batches"] + 300) == job
    _slurm("scancel", "--signal=USR2", job)  # what SLURM sends signal_delay_s before the time limit
    warned = run.wait_until_requeued(job)
    bz_train(sweep, uninterrupted_run)

    assert "Restarts=2" in _slurm("scontrol", "show", "job", job)
    log = run.log()
    assert "DUE TO JOB REQUEUE" in log and "Exited with exit code 143" in log  # bz's exit on SIGTERM
    assert "Caught signal SIGUSR2" in log  # submitit's own handler ran, after bz's save
    # Both checkpoints were written inside epoch 1, at a batch boundary; each resume
    # continued from its checkpoint's batch.
    for stop, after in ((preempted, 200), (warned, preempted["batches"] + 300)):
        assert stop["epoch"] == 0 and after <= stop["batches"] < TRAIN_BATCHES, stop
    resumed = re.findall(r"resuming run \w+ from (\S+) \(epoch 0 done, (\d+) batches into epoch 1\)", log)
    assert [int(n) for _, n in resumed] == [preempted["batches"], warned["batches"]], log[-4000:]

    (row,) = json.loads((run.sweep / "summary.json").read_text())["jobs"]
    assert row["status"] == "complete" and row["epochs"] == 2
    assert slurm_dir / row["resumed_from"] == warned["path"]
    reference = json.loads(next((tmp_path / "reference" / "outputs").glob("*/runs/*/metrics.json")).read_text())
    assert row["metrics"] == reference["metrics"]

    def weights(cwd: Path, run: dict[str, Any]) -> dict[str, torch.Tensor]:
        path = cwd / run["checkpoint_dir"] / "last.ckpt"  # runs_dir is relative to the run's directory
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    resumed_weights, uninterrupted = weights(slurm_dir, row), weights(tmp_path / "reference", reference)
    assert resumed_weights.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed_weights[name], tensor), name


# ------------------------------------------------------------------------------------- DDP
# Fixed weights (lr 0) so one process and two give the same values; 320 validation samples
# (val_fraction 0.178 of 1,797) in batches of 32: no padding by the DistributedSampler and
# batches of the same size, so the mean of batch losses is the mean over samples in both.
DDP = ["optimizer.lr=0.0", "data.val_fraction=0.178", "data.batch_size=32", "epochs=1",
       "trainer.limit_train_batches=2", *QUIET]


def test_ddp_across_two_slurm_tasks_gives_the_single_process_metrics(tmp_path: Path,
                                                                    cluster_env: dict[str, str]) -> None:
    sweep = tmp_path / "ddp" / "sweep"
    bz_train(BzTrain(tmp_path / "single", cluster_env, *DDP),
             BzTrain(tmp_path / "ddp", cluster_env, "-m", *SLURM, "hydra.launcher.tasks_per_node=2", "trainer=ddp_cpu",
                     *DDP, f"hydra.sweep.dir={sweep}"))

    single = json.loads(next((tmp_path / "single" / "outputs").glob("*/runs/*/metrics.json")).read_text())
    (row,) = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert row["status"] == "complete"
    val = {k: v for k, v in single["metrics"].items() if k.startswith("val_")}
    assert set(val) == {"val_loss", "val_accuracy", "val_f1_score"}
    assert row["metrics"]["val_accuracy"] == val["val_accuracy"]
    assert row["metrics"]["val_f1_score"] == pytest.approx(val["val_f1_score"], abs=1e-6)
    assert row["metrics"]["val_loss"] == pytest.approx(val["val_loss"], rel=1e-6)
    # SLURM started both processes (one task each) and Lightning joined them into one
    # training: each task's log has its rank; Lightning started no process of its own.
    logs = task_logs(sweep)
    assert len(logs) == 2, sorted(logs)
    rank0, rank1 = (logs[name] for name in sorted(logs))
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in rank0 and "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1
    assert not list(sweep.glob("0/train_ddp_process_*"))


# ---------------------------------------------------------------------------------- Optuna
_STAMP = re.compile(r"submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\)")


def _span(log: str) -> tuple[datetime, datetime]:
    stamps = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in _STAMP.findall(log)]
    assert stamps, log[-2000:]
    return min(stamps), max(stamps)


def test_optuna_trials_run_as_parallel_slurm_jobs_sharing_one_journal(tmp_path: Path,
                                                                      cluster_env: dict[str, str]) -> None:
    """6 trials, 2 at a time as one SLURM array job each, all reporting into the study's
    journal file in the sweep directory. SGD over learning rates that are useless (1e-6),
    good (0.3) or diverging (1e6): later useless trials are pruned, diverging ones fail."""
    optuna = pytest.importorskip("optuna")
    from bz_lightning.plugins.optuna_pruning import PRUNED_ATTR, open_storage

    sweep = tmp_path / "sweep"
    bz_train(BzTrain(tmp_path, cluster_env, "hparams_search=optuna", *SLURM, "optimizer=sgd",
                     "hydra.sweeper.params={optimizer.lr: 'choice(1e-6, 0.3, 1e6)'}",
                     "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0",
                     "hydra.sweeper.sampler.n_startup_trials=6", "hydra.sweeper.pruner.n_startup_trials=1",
                     "hydra.sweeper.pruner.n_warmup_steps=0", "epochs=4", "trainer.limit_train_batches=4", *QUIET,
                     f"hydra.sweep.dir={sweep}"))

    spec = json.loads((sweep / "optuna" / "study.json").read_text())
    assert spec["storage"] == str(sweep / "optuna" / "journal.log")
    study = optuna.load_study(study_name=spec["study_name"], storage=open_storage(spec["storage"]))
    trials = study.get_trials(deepcopy=False)
    # Every trial once, each finished; the jobs reported their epochs into the journal.
    assert [t.number for t in trials] == list(range(6))
    states = {t.number: t.state.name.lower().replace("fail", "failed") for t in trials}
    assert set(states.values()) == {"complete", "pruned", "failed"}, states
    for trial in trials:
        if trial.state.name != "FAIL":
            assert trial.intermediate_values, trial.number
        assert bool(trial.user_attrs.get(PRUNED_ATTR)) == (trial.state.name == "PRUNED")
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert {int(row["job"]): row["status"] for row in rows} == states
    assert not any(row["reused"] for row in rows if "reused" in row)  # failed trials have no record
    for row in rows:
        if row["status"] == "pruned":
            assert row["stopped_early"] and row["epochs"] < 4
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(math.isfinite(t.value) for t in complete)

    # Each pair of trials was one SLURM array job whose 2 tasks ran at the same time.
    logs = task_logs(sweep)
    arrays: dict[str, list[str]] = {}
    for name in sorted(logs):
        arrays.setdefault(name.split("_")[0], []).append(name)
    assert sorted(len(tasks) for tasks in arrays.values()) == [2, 2, 2], sorted(logs)
    for first, second in arrays.values():
        (start1, end1), (start2, end2) = _span(logs[first]), _span(logs[second])
        assert start1 < end2 and start2 < end1, (first, second)
