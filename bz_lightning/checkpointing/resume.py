"""Where a run's checkpoints live and which one a re-run continues from.

Layout (``runs_root`` is the CLI's ``paths.runs_dir``, ``runs`` for ``Trainer.train``)::

    <runs_root>/<signature>/checkpoints/epoch-N.ckpt   every checkpoint_interval epochs
    <runs_root>/<signature>/checkpoints/last.ckpt      every epoch end, and on SIGTERM
    <runs_root>/<signature>/checkpoints/final-weights.pt  the model's weights when it finished
    <runs_root>/<signature>/checkpoints/result.json    written last, when the run finished
    <runs_root>/<signature>/checkpoints-1/ ...         a later resume="never" start

``resume="auto"`` continues in the newest attempt directory (the highest suffix).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bz_lightning.checkpointing.callbacks import LAST, SIGNATURE_KEY, SIGNATURE_PARTS_KEY, epoch_checkpoint_name
from bz_lightning.checkpointing.io import load_checkpoint, write_json
from bz_lightning.errors import BzCheckpointError, BzConfigError, did_you_mean

__all__ = [
    "FINAL_WEIGHTS_FILE",
    "RESULT_FILE",
    "ResumeMode",
    "ResumePlan",
    "checkpoint_directory",
    "find_latest_checkpoint_epoch",
    "plan_resume",
    "read_finished_run",
    "run_directory",
    "write_finished_run",
]

log = logging.getLogger("bz_lightning")

ResumeMode = Literal["auto", "never", "must"]
RESULT_FILE = "result.json"
#: The model's weights at the end of a finished run (after plugins such as early stopping
#: restored their best weights): what a reused run loads into the caller's model.
FINAL_WEIGHTS_FILE = "final-weights.pt"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.ckpt$")


def run_directory(runs_root: str | os.PathLike[str], signature: str) -> Path:
    """``<runs_root>/<signature>``: the stable directory of every run with this signature."""
    return Path(runs_root) / signature


def checkpoint_directory(runs_root: str | os.PathLike[str], signature: str) -> Path:
    """``<runs_root>/<signature>/checkpoints``: the first attempt's checkpoint directory."""
    return run_directory(runs_root, signature) / "checkpoints"


def find_latest_checkpoint_epoch(checkpoint_dir: str | os.PathLike[str]) -> int | None:
    """How many epochs the newest checkpoint in ``checkpoint_dir`` holds, or ``None``.

    That is the highest N among ``epoch-N.ckpt`` files, or the epochs completed in
    ``last.ckpt`` when that is more (``last.ckpt`` is written every epoch, ``epoch-N.ckpt``
    only every ``checkpoint_interval`` epochs, never with an interval of 0). ``last.ckpt``
    is read (``weights_only=True``) for its epoch; an unreadable one is logged and left
    out. See ``plan_resume`` for which file a re-run actually loads.
    """
    names = _names(checkpoint_dir)
    latest = max(_epochs(names), default=None)
    if LAST in names:
        try:
            done = completed_epochs(load_checkpoint(Path(checkpoint_dir) / LAST, map_location="cpu"))
        except BzCheckpointError as err:
            log.error("%s; not counted as the latest checkpoint", err)
        else:
            latest = done if latest is None else max(latest, done)
    return latest


def completed_epochs(checkpoint: Mapping[str, Any]) -> int:
    """Epochs completed in a bz checkpoint: Lightning stores the epoch in progress, which at
    an epoch end has not advanced yet; a mid-epoch (SIGTERM) checkpoint is inside it."""
    epoch = int(checkpoint.get("epoch", 0))
    return epoch if _batches_into_epoch(checkpoint) else epoch + 1


def _batches_into_epoch(checkpoint: Mapping[str, Any] | None) -> int:
    state = _resume_state(checkpoint)
    mid = state.get("mid_epoch") if state else None
    return int(mid["consumed"]) if mid else 0


def _epochs(names: list[str]) -> list[int]:
    """The N of every ``epoch-N.ckpt`` among ``names``."""
    return [int(m.group(1)) for m in map(_EPOCH_FILE.match, names) if m]


def _names(directory: str | os.PathLike[str]) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def attempt_directories(base: str | os.PathLike[str]) -> list[Path]:
    """``base`` and its existing ``base-1``, ``base-2``, ... siblings, oldest first."""
    base = Path(base)
    pattern = re.compile(rf"^{re.escape(base.name)}-(\d+)$")
    found = [(0, base)] if base.is_dir() else []
    for name in _names(base.parent):
        match = pattern.match(name)
        if match and (base.parent / name).is_dir():
            found.append((int(match.group(1)), base.parent / name))
    return [path for _, path in sorted(found)]


def _has_run(directory: Path) -> bool:
    return any(n.endswith(".ckpt") or n == RESULT_FILE for n in _names(directory))


def _candidates(directory: Path) -> list[Path]:
    """``last.ckpt`` first, then ``epoch-N.ckpt`` from the highest N down."""
    names = _names(directory)
    found = [directory / LAST] if LAST in names else []
    return found + [directory / epoch_checkpoint_name(n) for n in sorted(_epochs(names), reverse=True)]


