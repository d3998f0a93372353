"""``bz runs``: the runs stored under ``paths.runs_dir``, one row per attempt directory.

bz-train keeps every run in ``<runs_dir>/<signature>/checkpoints`` (``checkpoints-N`` for a
later ``resume=never`` start): ``last.ckpt`` at every epoch end, ``epoch-N.ckpt`` every
``checkpoint_interval`` epochs, ``result.json`` once the run finished. This module reads
them as data: JSON with ``json``, checkpoints with ``torch.load(weights_only=True,
mmap=True)`` (so the weights stay on disk), and never imports Lightning (5 to 10 s); the
layout helpers of ``bz_lightning.checkpointing`` import it, so the few lines that walk the
layout are written out here.

A checkpoint is read for what ``result.json`` does not hold: the run's config (which
metric it optimizes, how many epochs it is to train) and the progress of an unfinished run.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bz_lightning.errors import BzConfigError

__all__ = ["StoredRun", "list_runs", "format_runs", "runs_as_json"]

_ATTEMPT = re.compile(r"^checkpoints(?:-(\d+))?$")
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.ckpt$")
_RESULT = "result.json"
_LAST = "last.ckpt"
# Where bz-train keeps the resolved config in a checkpoint (bz_lightning.cli._build.CONFIG_KEY).
_CONFIG_KEY = "bz_config"


@dataclass
class StoredRun:
    """One attempt directory of a stored run.

    Attributes:
        signature: the run's signature (its directory's name).
        path: the attempt directory (``.../checkpoints`` or ``.../checkpoints-N``).
        status: ``complete`` (``result.json``: all epochs done), ``stopped early``,
            ``unfinished`` (checkpoints but no final result: killed, preempted, still
            running, or continued past an earlier result), ``unreadable`` (no result and
            no checkpoint that loads) or ``empty``.
        date: when the newest of its files was written (local time, ISO format).
        epochs_done: epochs completed (``result.json``, else the newest checkpoint).
        epochs: the epochs the run is to train, when known.
        optimized_metric: the name of the metric its config optimizes, when known.
        value: that metric's final value; ``None`` unless the run finished.
        error: why a checkpoint could not be read, when none could.
    """

    signature: str
    path: str
    status: str
    date: str | None = None
    epochs_done: int | None = None
    epochs: int | None = None
    optimized_metric: str | None = None
    value: float | None = None
    error: str | None = None


def list_runs(runs_dir: str | os.PathLike[str]) -> list[StoredRun]:
    """Every attempt directory under ``runs_dir``, oldest first.

    Raises:
        BzConfigError: ``runs_dir`` is not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise BzConfigError(f"--runs-dir {str(runs_dir)!r}: no such directory ({root.resolve()}); "
                            "bz-train stores runs in paths.runs_dir, 'runs' of the directory it ran in")
    runs = [_read_attempt(run.name, attempt)
            for run in sorted(p for p in root.iterdir() if p.is_dir())
            for attempt in _attempts(run)]
    return sorted(runs, key=lambda r: (r.date or "", r.signature, r.path))


