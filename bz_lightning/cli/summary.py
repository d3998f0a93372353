"""``SweepSummary``: a Hydra callback that ends every multirun with a table of its jobs.

Each job of bz-train writes ``<job output dir>/metrics.json``; at the end of the sweep this
callback reads them, writes ``<sweep dir>/summary.json`` and prints one row per job (its
status, whether its result was reused, overrides and final metrics) with the best job, by
``optimized_metric``, marked. The status is ``complete``, ``pruned`` (an Optuna trial
stopped early), ``preempted`` (SIGTERM) or ``failed`` (the job raised: its error is
recorded in its ``metrics.json`` and shown under the table; or it left no ``metrics.json``
at all, killed). Then it draws ``<sweep dir>/report.png`` (``bz_lightning.cli.report``;
needs matplotlib).

The summary is written even when a job fails and Hydra ends the sweep with an error:
``on_multirun_start`` remembers the sweep, and ``bz-train`` calls ``finish_pending`` on its
way out when ``on_multirun_end`` never came.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bz_lightning._atomic import write_json
from bz_lightning.cli._constants import METRICS_FILE

__all__ = ["SweepSummary", "summarize", "format_table", "higher_is_better", "finish_pending", "record_job_end"]

log = logging.getLogger("bz_lightning.cli")

SUMMARY_FILE = "summary.json"
# Final metrics where smaller is better; everything else (accuracy, f1...) is maximised.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "error")


def higher_is_better(metric: str) -> bool:
    """``val_accuracy`` -> True, ``val_loss`` -> False."""
    return not any(word in metric for word in _LOWER_IS_BETTER)


def summarize(sweep_dir: str | Path, optimized_metric: str | None) -> dict[str, Any]:
    """Collect the ``metrics.json`` of every job under ``sweep_dir`` into one summary."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    # A job directory is one with Hydra's record of the job (.hydra/) or with bz's metrics;
    # a job that has the first but not the second failed before it finished.
    job_dirs = {p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")}
    job_dirs |= {p.parent for p in sweep_dir.glob(f"*/{METRICS_FILE}")}
    for job_dir in sorted(job_dirs, key=lambda p: (len(p.name), p.name)):
        path = job_dir / METRICS_FILE
        try:
            record = json.loads(path.read_text())
            record.setdefault("status", "complete")
        except FileNotFoundError:
            record = {"status": "failed", "error": f"the job did not finish (no {METRICS_FILE})"}
        except (OSError, ValueError) as err:
            record = {"status": "failed", "error": f"cannot read {path}: {err}"}
        record.setdefault("metrics", {})
        record.setdefault("overrides", _hydra_overrides(job_dir))
        jobs.append({"job": job_dir.name, **record})
    best = None
    if optimized_metric:
        scored = [j for j in jobs if isinstance(j["metrics"].get(optimized_metric), (int, float))]
        scored = [j for j in scored if math.isfinite(j["metrics"][optimized_metric])]
        if scored:
            pick = max if higher_is_better(optimized_metric) else min
            best = pick(scored, key=lambda j: j["metrics"][optimized_metric])["job"]
    for job in jobs:
        job["best"] = job["job"] == best
    return {"sweep_dir": str(sweep_dir), "optimized_metric": optimized_metric, "best_job": best, "jobs": jobs}


def _hydra_overrides(job_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned text table; the best job's row starts with ``*``."""
    jobs = summary["jobs"]
    if not jobs:
        return f"sweep summary: no job wrote {METRICS_FILE} under {summary['sweep_dir']}"
    names = sorted({k for j in jobs for k in j["metrics"]})
    metric = summary["optimized_metric"]
    if metric in names:  # the ranked metric first
        names.remove(metric)
        names.insert(0, metric)
    header = ["", "job", "status", "reused", "overrides", *names]
    rows = [
        ["*" if j["best"] else "", j["job"], j.get("status", "complete"), "yes" if j.get("reused") else "-",
         " ".join(j.get("overrides", [])) or "-", *(_fmt(j["metrics"].get(n)) for n in names)]
        for j in jobs
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    errors = [f"job {j['job']} {j['status']}: {j['error']}" for j in jobs if j.get("error")]
    best = summary["best_job"]
    footer = f"best job: {best} by {metric}" if best is not None else "best job: none (no job reported the metric)"
    return "\n".join(["sweep summary:", *lines, *errors, footer, f"saved {summary['sweep_dir']}/{SUMMARY_FILE}"])


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: str | Path, optimized_metric: str | None) -> dict[str, Any] | None:
    """Summarize the sweep, write ``summary.json`` (atomically) and print the table."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return None
    summary = summarize(sweep_dir, optimized_metric)
    write_json(sweep_dir / SUMMARY_FILE, summary)
    print(format_table(summary), flush=True)
    try:
        from bz_lightning.cli.report import write_report

        print(*write_report(summary, sweep_dir), sep="\n", flush=True)
    except Exception:  # the picture is a bonus: summary.json and the table above stand
        log.exception("report.png not drawn in %s", sweep_dir)
    return summary


#: The sweep this process started and has not summarized yet: (sweep dir, optimized metric).
_pending: tuple[str, str | None] | None = None


def finish_pending() -> None:
    """Write the summary of a sweep that ended without ``on_multirun_end`` (Hydra ends a
    sweep with the first failed job's error, skipping it)."""
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        write_summary(*pending)


def record_job_end(output_dir: str | Path, status: str, error: BaseException) -> None:
    """Write the ``metrics.json`` of a job that did not finish: its status and error."""
    record = {"status": status, "error": f"{type(error).__name__}: {error}", "metrics": {},
              "overrides": _hydra_overrides(Path(output_dir))}
    write_json(Path(output_dir) / METRICS_FILE, record)


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary`` in ``train.yaml``)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _pending
        _pending = (str(config.hydra.sweep.dir), config.get("optimized_metric"))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if getattr(job_return, "status", None) != JobStatus.FAILED:
            return
        try:
            job_return.return_value  # raises the job's exception  # noqa: B018
        except Exception as err:  # noqa: BLE001 - recorded, then Hydra raises it itself
            output_dir = config.hydra.runtime.output_dir
            if output_dir and Path(output_dir).is_dir():
                record_job_end(output_dir, "failed", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _pending
        _pending = None
        write_summary(config.hydra.sweep.dir, config.get("optimized_metric"))
