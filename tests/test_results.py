"""Looking at results: the sweep report (``report.png`` drawn at the end of a multirun and by
``bz report``, the table ``bz report`` prints) and ``bz runs`` (the runs stored under the runs
directory, finished or not)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bz_lightning.cli import runs as runs_module
from bz_lightning.cli.report import REPORT_FILE, load_summary, numeric_sweeps, report_figure, write_report
from bz_lightning.cli.runs import format_runs, list_runs
from bz_lightning.cli.summary import SUMMARY_FILE, SweepSummary, format_table, summarize
from bz_lightning.errors import BzConfigError

QUICK = ("plugins=none", "print_config=false", "data.batch_size=256")  # not a debug run: runs are stored


def write_job(sweep: Path, job: str, overrides: list[str], metrics: dict[str, float] | None,
              status: str = "complete") -> None:
    """A job directory as bz-train leaves it: Hydra's overrides.yaml, and metrics.json unless
    the job failed."""
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / ".hydra/overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        record = {"status": status, "metrics": metrics, "optimized_metric": "val_loss", "overrides": overrides}
        (sweep / job / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Five jobs over a learning rate (numeric, three decades), dropout (numeric, with 0) and
    the model (a name): one failed, one pruned."""
    sweep = tmp_path / "sweep"
    jobs = [
        (["optimizer.lr=0.0001", "model.dropout=0.0", "model=mlp", "epochs=3"], {"val_loss": 0.9, "val_accuracy": 0.6}),
        (["optimizer.lr=0.001", "model.dropout=0.25", "model=cnn", "epochs=3"], {"val_loss": 0.3, "val_accuracy": 0.9}),
        (["optimizer.lr=0.01", "model.dropout=0.0", "model=mlp", "epochs=3"], {"val_loss": 0.5, "val_accuracy": 0.8}),
        (["optimizer.lr=0.1", "model.dropout=0.25", "model=cnn", "epochs=3"], None),
        (["optimizer.lr=0.05", "model.dropout=0.0", "model=mlp", "epochs=3"], {"val_loss": 1.7, "val_accuracy": 0.2}),
    ]
    for number, (overrides, metrics) in enumerate(jobs):
        write_job(sweep, str(number), overrides, metrics, status="pruned" if number == 4 else "complete")
    (sweep / SUMMARY_FILE).write_text(json.dumps(summarize(sweep, "val_loss")))
    return sweep


def offsets(ax, gid: str) -> list[tuple[float, float]]:
    """The points of the scatter ``gid`` (a status, or ``best``) in ``ax``."""
    found = [c for c in ax.collections if c.get_gid() == gid]
    return [tuple(map(float, xy)) for c in found for xy in c.get_offsets()]


def test_numeric_sweeps_are_the_numeric_keys_that_vary() -> None:
    jobs = [
        {"job": "0", "overrides": ["optimizer.lr=1e-3", "+model.dropout=0.1", "model=mlp", "epochs=2",
                                   "++hydra.job.env_set.BZ_OPTUNA_TRIAL=0"]},
        {"job": "1", "overrides": ["optimizer.lr=0.01", "++model.dropout=0.2", "model=cnn", "epochs=2",
                                   "++hydra.job.env_set.BZ_OPTUNA_TRIAL=1"]},
    ]
    assert numeric_sweeps(jobs) == {"optimizer.lr": {"0": 0.001, "1": 0.01}, "model.dropout": {"0": 0.1, "1": 0.2}}
    jobs[1]["overrides"][0] = "optimizer.lr=fast"  # one value is no number: not a numeric sweep
    assert list(numeric_sweeps(jobs)) == ["model.dropout"]