def _attempts(run_dir: Path) -> list[Path]:
    """``checkpoints``, ``checkpoints-1``, ... in the order bz-train made them."""
    found = [(int(m.group(1) or 0), p) for p in run_dir.iterdir() if p.is_dir() and (m := _ATTEMPT.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_attempt(signature: str, directory: Path) -> StoredRun:
    run = StoredRun(signature=signature, path=str(directory), status="empty")
    names = os.listdir(directory)
    written = {n: (directory / n).stat().st_mtime_ns for n in names if n == _RESULT or n.endswith(".ckpt")}
    if written:
        run.date = datetime.fromtimestamp(max(written.values()) / 1e9).isoformat(sep=" ", timespec="seconds")
    result = _read_json(directory / _RESULT) if _RESULT in names else None
    run.optimized_metric = _text(result.get("optimized_metric")) if result else None
    checkpoint = config = None
    # result.json is written after the last checkpoint of a run; only what it lacks, or a
    # checkpoint written after it (the run was continued), makes torch load a checkpoint.
    if result is None or run.optimized_metric is None or max(written.values()) > written[_RESULT]:
        checkpoint, run.error = _newest_checkpoint(directory, names)
        config = _config(checkpoint)
        run.optimized_metric = run.optimized_metric or _text(config.get("optimized_metric"))
    progress = _progress(checkpoint) if checkpoint is not None else None
    done = _int(result.get("epochs_completed")) if result else None
    # A finished run continued with more epochs: its checkpoint is past its result.
    if result is not None and (progress is None or done is None or progress <= (done, 0)):
        run.epochs_done, run.epochs = done, _int(result.get("epochs"))
        if result.get("stopped_early"):
            run.status = "stopped early"
        elif done is not None and run.epochs is not None and done >= run.epochs:
            run.status = "complete"
        else:  # what a re-run would continue (bz's is_finished)
            run.status = "unfinished"
        if run.status != "unfinished" and isinstance(result.get("metrics"), Mapping) and run.optimized_metric:
            run.value = _float(result["metrics"].get(run.optimized_metric))
    elif progress is not None:
        run.status, run.epochs_done, run.epochs = "unfinished", progress[0], _int((config or {}).get("epochs"))
    elif run.error is not None:
        run.status = "unreadable"
    return run


def _newest_checkpoint(directory: Path, names: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """The newest checkpoint that loads (``last.ckpt``, then ``epoch-N.ckpt`` from the
    highest N down, the order a resume tries them) and the first error met, if any."""
    epochs = sorted((int(m.group(1)) for m in map(_EPOCH_FILE.match, names) if m), reverse=True)
    candidates = ([_LAST] if _LAST in names else []) + [f"epoch-{n}.ckpt" for n in epochs]
    error = None
    for name in candidates:
        try:
            checkpoint = _load(directory / name)
        except Exception as err:  # truncated, not a checkpoint, refused by weights_only
            error = error or f"{directory / name}: {type(err).__name__}: {err}"
            continue
        return checkpoint, error
    return None, error


def _load(path: Path) -> dict[str, Any]:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"not a checkpoint (a {type(checkpoint).__name__})")
    return checkpoint


def _config(checkpoint: Mapping[str, Any] | None) -> Mapping[str, Any]:
    hyper = checkpoint.get("hyper_parameters") if checkpoint else None
    config = hyper.get(_CONFIG_KEY) if isinstance(hyper, Mapping) else None
    return config if isinstance(config, Mapping) else {}


def _progress(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(epochs completed, batches into the next epoch)`` of a checkpoint.

    Lightning stores the epoch in progress, which has not advanced yet at an epoch end; a
    mid-epoch checkpoint (SIGTERM) says how many batches of that epoch it holds."""
    epoch = _int(checkpoint.get("epoch"))
    if epoch is None:
        return None
    states = checkpoint.get("callbacks")
    mid = None
    if isinstance(states, Mapping):
        for key, state in states.items():
            if str(key).startswith("ResumeCheckpoint") and isinstance(state, Mapping):
                mid = state.get("mid_epoch")
    consumed = _int(mid.get("consumed")) if isinstance(mid, Mapping) else None
    return (epoch, consumed) if consumed else (epoch + 1, 0)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def format_runs(runs: list[StoredRun], runs_dir: str | os.PathLike[str]) -> str:
    """The runs as an aligned table; unknown values show as ``-``."""
    if not runs:
        return f"no runs stored under {runs_dir}"
    header = ["signature", "date", "epochs", "optimized metric", "status", "path"]
    rows = [header]
    for run in runs:
        epochs = "-" if run.epochs_done is None else f"{run.epochs_done}/{'-' if run.epochs is None else run.epochs}"
        metric = run.optimized_metric or "-"
        if run.optimized_metric:
            metric += f" {run.value:.4f}" if run.value is not None else " -"
        rows.append([run.signature, run.date or "-", epochs, metric, run.status, run.path])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    errors = [f"  {run.error}" for run in runs if run.status == "unreadable" and run.error]
    return "\n".join(lines + (["unreadable checkpoints:", *errors] if errors else []))


def runs_as_json(runs: list[StoredRun]) -> str:
    """The runs as a JSON list of objects with ``StoredRun``'s fields."""
    return json.dumps([asdict(run) for run in runs], indent=2)
