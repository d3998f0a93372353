"""The picture of a sweep: ``report.png`` in the sweep directory, beside ``summary.json``.

One figure, one panel each for:

* ``optimized_metric`` per job: a point per job, the best one starred, pruned trials as
  triangles, jobs without a value (failed, or no such metric) named at the bottom;
* ``optimized_metric`` against each numeric swept parameter (``optimizer.lr=0.001,0.01``,
  an Optuna ``interval``...): a log x-axis when the values span two decades or more;
* for a sweep of bz's Optuna sweeper (``optuna/study.json`` in the sweep directory): Optuna's
  own optimization history and parameter importances (``optuna.visualization.matplotlib``),
  drawn from the study's storage.

``SweepSummary`` draws it at the end of every multirun, ``bz report SWEEP_DIR`` again later.
matplotlib is optional (``pip install 'bz-lightning[report]'``) and imported only here, when a
report is drawn, on the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bz_lightning.cli.summary import SUMMARY_FILE, higher_is_better, summarize
from bz_lightning.errors import BzConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["REPORT_FILE", "REPORT_EXTRA", "load_summary", "numeric_sweeps", "report_figure", "write_report"]

REPORT_FILE = "report.png"
#: What to install for the picture; the table needs nothing extra.
REPORT_EXTRA = "pip install 'bz-lightning[report]'"
# Where bz's Optuna sweeper describes its study: its STUDY_FILE, written out so that mypy does
# not follow into hydra_plugins; tests/test_results.py builds sweeps with the sweeper's own.
_STUDY_FILE = "optuna/study.json"
# Sweeps with more jobs than this get bare job numbers on the per-job axis, and no labels
# beside the points of the parameter panels.
_LABELLED_JOBS = 12
_PANEL_INCHES = (5.2, 4.0)
_COLUMNS = 3


def load_summary(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The sweep's ``summary.json``; without one (the sweep is still running, or was
    killed), the summary of the job directories it has so far.

    Every job gets the keys the table and the picture read (``job``, ``status``,
    ``metrics``, ``overrides``, ``best``), so a summary from another bz version still shows.

    Raises:
        BzConfigError: ``sweep_dir`` is no directory, its ``summary.json`` is not a summary,
            or it has neither a summary nor job directories.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise BzConfigError(f"SWEEP_DIR {str(sweep_dir)!r}: no such directory")
    path = sweep_dir / SUMMARY_FILE
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise BzConfigError(f"{path}: cannot read it as a sweep summary ({err})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("jobs"), list):
            raise BzConfigError(f"{path}: not a sweep summary (no 'jobs' list)")
    else:
        summary = summarize(sweep_dir, _optimized_metric(sweep_dir))
        if not summary["jobs"]:
            raise BzConfigError(
                f"SWEEP_DIR {str(sweep_dir)!r}: neither {SUMMARY_FILE} nor job directories (N/.hydra/, "
                "N/metrics.json); give the directory a bz-train -m run printed"
            )
        summary["summarized_now"] = True
    summary.setdefault("optimized_metric", None)
    summary.setdefault("best_job", None)
    summary["sweep_dir"] = str(sweep_dir)
    jobs = [job for job in summary["jobs"] if isinstance(job, dict)]
    for job in jobs:
        job["job"] = str(job.get("job", "?"))
        job.setdefault("status", "complete")
        job["metrics"] = job["metrics"] if isinstance(job.get("metrics"), dict) else {}
        job["overrides"] = [str(o) for o in job["overrides"]] if isinstance(job.get("overrides"), list) else []
        job["best"] = bool(job.get("best", False))
    summary["jobs"] = jobs
    return summary


def _optimized_metric(sweep_dir: Path) -> str | None:
    """What the jobs ranked by: each job's ``metrics.json`` names it."""
    from bz_lightning.cli._constants import METRICS_FILE

    for path in sorted(sweep_dir.glob(f"*/{METRICS_FILE}")):
        try:
            name = json.loads(path.read_text()).get("optimized_metric")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(name, str) and name:
            return name
    return None