def test_report_figure_plots_every_job_against_each_numeric_parameter(sweep: Path) -> None:
    pytest.importorskip("matplotlib")
    summary = load_summary(sweep)
    figure = report_figure(summary)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["val_loss per job (lower is better)", "val_loss vs optimizer.lr", "val_loss vs model.dropout"]
    per_job, lr, dropout = figure.axes
    # Values as the jobs' metrics.json hold them; job 1 (lowest loss) is the best, job 3 failed.
    assert offsets(per_job, "best") == [(1.0, 0.3)]
    assert offsets(per_job, "complete") == [(0.0, 0.9), (2.0, 0.5)]
    assert offsets(per_job, "pruned") == [(4.0, 1.7)]
    assert [t.get_text() for t in per_job.texts] == ["failed"]
    assert [t.get_text().split("\n")[0] for t in per_job.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    assert sorted(offsets(lr, "complete") + offsets(lr, "best") + offsets(lr, "pruned")) == [
        (0.0001, 0.9), (0.001, 0.3), (0.01, 0.5), (0.05, 1.7)]
    assert lr.get_xscale() == "log" and dropout.get_xscale() == "linear"  # 0.0 has no logarithm
    assert sorted(offsets(dropout, "complete") + offsets(dropout, "best")) == [(0.0, 0.5), (0.0, 0.9), (0.25, 0.3)]


def test_report_png_is_written_atomically_and_reads_back(sweep: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread
    from PIL import Image

    lines = write_report(load_summary(sweep), sweep)
    assert lines == [f"drew {sweep / REPORT_FILE} (3 panels: val_loss per job (lower is better); "
                     "val_loss vs optimizer.lr; val_loss vs model.dropout)"]
    pixels = imread(sweep / REPORT_FILE)
    assert pixels.shape == (400, 3 * 520, 4)  # one row of three 5.2 x 4 inch panels at 100 dpi
    assert pixels[..., :3].std() > 0.05  # something is drawn
    described = Image.open(sweep / REPORT_FILE).text["Description"]
    assert described.split("; ") == ["val_loss per job (lower is better)", "val_loss vs optimizer.lr",
                                     "val_loss vs model.dropout"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == [REPORT_FILE, SUMMARY_FILE]  # no temp file left


def test_without_matplotlib_the_summary_is_written_and_one_line_names_the_extra(
        sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (sweep / SUMMARY_FILE).unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "optimized_metric": "val_loss"})
    SweepSummary().on_multirun_end(config)
    out = capsys.readouterr().out
    assert json.loads((sweep / SUMMARY_FILE).read_text())["best_job"] == "1"
    assert out.splitlines()[-1] == ("report.png not drawn: matplotlib is not installed "
                                    "(pip install 'bz-lightning[report]'); the table above is complete")
    assert "best job: 1 by val_loss" in out
    assert not (sweep / REPORT_FILE).exists()


def test_load_summary_reads_what_it_can_and_refuses_what_is_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(BzConfigError, match="SWEEP_DIR 'nowhere': no such directory"):
        load_summary("nowhere")
    with pytest.raises(BzConfigError, match="neither summary.json nor job directories"):
        load_summary(tmp_path)
    (tmp_path / SUMMARY_FILE).write_text("{not json")
    with pytest.raises(BzConfigError, match="cannot read it as a sweep summary"):
        load_summary(tmp_path)
    # A summary from another bz version: missing keys get defaults, unknown keys are kept.
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"jobs": [{"job": 0, "reused": True}], "extra": 1}))
    summary = load_summary(tmp_path)
    assert summary["jobs"] == [{"job": "0", "reused": True, "status": "complete", "metrics": {}, "overrides": [],
                                "best": False}]
    assert "  0    complete  yes     -" in format_table(summary).splitlines()


def test_without_summary_json_the_jobs_are_summarized_by_their_own_metric(sweep: Path) -> None:
    (sweep / SUMMARY_FILE).unlink()  # a sweep that was killed before its end
    summary = load_summary(sweep)
    assert summary["summarized_now"] and summary["optimized_metric"] == "val_loss" and summary["best_job"] == "1"
    assert [j["status"] for j in summary["jobs"]] == ["complete", "complete", "complete", "failed", "pruned"]


