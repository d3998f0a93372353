"""``RunCheckpoints``: the checkpointing of one ``Trainer.train`` call, in one place.

It decides where the run's checkpoints live and what it continues from (``plan_resume``),
and supplies what Lightning needs to write and read them: the loader wrapper behind exact
mid-epoch resume, the callbacks (``epoch-N.ckpt`` before the bridge, ``last.ckpt`` after
every other callback), the atomic ``CheckpointIO`` and the ``ckpt_path`` to restore.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bz_lightning.checkpointing.callbacks import EpochCheckpoint, ResumeCheckpoint
from bz_lightning.checkpointing.failures import CheckpointErrorPolicy, CheckpointWrites, GuardedCheckpointIO
from bz_lightning.checkpointing.io import remove_stale_temp_files
from bz_lightning.checkpointing.resume import (
    RESULT_FILE,
    ResumeMode,
    ResumePlan,
    checkpoint_directory,
    is_finished,
    plan_resume,
    write_finished_run,
)
from bz_lightning.checkpointing.rng import ReplayState, resumable_loader
from bz_lightning.checkpointing.signature import compute_training_signature

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from bz_lightning.bridge import LifecycleCallback

__all__ = ["RunCheckpoints"]

log = logging.getLogger("bz_lightning")


class RunCheckpoints:
    """Checkpoints of one run: ``<runs_root>/<signature>/checkpoints`` unless a directory is given.

    Args:
        plan: what ``plan_resume`` decided for this run.
        signature: the run's signature (``compute_training_signature``).
        resume: the resume mode the plan was made with.
        on_checkpoint_error: what a failing write does (see ``CheckpointWrites``).
    """

    def __init__(self, plan: ResumePlan, signature: str, resume: ResumeMode,
                 on_checkpoint_error: CheckpointErrorPolicy = "log") -> None:
        self.plan = plan
        self.signature = signature
        self.resume = resume
        self.writes = CheckpointWrites(on_checkpoint_error)
        self.replay = ReplayState()
        self.last = ResumeCheckpoint(plan.directory, signature, self.replay, self.writes)

    @classmethod
    def open(
        cls,
        *,
        model: Any,
        optimizer: Any,
        loss_fn: Any,
        config: Mapping[str, Any],
        checkpoint_dir: str | None,
        runs_root: str | None,
        resume: ResumeMode,
        on_checkpoint_error: CheckpointErrorPolicy = "log",
    ) -> RunCheckpoints:
        """Compute the signature, plan the resume and clear temp files killed writers left."""
        signature = compute_training_signature(model, optimizer, loss_fn, config)
        base = checkpoint_dir if checkpoint_dir is not None else checkpoint_directory(runs_root or "runs", signature)
        plan = plan_resume(base, resume, signature)
        remove_stale_temp_files(plan.directory)
        return cls(plan, signature, resume, on_checkpoint_error)

    @property
    def directory(self) -> Path:
        return self.plan.directory

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint ``fit`` restores, or ``None`` for a fresh start."""
        return str(self.plan.checkpoint_path) if self.plan.checkpoint_path else None

    def finished_result(self, epochs: int) -> dict[str, Any] | None:
        """The stored result when this run already finished ``epochs`` epochs (or stopped early)."""
        if self.resume != "never" and is_finished(self.plan.finished, epochs):
            log.info("run %s already finished (%s); reusing its result", self.signature, self.directory / RESULT_FILE)
            return self.plan.finished
        return None

    def wrap_loader(self, loader: Iterable[Any]) -> Iterable[Any]:
        """The training loader, recording what exact mid-epoch resume needs."""
        return resumable_loader(loader, self.replay)

    def callbacks(self, bridge: LifecycleCallback, interval: int) -> tuple[list[pl.Callback], list[pl.Callback]]:
        """Lightning callbacks to put ``(before, after)`` all others: ``epoch-N.ckpt`` is
        written before the bridge's ``end_epoch`` (bz fires ``save_checkpoint`` first), and
        ``last.ckpt`` after every callback's epoch end, so it holds the complete state."""
        before: list[pl.Callback] = [EpochCheckpoint(self.directory, interval, bridge, self.writes)] if interval else []
        return before, [self.last]

    def checkpoint_io(self) -> GuardedCheckpointIO:
        """The atomic ``CheckpointIO`` (its writes under the run's ``on_checkpoint_error``),
        holding the checkpoint already read while planning."""
        io = GuardedCheckpointIO(self.writes)
        plan = self.plan
        if plan.checkpoint_path is not None and plan.checkpoint is not None:
            io.preload(plan.checkpoint_path, plan.checkpoint)
            into = f", {plan.batches_into_epoch} batches into epoch {plan.epoch + 1}" if plan.batches_into_epoch else ""
            log.info("resuming run %s from %s (epoch %d done%s)", self.signature, plan.checkpoint_path, plan.epoch, into)
        return io

    def is_preemption(self, stop: BaseException) -> bool:
        """Whether ``stop`` is the ``Preempted`` this run's SIGTERM handler raised."""
        return stop is self.last.preempted

    def store_result(self, result: Mapping[str, Any]) -> None:
        """Mark the run finished (``result.json``), so a re-run reuses it instead of training;
        a failing write is handled as a checkpoint's (``on_checkpoint_error``)."""
        epoch = max(int(result.get("epochs_completed", 1)) - 1, 0)
        self.writes.run(self.directory / RESULT_FILE, epoch,
                        lambda: write_finished_run(self.directory, {"signature": self.signature, **result}))