@dataclass
class ResumePlan:
    """What ``plan_resume`` decided.

    Attributes:
        directory: where this run writes its checkpoints.
        checkpoint_path: the checkpoint to continue from, or ``None`` to start fresh.
        checkpoint: that checkpoint's contents (already read with ``weights_only=True``).
        finished: the stored ``result.json`` when the run in ``directory`` had finished.
        errors: unreadable checkpoints that were skipped, one message each.
    """

    directory: Path
    checkpoint_path: Path | None = None
    checkpoint: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """Epochs completed in the checkpoint (0 without one)."""
        return completed_epochs(self.checkpoint) if self.checkpoint else 0

    @property
    def batches_into_epoch(self) -> int:
        """Batches already trained in the checkpoint's unfinished epoch (0 at an epoch end)."""
        return _batches_into_epoch(self.checkpoint)


def _resume_state(checkpoint: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not checkpoint:
        return None
    for key, state in checkpoint.get("callbacks", {}).items():
        if str(key).startswith("ResumeCheckpoint"):
            return state
    return None


def plan_resume(checkpoint_dir: str | os.PathLike[str], resume: ResumeMode, signature: str,
                parts: dict[str, str] | None = None) -> ResumePlan:
    """Decide where a run writes its checkpoints and which one it continues from.

    * ``"auto"``: the newest attempt directory (``checkpoint_dir`` or its highest
      ``checkpoint_dir-N`` sibling); its newest *readable* checkpoint (``last.ckpt``, else
      ``epoch-N.ckpt`` from the highest N down) is continued; unreadable ones are logged as
      errors and skipped. Nothing readable: start fresh there.
    * ``"never"``: start fresh; if the newest attempt directory already holds checkpoints or
      a result, a new sibling ``checkpoint_dir-<n+1>`` is used, so nothing is overwritten.
    * ``"must"``: like ``"auto"``, but nothing readable raises ``BzCheckpointError``.

    A ``result.json`` in that directory is kept as ``finished`` only when it records this
    ``signature``.

    Raises:
        BzConfigError: ``resume`` is not one of the three modes.
        BzCheckpointError: ``"must"`` found nothing to continue from (the message names the
            directory searched), or a checkpoint belongs to another signature (the message
            says which parts of it differ when ``parts`` is given).
    """
    if resume not in get_args(ResumeMode):
        raise BzConfigError(
            f"resume must be one of {', '.join(map(repr, get_args(ResumeMode)))}, got {resume!r}"
            f"{did_you_mean(str(resume), get_args(ResumeMode))}"
        )
    base = Path(checkpoint_dir)
    attempts = attempt_directories(base)
    newest = attempts[-1] if attempts else base
    if resume == "never":
        if _has_run(newest):
            suffix = int(newest.name.rsplit("-", 1)[1]) + 1 if newest != base else 1
            newest = base.parent / f"{base.name}-{suffix}"
        return ResumePlan(directory=newest)
    finished = read_finished_run(newest)
    if finished is not None and finished.get("signature") != signature:
        finished = None  # (a checkpoint of that run is refused below)
    plan = ResumePlan(directory=newest, finished=finished)
    for path in _candidates(newest):
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
        except BzCheckpointError as err:
            log.error("%s; falling back to an older checkpoint", err)
            plan.errors.append(str(err))
            continue
        found = checkpoint.get(SIGNATURE_KEY)
        if found != signature:
            raise BzCheckpointError(
                f"{path} belongs to a run with signature {found!r}, not this run's {signature!r}: "
                f"{_what_changed(checkpoint.get(SIGNATURE_PARTS_KEY), parts)} changed; pass resume='never' to start "
                "fresh beside it, or use another checkpoint directory"
            )
        plan.checkpoint_path, plan.checkpoint = path, checkpoint
        break
    if plan.checkpoint_path is None and resume == "must":
        tried = f" (unreadable: {'; '.join(plan.errors)})" if plan.errors else ""
        raise BzCheckpointError(
            f"resume='must' but there is no checkpoint to continue from in {newest}{tried}; "
            "run once with resume='auto' or resume='never' first"
        )
    return plan


def _what_changed(theirs: Any, ours: dict[str, str] | None) -> str:
    """``"the code and the data"``: the parts of the signature that differ, when both are known."""
    if not isinstance(theirs, dict) or not ours:
        return "something that defines the run"
    changed = [name for name in ours if theirs.get(name) != ours[name]]
    if not changed:
        return "something that defines the run"
    names = [f"the {name}" for name in changed]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def read_finished_run(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``result.json`` a finished run left in ``checkpoint_dir``, or ``None``.

    Its keys: ``signature``, ``signature_parts``, ``epochs``, ``epochs_completed``,
    ``stopped_early``, ``metrics`` (``TrainingResult.metrics``), ``training_metrics``,
    ``validation_metrics``, ``training_loss``, ``validation_loss``, ``context`` (the final
    ``PluginContext``'s epoch, totals, counts and metrics), ``skipped_batches``,
    ``warnings``, ``duration_s``, ``finished_at``.
    """
    path = Path(checkpoint_dir) / RESULT_FILE
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.error("cannot read %s (%s); treating the run as unfinished", path, err)
        return None
    return data if isinstance(data, dict) else None


def write_finished_run(checkpoint_dir: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``result.json`` atomically into ``checkpoint_dir``; return its path."""
    path = Path(checkpoint_dir) / RESULT_FILE
    write_json(path, data)
    return path