def test_quick_commands_and_cli_modules_do_not_import_matplotlib(tmp_path: Path) -> None:
    code = ("import sys, bz_lightning.cli.train, bz_lightning.cli.summary, bz_lightning.cli.report, "
            "bz_lightning.cli.runs\nfrom bz_lightning.cli.main import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in ('matplotlib', 'torch', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A real two-job bz-train sweep over the learning rate, 2 epochs with epoch checkpoints,
    its runs in ``<root>/runs``."""
    root = tmp_path_factory.mktemp("real_sweep")
    proc = subprocess.run(
        [sys.executable, "-m", "bz_lightning.cli.train", "-m", "optimizer.lr=0.001,0.02", "epochs=2",
         "checkpoint_interval=1", *QUICK, f"paths.runs_dir={root / 'runs'}", f"hydra.sweep.dir={root / 'sweep'}"],
        cwd=root, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc


@pytest.mark.slow
def test_a_real_sweep_draws_its_report_and_bz_report_prints_the_summary_table(real_sweep) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    root, proc = real_sweep
    sweep = root / "sweep"
    assert f"drew {sweep / REPORT_FILE} (2 panels: val_loss per job (lower is better); val_loss vs optimizer.lr)" \
        in proc.stdout
    assert imread(sweep / REPORT_FILE).shape == (400, 2 * 520, 4)
    (sweep / REPORT_FILE).unlink()

    shown = subprocess.run([sys.executable, "-m", "bz_lightning", "report", str(sweep)], cwd=root,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    stored = json.loads((sweep / SUMMARY_FILE).read_text())
    assert format_table(stored) in shown.stdout  # the table summary.json holds, as the sweep printed it
    assert format_table(stored) in proc.stdout
    for job in ("0", "1"):  # each row shows its job's own val_loss (metrics.json, written by the job)
        loss = json.loads((sweep / job / "metrics.json").read_text())["metrics"]["val_loss"]
        row = next(line for line in shown.stdout.splitlines() if line[:6].split() in (["*", job], [job]))
        assert f"{loss:.4f}" in row.split()
    assert imread(sweep / REPORT_FILE).shape == (400, 2 * 520, 4)  # drawn again


def stored_jobs(root: Path) -> dict[str, dict]:
    """The sweep's metrics.json records by signature: what each job said about its run."""
    records = (json.loads(p.read_text()) for p in sorted((root / "sweep").glob("*/metrics.json")))
    return {r["signature"]: r for r in records}


@pytest.mark.slow
def test_bz_runs_lists_each_run_with_its_final_metric_without_lightning(real_sweep) -> None:
    root, _ = real_sweep
    jobs = stored_jobs(root)
    runs = list_runs(root / "runs")
    assert sorted(run.signature for run in runs) == sorted(jobs) and len(jobs) == 2
    for run in runs:
        job = jobs[run.signature]
        assert (run.status, run.epochs_done, run.epochs, run.optimized_metric) == ("complete", 2, 2, "val_loss")
        assert run.value == job["metrics"]["val_loss"]
        assert Path(run.path) == Path(job["checkpoint_dir"])
        written = (Path(run.path) / "result.json").stat().st_mtime  # the last file a run writes
        assert run.date == datetime.fromtimestamp(written).isoformat(sep=" ", timespec="seconds")

    code = ("import sys\nfrom bz_lightning.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('lightning', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, "runs", "--runs-dir", str(root / "runs")], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *table, imported = proc.stdout.splitlines()
    assert imported == "[]"
    assert table[0].split() == ["signature", "date", "epochs", "optimized", "metric", "status", "path"]
    for run in runs:
        (row,) = [line for line in table if line.startswith(run.signature)]
        assert row.split()[3:] == ["2/2", "val_loss", f"{jobs[run.signature]['metrics']['val_loss']:.4f}",
                                   "complete", run.path]


@pytest.mark.slow
def test_bz_runs_shows_unfinished_unreadable_and_empty_attempts(real_sweep, tmp_path: Path) -> None:
    root, _ = real_sweep
    runs_dir = tmp_path / "runs"
    shutil.copytree(root / "runs", runs_dir)
    first, second = sorted(p.name for p in runs_dir.iterdir())
    # Killed during epoch 2: last.ckpt holds epoch 1, nothing marks the run finished.
    a = runs_dir / first / "checkpoints"
    (a / "result.json").unlink()
    (a / "epoch-2.ckpt").unlink()
    shutil.copyfile(a / "epoch-1.ckpt", a / "last.ckpt")
    # A truncated last.ckpt: the next checkpoint a resume would try is read instead.
    b = runs_dir / second / "checkpoints"
    (b / "result.json").unlink()
    (b / "last.ckpt").write_bytes((b / "last.ckpt").read_bytes()[:500])
    # A later attempt whose only checkpoint is truncated, and one killed before its first epoch ended.
    (runs_dir / second / "checkpoints-1").mkdir()
    shutil.copyfile(b / "last.ckpt", runs_dir / second / "checkpoints-1/last.ckpt")
    (runs_dir / second / "checkpoints-2").mkdir()
    (runs_dir / "notes").mkdir()  # not a run: no checkpoints directory

    runs = {(Path(r.path).parent.name, Path(r.path).name): r for r in list_runs(runs_dir)}
    assert sorted(runs) == [(first, "checkpoints"), (second, "checkpoints"), (second, "checkpoints-1"),
                            (second, "checkpoints-2")]
    seen = {key: (r.status, r.epochs_done, r.epochs, r.optimized_metric, r.value) for key, r in runs.items()}
    assert seen == {
        (first, "checkpoints"): ("unfinished", 1, 2, "val_loss", None),
        (second, "checkpoints"): ("unfinished", 2, 2, "val_loss", None),
        (second, "checkpoints-1"): ("unreadable", None, None, None, None),
        (second, "checkpoints-2"): ("empty", None, None, None, None),
    }
    table = format_runs(list(runs.values()), runs_dir)
    assert table.splitlines()[-2:] == ["unreadable checkpoints:", f"  {runs[(second, 'checkpoints-1')].error}"]
    assert runs[(second, "checkpoints-1")].error.startswith(f"{runs_dir / second / 'checkpoints-1/last.ckpt'}: ")


@pytest.mark.slow
def test_a_run_continued_past_its_result_is_unfinished(real_sweep, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = real_sweep
    runs_dir = tmp_path / "runs"
    shutil.copytree(root / "runs", runs_dir)
    signature, other = sorted(p.name for p in runs_dir.iterdir())
    shutil.rmtree(runs_dir / other)
    directory = runs_dir / signature / "checkpoints"
    # What an epochs=1 run left, then continued with epochs=2 and killed before it finished.
    result = json.loads((directory / "result.json").read_text())
    (directory / "result.json").write_text(json.dumps({**result, "epochs": 1, "epochs_completed": 1}))
    an_hour_earlier = (directory / "epoch-1.ckpt").stat().st_mtime - 3600
    os.utime(directory / "result.json", (an_hour_earlier, an_hour_earlier))
    (run,) = list_runs(runs_dir)
    assert (run.status, run.epochs_done, run.epochs, run.value) == ("unfinished", 2, 2, None)
    newest = (directory / "last.ckpt").stat().st_mtime  # the date is the newest file's
    assert run.date == datetime.fromtimestamp(newest).isoformat(sep=" ", timespec="seconds")

    # A result.json written after every checkpoint, naming its metric, is the last word:
    # no checkpoint is read (torch stays unimported for such runs).
    (directory / "result.json").write_text(json.dumps({**result, "optimized_metric": "val_accuracy"}))
    monkeypatch.setattr(runs_module, "_load", lambda path: pytest.fail(f"read {path}"))
    (run,) = list_runs(runs_dir)
    assert (run.status, run.epochs_done, run.value) == ("complete", 2, result["metrics"]["val_accuracy"])
    # A result short of its epochs (not stopped early) is what a re-run continues: no final value.
    short = {**result, "optimized_metric": "val_accuracy", "epochs": 3, "stopped_early": False}
    (directory / "result.json").write_text(json.dumps(short))
    (run,) = list_runs(runs_dir)
    assert (run.status, run.epochs_done, run.epochs, run.value) == ("unfinished", 2, 3, None)


def test_bz_runs_without_a_runs_directory_says_where_it_looked(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bz_lightning", "runs", "--runs-dir", "missing"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (f"bz runs: error: --runs-dir 'missing': no such directory "
                                           f"({tmp_path / 'missing'}); bz-train stores runs in paths.runs_dir, "
                                           "'runs' of the directory it ran in")


class _Payload:
    """Unpickling this makes a directory: proof that a checkpoint's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_bz_runs_never_runs_what_a_checkpoint_holds(tmp_path: Path) -> None:
    import torch

    directory = tmp_path / "runs/0123456789abcdef/checkpoints"
    directory.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 3, "payload": _Payload(marker)}, directory / "last.ckpt")
    (run,) = list_runs(tmp_path / "runs")
    assert run.status == "unreadable" and "last.ckpt: UnpicklingError" in (run.error or "")
    assert not marker.exists()


def optuna_sweep(sweep: Path, trials: int) -> None:
    """A sweep directory as bz's Optuna sweeper leaves it: the study in a journal file and
    its description in optuna/study.json, one job directory per trial."""
    optuna = pytest.importorskip("optuna")
    from bz_lightning.plugins.optuna_pruning import open_storage
    from hydra_plugins.bz_optuna_sweeper.sweeper import JOURNAL_FILE, STUDY_FILE

    (sweep / "optuna").mkdir(parents=True)
    journal = str(sweep / JOURNAL_FILE)
    (sweep / STUDY_FILE).write_text(json.dumps({"storage": journal, "study_name": "bz-sweep", "direction": "minimize"}))
    study = optuna.create_study(study_name="bz-sweep", storage=open_storage(journal), direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(trials):
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                           "model.dropout": optuna.distributions.FloatDistribution(0.0, 0.5)})
        loss = abs(math.log10(trial.params["optimizer.lr"]) + 2) + trial.params["model.dropout"]
        study.tell(trial, loss)
        write_job(sweep, str(number), [f"{k}={v!r}" for k, v in trial.params.items()], {"val_loss": loss})


def test_an_optuna_sweep_report_adds_optunas_history_and_importances(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sweep = tmp_path / "sweep"
    optuna_sweep(sweep, trials=6)
    import matplotlib

    def style() -> dict:  # all but the backend, which write_report sets to Agg on purpose
        return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

    before = style()
    (line,) = write_report(load_summary(sweep), sweep)
    assert style() == before  # Optuna's ggplot style sheet did not leak out
    assert line.endswith("(5 panels: val_loss per job (lower is better); val_loss vs optimizer.lr; "
                         "val_loss vs model.dropout; Optuna: optimization history; Optuna: parameter importances)")


def test_what_optuna_says_about_its_plots_is_printed_and_a_lost_study_is_not_recreated(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sweep = tmp_path / "sweep"
    optuna_sweep(sweep, trials=1)
    lines = write_report(load_summary(sweep), sweep)
    assert lines[0].endswith("(3 panels: val_loss per job (lower is better); Optuna: optimization history; "
                             "Optuna: parameter importances)")
    assert lines[1:] == ["Optuna: parameter importances: The number of trials is too small to compute "
                         "importances. Parameter importances will be equal."]
    (sweep / "optuna/journal.log").unlink()  # a storage that is gone is not created anew
    lines = write_report(load_summary(sweep), sweep)
    assert lines[0].endswith("(1 panel: val_loss per job (lower is better))")
    assert lines[1:] == [f"Optuna plots not drawn: cannot open the study of {sweep / 'optuna/study.json'}: "
                         f"FileNotFoundError: no study storage at {sweep / 'optuna/journal.log'}"]
    assert not (sweep / "optuna/journal.log").exists()
