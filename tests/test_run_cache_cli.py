"""bz-train's results are the run's own, and none is lost: debug runs, edited code, a sweep
with a failing job (in-process), SIGTERM in the last validation and two runs started in the
same second (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from _project import write_project

from bz_lightning.cli import train as train_cli
from bz_lightning.cli.runs import list_runs

QUICK = ("print_config=false", "plugins=none", "data.batch_size=360")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The test project in the working directory (bz-train reads ./conf and imports from it)."""
    write_project(tmp_path)
    yield tmp_path
    for name in ("project_models", "gated_data"):
        sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def run_in_process(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    flags = [a for a in args if a.startswith("-")]  # Hydra wants its flags before the overrides
    monkeypatch.setattr(sys, "argv", ["bz-train", *flags, *QUICK, *(a for a in args if a not in flags)])
    train_cli.main()


def record(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


# ------------------------------------------------------------------ in-process
def test_debug_runs_train_every_time_and_store_nothing(project: Path, monkeypatch, capsys) -> None:
    for run in ("a", "b"):
        run_in_process(monkeypatch, "debug=fdr", f"hydra.run.dir={run}")
        result = record(project / run)
        assert result["epochs"] == 1 and not result["reused"] and result["signature"] is None
        assert isinstance(result["metrics"]["train_loss"], float)
    assert "final (1 epoch, " in capsys.readouterr().out
    assert not (project / "runs").exists()


def test_editing_the_models_code_trains_again(project: Path, monkeypatch) -> None:
    run_in_process(monkeypatch, "model=tiny", "epochs=1", "hydra.run.dir=first")
    run_in_process(monkeypatch, "model=tiny", "epochs=1", "hydra.run.dir=same")
    first, same = record(project / "first"), record(project / "same")
    assert same["reused"] and same["signature"] == first["signature"]
    source = project / "project_models.py"
    source.write_text(source.read_text().replace("self.linear(x.flatten(1))", "self.linear(2 * x.flatten(1))"))
    sys.modules.pop("project_models", None)
    run_in_process(monkeypatch, "model=tiny", "epochs=1", "hydra.run.dir=edited")
    edited = record(project / "edited")
    assert not edited["reused"] and edited["signature"] != first["signature"]
    assert edited["metrics"] != first["metrics"]


def _linked(directory: Path, name: str) -> Path:
    """``directory/name`` as a hard link to a file holding "old": a writer that rewrites the
    file in place (truncating it first) changes what the link shows; one that writes a new
    file and renames it over the name does not."""
    directory.mkdir(parents=True, exist_ok=True)
    old = directory.parent / f"old-{directory.name}-{name}"
    old.write_text("old")
    os.link(old, directory / name)
    return old


def test_records_are_replaced_whole_never_rewritten_in_place(project: Path, monkeypatch) -> None:
    olds = [_linked(project / "run", name) for name in ("metrics.json", "config.yaml")]
    run_in_process(monkeypatch, "debug=fdr", "hydra.run.dir=run")
    assert [old.read_text() for old in olds] == ["old", "old"]
    assert record(project / "run")["epochs"] == 1 and yaml.safe_load((project / "run" / "config.yaml").read_text())
    assert not [p for p in (project / "run").iterdir() if ".tmp-" in p.name]


def test_a_sweep_trains_each_epochs_value_and_still_writes_its_summary_when_a_job_fails(
        project: Path, monkeypatch, capsys) -> None:
    old = _linked(project / "sweep", "summary.json")
    with pytest.raises(SystemExit) as stop:
        run_in_process(monkeypatch, "-m", "epochs=2,1", "model=mlp,broken", "hydra.sweep.dir=sweep")
    assert stop.value.code == 1
    summary = json.loads((project / "sweep" / "summary.json").read_text())
    jobs = {job["job"]: job for job in summary["jobs"]}
    assert [jobs[j]["status"] for j in "0123"] == ["complete", "failed", "complete", "failed"]
    # epochs=1 is its own run, trained: not the 2-epoch job's result.
    assert [jobs[j]["epochs"] for j in "02"] == [2, 1] and not jobs["0"]["reused"] and not jobs["2"]["reused"]
    assert jobs["0"]["signature"] != jobs["2"]["signature"] and jobs["0"]["metrics"] != jobs["2"]["metrics"]
    for j in "13":
        assert jobs[j]["error"].startswith("BzError: epoch 1 trained no batch: all 4 of its batches failed")
    assert jobs["3"]["overrides"][-2:] == ["epochs=1", "model=broken"]
    out = capsys.readouterr().out
    assert "sweep summary:" in out and "job 1 failed: BzError: epoch 1 trained no batch" in out
    assert old.read_text() == "old"  # summary.json was replaced whole


def test_a_sweep_job_stopped_by_sigterm_is_marked_preempted(project: Path, monkeypatch) -> None:
    """A real SIGTERM to this process while the job validates (held at the gate)."""
    (project / "gate.1").touch()

    def preempt() -> None:
        deadline = time.monotonic() + 240
        while not (project / "gate.1.reached").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # bz's handler runs in the main thread, before
        (project / "gate.1").unlink()         # the epoch it holds at the gate can end

    thread = threading.Thread(target=preempt, daemon=True)
    thread.start()
    with pytest.raises(SystemExit) as stop:
        run_in_process(monkeypatch, "-m", "data=gated", "epochs=1", "hydra.sweep.dir=sweep")
    thread.join()
    assert stop.value.code == 143
    (job,) = json.loads((project / "sweep" / "summary.json").read_text())["jobs"]
    assert job["status"] == "preempted" and job["error"].startswith("Preempted: training stopped by SIGTERM in epoch 1")


# ------------------------------------------------------------------ real processes
def _bz_train(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bz_lightning.cli.train", *QUICK, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _finish(proc: subprocess.Popen, code: int = 0) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == code, out[-3000:]
    return out


@pytest.mark.slow
def test_sigterm_in_the_last_validation_then_the_same_command_stores_the_full_result(project: Path) -> None:
    # console_out only reports (the same run with or without it): the cut process prints
    # the values of its last epoch, which the re-run must store.
    command = ("data=gated", "epochs=2", "plugins=[console_out]")
    (project / "gate.2").touch()  # the cut run waits at the start of its second validation
    cut = _bz_train(*command, "hydra.run.dir=cut", cwd=project)
    deadline = time.monotonic() + 240
    while not (project / "gate.2.reached").exists():
        assert cut.poll() is None and time.monotonic() < deadline, cut.stdout.read()[-3000:]
        time.sleep(0.05)
    cut.send_signal(signal.SIGTERM)
    for line in cut.stdout:  # bz's handler has the signal: let the validation finish
        if "received SIGTERM" in line:
            break
    (project / "gate.2").unlink()
    stopped = _finish(cut, 143)
    (ckpt_dir,) = (project / "runs").glob("*/checkpoints")
    assert (ckpt_dir / "last.ckpt").is_file() and not (ckpt_dir / "result.json").exists()
    (unfinished,) = list_runs(project / "runs")  # bz runs: as far as the checkpoint got
    assert (unfinished.status, unfinished.epochs, unfinished.value) == ("unfinished", 2, None)
    (line,) = [line for line in stopped.splitlines() if line.startswith("epoch 2/2  train_loss")]
    printed = dict(zip(line.split()[2:-2:2], map(float, line.split()[3:-2:2])))

    _finish(_bz_train(*command, "hydra.run.dir=rerun", cwd=project))
    rerun = record(project / "rerun")
    assert rerun["resumed_from"] == str(Path("runs") / ckpt_dir.parent.name / "checkpoints" / "last.ckpt")
    assert not rerun["reused"] and rerun["epochs"] == 2
    assert sorted(printed) == sorted(rerun["metrics"]) == ["train_accuracy", "train_f1_score", "train_loss",
                                                           "val_accuracy", "val_f1_score", "val_loss"]
    assert {k: round(v, 4) for k, v in rerun["metrics"].items()} == printed
    assert json.loads((ckpt_dir / "result.json").read_text())["metrics"] == rerun["metrics"]
    (done,) = list_runs(project / "runs")
    assert (done.status, done.epochs_done, done.epochs, done.value) == ("complete", 2, 2, rerun["metrics"]["val_loss"])
    assert "training stopped by SIGTERM in epoch 2 after 4 batches" in stopped  # epochs counted from 1


FROZEN_CLOCK = """\
import datetime as _datetime


class _Frozen(_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)


_datetime.datetime = _Frozen
"""


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_keep_their_own_directories(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.mkdir()
    (clock / "sitecustomize.py").write_text(FROZEN_CLOCK)  # both processes start at 03:04:05
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(clock), os.environ.get("PYTHONPATH")]))}
    procs = [_bz_train("epochs=1", f"optimizer.lr={lr}", cwd=tmp_path, env=env) for lr in (0.01, 0.02)]
    for proc in procs:
        _finish(proc)
    dirs = sorted((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(dirs) == 2 and all(d.name.startswith("2026-01-02_03-04-05") for d in dirs)
    lrs = []
    for run in dirs:
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert record(run)["overrides"] == overrides
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert overrides[-1] == f"optimizer.lr={config['optimizer']['lr']}"
        assert "optimizer.lr" in (run / "train.log").read_text() or (run / "train.log").is_file()
        lrs.append(config["optimizer"]["lr"])
    assert sorted(lrs) == [0.01, 0.02]
