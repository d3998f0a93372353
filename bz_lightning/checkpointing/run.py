"""``RunCheckpoints``: the checkpointing of one ``Trainer.train`` call, in one place.

It decides what the run is (its signature), where its checkpoints live and what it
continues from (``plan_resume``), supplies what Lightning needs to write and read them (the
loader wrapper behind exact mid-epoch resume, the callbacks, the atomic ``CheckpointIO``
and the ``ckpt_path`` to restore), and records a finished run (``final-weights.pt``, then
``result.json``) so that running it again reuses the result instead of training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bz_lightning.checkpointing.callbacks import SIGNATURE_KEY, EpochCheckpoint, ResumeCheckpoint
from bz_lightning.checkpointing.failures import CheckpointErrorPolicy, CheckpointWrites, GuardedCheckpointIO
from bz_lightning.checkpointing.io import (
    CHECKPOINT_VERSION,
    VERSION_KEY,
    atomic_write_bytes,
    load_checkpoint,
    remove_stale_temp_files,
    to_plain,
)
from bz_lightning.checkpointing.resume import (
    FINAL_WEIGHTS_FILE,
    RESULT_FILE,
    ResumeMode,
    ResumePlan,
    checkpoint_directory,
    plan_resume,
    write_finished_run,
)
from bz_lightning.checkpointing.rng import ReplayState, resumable_loader
from bz_lightning.checkpointing.signature import signature_of, signature_parts, signature_payload
from bz_lightning.errors import BzCheckpointError

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch import nn

    from bz_lightning.bridge import LifecycleCallback

__all__ = ["RunCheckpoints"]

log = logging.getLogger("bz_lightning")


class RunCheckpoints:
    """Checkpoints of one run: ``<runs_root>/<signature>/checkpoints`` unless a directory is given.

    Args:
        plan: what ``plan_resume`` decided for this run.
        signature: the run's signature (``compute_training_signature``).
        resume: the resume mode the plan was made with.
        parts: a short hash of each part of the signature (``signature_parts``).
        on_checkpoint_error: what a failing write does (see ``CheckpointWrites``).
    """

    def __init__(self, plan: ResumePlan, signature: str, resume: ResumeMode,
                 parts: dict[str, str] | None = None, on_checkpoint_error: CheckpointErrorPolicy = "log") -> None:
        self.plan = plan
        self.signature = signature
        self.resume = resume
        self.parts = dict(parts or {})
        self.writes = CheckpointWrites(on_checkpoint_error)
        self.replay = ReplayState()
        self.last = ResumeCheckpoint(plan.directory, signature, self.replay, self.parts, self.writes)

    @classmethod
    def open(
        cls,
        *,
        model: Any,
        optimizer: Any,
        loss_fn: Any,
        config: Mapping[str, Any],
        call: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        code: Iterable[Any] = (),
        checkpoint_dir: str | None,
        runs_root: str | None,
        resume: ResumeMode,
        on_checkpoint_error: CheckpointErrorPolicy = "log",
    ) -> RunCheckpoints:
        """Compute the signature, plan the resume and clear temp files killed writers left.

        ``config``, ``call``, ``data`` and ``code`` are what ``compute_training_signature``
        takes beside the model, the optimizer and the loss."""
        payload = signature_payload(model, optimizer, loss_fn, config, call=call, data=data, code=code)
        signature, parts = signature_of(payload), signature_parts(payload)
        base = checkpoint_dir if checkpoint_dir is not None else checkpoint_directory(runs_root or "runs", signature)
        plan = plan_resume(base, resume, signature, parts)
        remove_stale_temp_files(plan.directory)
        return cls(plan, signature, resume, parts, on_checkpoint_error)

    @property
    def directory(self) -> Path:
        return self.plan.directory

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint ``fit`` restores, or ``None`` for a fresh start."""
        return str(self.plan.checkpoint_path) if self.plan.checkpoint_path else None

    # ---------------------------------------------------------------- a finished run
    def finished_result(self, model: nn.Module) -> dict[str, Any] | None:
        """The stored result when this run has already finished, with its final weights
        loaded into ``model``; ``None`` when it has not (or ``resume="never"``).

        A result whose weights file cannot be read is not reused: the run continues from
        its last checkpoint instead, which records the result again.
        """
        stored = self.plan.finished
        if self.resume == "never" or stored is None:
            return None
        path = self.directory / FINAL_WEIGHTS_FILE
        try:
            weights = load_checkpoint(path, map_location="cpu")
            if weights.get(SIGNATURE_KEY) != self.signature:
                raise BzCheckpointError(f"{path} belongs to the run {weights.get(SIGNATURE_KEY)!r}")
            model.load_state_dict(weights["state_dict"])
        except (BzCheckpointError, KeyError, RuntimeError) as err:
            log.error("the run %s finished, but its final weights cannot be loaded (%s); continuing it from its "
                      "last checkpoint instead of reusing its result", self.signature, err)
            return None
        return stored

    def store_result(self, result: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> None:
        """Record the run as finished: its final weights, then ``result.json`` (written
        last: a run killed in between has no result and is completed by its re-run).

        A failing write is handled as a checkpoint's (``on_checkpoint_error``); without its
        weights, no ``result.json`` is written, so the run is not reused."""
        epoch = max(int(result.get("epochs_completed", 1)) - 1, 0)
        plain = {VERSION_KEY: CHECKPOINT_VERSION, SIGNATURE_KEY: self.signature,
                 "state_dict": to_plain({k: v.detach().cpu() for k, v in weights.items()}, "state_dict")}
        weights_path = self.directory / FINAL_WEIGHTS_FILE
        if not self.writes.run(weights_path, epoch, lambda: atomic_write_bytes(weights_path, lambda f: torch.save(plain, f))):
            return
        record = {"signature": self.signature, "signature_parts": self.parts,
                  "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
        self.writes.run(self.result_path, epoch, lambda: write_finished_run(self.directory, record))

    @property
    def result_path(self) -> Path:
        return self.directory / RESULT_FILE

    # ---------------------------------------------------------------- training
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