def numeric_sweeps(jobs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The swept parameters whose every value is a number: ``{key: {job: value}}``.

    A key is swept when the jobs' overrides give it more than one value; Hydra's own keys
    (``hydra.*``) are not parameters. ``+key`` and ``++key`` count as ``key``.
    """
    values: dict[str, dict[str, str]] = {}
    for job in jobs:
        for line in job.get("overrides", []):
            key, sep, value = str(line).partition("=")
            key = key.lstrip("+~")
            if sep and key and not key.startswith("hydra."):
                values.setdefault(key, {})[str(job["job"])] = value
    sweeps = {}
    for key, by_job in values.items():
        numbers = {job: _number(value) for job, value in by_job.items()}
        if len(set(by_job.values())) > 1 and all(v is not None for v in numbers.values()):
            sweeps[key] = {job: float(v) for job, v in numbers.items() if v is not None}
    return sweeps


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _value(job: Mapping[str, Any], metric: str | None) -> float | None:
    value = job["metrics"].get(metric) if metric else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def report_figure(summary: Mapping[str, Any], extra_panels: Sequence[tuple[str, Any]] = ()) -> Figure:
    """The report of ``summary`` (``load_summary``'s format) as a matplotlib ``Figure``.

    Args:
        summary: the sweep summary.
        extra_panels: ``(title, RGBA image)`` pairs appended as panels (Optuna's plots).

    Returns:
        A figure made without pyplot (no window, no global state), one axes per panel:
        the per-job panel, one per ``numeric_sweeps`` parameter, then ``extra_panels``.
    """
    from matplotlib.figure import Figure

    jobs = summary["jobs"]
    sweeps = numeric_sweeps(jobs)
    count = 1 + len(sweeps) + len(extra_panels)
    columns = min(count, _COLUMNS)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(_PANEL_INCHES[0] * columns, _PANEL_INCHES[1] * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for spare in axes[count:]:
        spare.remove()
    metric = summary.get("optimized_metric")
    _per_job_panel(axes[0], jobs, metric, sweeps)
    for ax, (key, by_job) in zip(axes[1:], sweeps.items()):
        _parameter_panel(ax, jobs, metric, key, by_job)
    for ax, (title, image) in zip(axes[1 + len(sweeps):], extra_panels):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(title)
    best = summary.get("best_job")
    figure.suptitle(f"{summary.get('sweep_dir', '')}: {len(jobs)} jobs, "
                    + (f"best: job {best} by {metric}" if best is not None else "no best job"))
    return figure


def _direction(metric: str) -> str:
    return "higher is better" if higher_is_better(metric) else "lower is better"


def _scatter_by_status(ax: Axes, points: list[tuple[float, float, Mapping[str, Any]]]) -> None:
    """Plot ``(x, y, job)`` points: complete jobs as circles, pruned as triangles, the best
    one as a star. Each collection's ``gid`` is its status, for whoever reads the figure."""
    styles = {"complete": ("o", "tab:blue"), "pruned": ("v", "tab:orange")}
    for status in sorted({j["status"] for _, _, j in points if not j["best"]}):
        group = [(x, y) for x, y, j in points if not j["best"] and j["status"] == status]
        marker, color = styles.get(status, ("s", "tab:gray"))
        ax.scatter([x for x, _ in group], [y for _, y in group], marker=marker, color=color, label=status,
                   gid=status, zorder=2)
    best = [(x, y) for x, y, j in points if j["best"]]
    if best:
        ax.scatter([x for x, _ in best], [y for _, y in best], marker="*", s=220, color="tab:green", label="best",
                   gid="best", zorder=3)
    if points:
        ax.legend(fontsize="small")


def _per_job_panel(ax: Axes, jobs: Sequence[Mapping[str, Any]], metric: str | None,
                   sweeps: Mapping[str, Mapping[str, float]]) -> None:
    if not jobs:
        ax.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("per job")
        return
    points = [(float(i), v, j) for i, j in enumerate(jobs) if (v := _value(j, metric)) is not None]
    _scatter_by_status(ax, points)
    for i, job in enumerate(jobs):
        if _value(job, metric) is None:  # failed, or never reported the metric: say so
            reason = job["status"] if job["status"] != "complete" else "no value"
            ax.text(i, 0.02, reason, rotation=90, ha="center", va="bottom", color="tab:red", fontsize="small",
                    transform=ax.get_xaxis_transform())
    labels = [job["job"] for job in jobs]
    if len(jobs) <= _LABELLED_JOBS and sweeps:
        labels = [f"{job['job']}\n" + "\n".join(_short(key, by_job.get(job["job"])) for key, by_job in sweeps.items())
                  for job in jobs]
    ax.set_xticks(range(len(jobs)), labels, fontsize="small" if len(jobs) <= _LABELLED_JOBS else "x-small")
    ax.set_xlim(-0.5, len(jobs) - 0.5)
    ax.set_xlabel("job")
    if metric is None:
        ax.set_title("per job (no optimized_metric)")
        return
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per job ({_direction(metric)})")
    if not points:
        ax.text(0.5, 0.5, f"no job reported {metric}", ha="center", va="center", transform=ax.transAxes)


def _short(key: str, value: float | None) -> str:
    return f"{key.rsplit('.', 1)[-1]}={'-' if value is None else f'{value:.3g}'}"


def _parameter_panel(ax: Axes, jobs: Sequence[Mapping[str, Any]], metric: str | None, key: str,
                     by_job: Mapping[str, float]) -> None:
    points = [(by_job[j["job"]], v, j) for j in jobs if j["job"] in by_job and (v := _value(j, metric)) is not None]
    _scatter_by_status(ax, points)
    if len(points) <= _LABELLED_JOBS:
        for x, y, job in points:
            ax.annotate(job["job"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
    values = list(by_job.values())
    if min(values) > 0 and max(values) / min(values) >= 10:  # learning rates, batch sizes...
        ax.set_xscale("log")
    ax.margins(0.12)
    ax.set_xlabel(key)
    ax.set_ylabel(metric or "")
    ax.set_title(f"{metric} vs {key}")
    if not points:
        ax.text(0.5, 0.5, f"no job reported {metric}", ha="center", va="center", transform=ax.transAxes)


def write_report(summary: Mapping[str, Any], sweep_dir: str | os.PathLike[str]) -> list[str]:
    """Draw ``report.png`` into ``sweep_dir`` (atomically) and say what was drawn.

    Returns:
        Lines for the console: ``drew <path> (N panels: ...)``, or one line naming the extra
        to install when matplotlib is missing; plus one line for each Optuna plot that could
        not be drawn, with the reason.
    """
    sweep_dir = Path(sweep_dir)
    try:
        import matplotlib
    except ImportError:
        return [f"{REPORT_FILE} not drawn: matplotlib is not installed ({REPORT_EXTRA}); the table above is complete"]
    matplotlib.use("Agg")  # before pyplot, which Optuna's plots use: never a window
    notes: list[str] = []
    panels = list(_optuna_panels(sweep_dir, notes))
    figure = report_figure(summary, panels)
    titles = [ax.get_title() for ax in figure.axes]
    path = sweep_dir / REPORT_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_FILE}.", dir=sweep_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            figure.savefig(f, format="png", dpi=100, metadata={
                "Title": f"bz sweep report: {sweep_dir}", "Description": "; ".join(titles)})
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    count = f"{len(titles)} panel{'s' if len(titles) != 1 else ''}"
    return [f"drew {path} ({count}: {'; '.join(titles)})", *notes]


def _optuna_panels(sweep_dir: Path, notes: list[str]) -> Iterator[tuple[str, Any]]:
    """Optuna's optimization history and parameter importances of the sweep's study, each
    rendered to an RGBA image; nothing for a sweep without ``optuna/study.json``. What cannot
    be drawn is added to ``notes`` with the reason."""
    study_file = sweep_dir / _STUDY_FILE
    if not study_file.is_file():
        return
    try:
        import optuna
    except ImportError:
        notes.append("Optuna plots not drawn: optuna is not installed (pip install 'bz-lightning[optuna]')")
        return
    try:
        study = _load_study(study_file)
    except Exception as err:  # a storage gone, moved or unreadable: the rest of the report stands
        notes.append(f"Optuna plots not drawn: cannot open the study of {study_file}: {type(err).__name__}: {err}")
        return
    from optuna.visualization import matplotlib as optuna_plots

    for title, plot in (("Optuna: optimization history", optuna_plots.plot_optimization_history),
                        ("Optuna: parameter importances", optuna_plots.plot_param_importances)):
        try:
            with _optuna_warnings(optuna) as caught:
                image = _rendered(plot(study))
        except Exception as err:  # an evaluator's own dependency missing, a study it cannot plot
            notes.append(f"{title} not drawn: {type(err).__name__}: {err}")
            continue
        # What Optuna warns about a plot (e.g. too few trials: importances all equal) goes with it.
        notes.extend(dict.fromkeys(f"{title}: {warning.message}" for warning in caught))
        yield title, image


def _load_study(study_file: Path) -> Any:
    """The study the sweeper described in ``study_file``, opened without creating anything:
    a journal file or SQLite database that is not there is an error, not a new empty study."""
    import optuna

    from bz_lightning.plugins.optuna_pruning import open_storage

    spec = json.loads(study_file.read_text())
    storage, name = str(spec["storage"]), str(spec["study_name"])
    local = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None
    if "://" not in storage:
        local = storage
    if local is not None and not Path(local).is_file():
        raise FileNotFoundError(f"no study storage at {local}")
    return optuna.load_study(study_name=name, storage=open_storage(storage))


@contextmanager
def _optuna_warnings(optuna: Any) -> Iterator[list[warnings.WarningMessage]]:
    """Around one of Optuna's matplotlib plots: its global style sheet stays inside, the
    warning that the plots are experimental is dropped, and every other warning is
    collected into the list yielded."""
    import matplotlib

    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context():
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield caught


def _rendered(ax: Any) -> Any:
    """The pixels of the pyplot figure holding ``ax``; the figure is closed."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure = ax.figure
    try:
        figure.tight_layout()  # Optuna's layout cuts long parameter names short
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba()).copy()
    finally:
        plt.close(figure)
