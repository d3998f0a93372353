"""The Lightning callbacks that write bz checkpoints.

``EpochCheckpoint`` writes ``epoch-N.ckpt`` every ``interval`` epochs *before* the plugins'
``end_epoch`` (bz's stage order: ``save_checkpoint`` comes first). ``ResumeCheckpoint`` runs
after every other callback: it writes ``last.ckpt`` at the end of every epoch (so that file
holds the complete state, including what ``end_epoch`` decided), saves the RNG state and
the interrupted epoch's loader position, and turns SIGTERM into a checkpoint at the next
batch boundary followed by ``Preempted`` (exit status 143).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

from bz_lightning.checkpointing.rng import ReplayState, capture_rng, restore_rng
from bz_lightning.context import split_stats

if TYPE_CHECKING:
    from bz_lightning.bridge import LifecycleCallback

__all__ = ["EpochCheckpoint", "LAST", "Preempted", "ResumeCheckpoint", "SIGNATURE_KEY", "SIGNATURE_PARTS_KEY",
           "epoch_checkpoint_name"]

log = logging.getLogger("bz_lightning")

LAST = "last.ckpt"
#: Top-level checkpoint key holding the run's signature.
SIGNATURE_KEY = "bz_signature"
#: Top-level checkpoint key holding a short hash of each part of the signature
#: (``signature_parts``), so that a mismatch can say what changed.
SIGNATURE_PARTS_KEY = "bz_signature_parts"
#: The exit status of a run stopped by SIGTERM: 128 + 15, what a shell reports for it.
PREEMPTED_EXIT_CODE = 143


def epoch_checkpoint_name(epoch: int) -> str:
    """``epoch-N.ckpt`` for the checkpoint written after ``epoch`` epochs (counted from 1)."""
    return f"epoch-{epoch}.ckpt"


class Preempted(SystemExit):
    """Training stopped on SIGTERM after saving ``last.ckpt``; the process exits with 143.

    It derives from ``SystemExit`` (like Lightning's own ``SIGTERMException``) so that an
    uncaught one ends the process with status 143, which a scheduler reads as preemption.

    Attributes:
        checkpoint_path: the checkpoint written at the batch boundary, or ``None`` when the
            signal arrived before training started.
        epoch / batch: where training stopped (``epoch`` from 0, like ``context.epoch``;
            ``batch``: batches done in that epoch). The message counts epochs from 1.
    """

    def __init__(self, checkpoint_path: str | None, epoch: int = 0, batch: int = 0) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.batch = batch

    def __str__(self) -> str:
        where = f"saved {self.checkpoint_path}" if self.checkpoint_path else "no checkpoint written"
        return (f"training stopped by SIGTERM in epoch {self.epoch + 1} after {self.batch} batch"
                f"{'es' if self.batch != 1 else ''} ({where}); run the same command again to continue")


class EpochCheckpoint(pl.Callback):
    """Writes ``<dirpath>/epoch-N.ckpt`` (N counted from 1) every ``interval`` epochs and
    tells the bridge, so plugins see ``save_checkpoint`` before ``end_epoch``.

    Place it before the ``LifecycleCallback`` in the callback list.
    """

    def __init__(self, dirpath: str | os.PathLike[str], interval: int, bridge: LifecycleCallback) -> None:
        self.dirpath = os.fspath(dirpath)
        self.interval = interval
        self.bridge = bridge

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.interval and epoch % self.interval == 0:
            path = os.path.join(self.dirpath, epoch_checkpoint_name(epoch))
            trainer.save_checkpoint(path, weights_only=False)
            self.bridge.checkpoint_written(path)


class ResumeCheckpoint(pl.Callback):
    """Writes ``last.ckpt``, carries RNG and loader state, and handles SIGTERM.

    Place it after every other callback, so ``last.ckpt`` holds the state after the
    plugins' ``end_epoch``.

    Args:
        dirpath: the checkpoint directory.
        signature: the run's signature, stored under ``bz_signature`` in every checkpoint.
        parts: a short hash of each part of the signature (``bz_signature_parts``).
        replay: the ``ReplayState`` of the training loader wrapped by ``resumable_loader``;
            without it a mid-epoch checkpoint cannot be resumed exactly (it is refused).
    """

    def __init__(self, dirpath: str | os.PathLike[str], signature: str, replay: ReplayState | None = None,
                 parts: dict[str, str] | None = None) -> None:
        self.dirpath = os.fspath(dirpath)
        self.signature = signature
        self.parts = dict(parts or {})
        self.replay = replay
        self._trainer: pl.Trainer | None = None
        self._sigterm = False
        self._previous_handler: Any = None
        self._mid_epoch_save = False
        self.preempted: Preempted | None = None

    @property
    def last_path(self) -> str:
        return os.path.join(self.dirpath, LAST)

    # ---------------------------------------------------------------------- signals
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning's own handler ends fit with exit status 0 and may stop mid-validation;
        # ours only raises a flag that the next batch boundary acts on.
        self._sigterm = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if not self._sigterm:
            log.warning("received SIGTERM: saving %s after the current batch, then exiting with status %d",
                        self.last_path, PREEMPTED_EXIT_CODE)
        self._sigterm = True

    def _restore_handler(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_handler)
        self._previous_handler = None

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(self._sigterm, all=False))
        return self._sigterm

    # ---------------------------------------------------------------------- saving
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._stop_requested(trainer):
            return
        self._mid_epoch_save = True
        try:
            trainer.save_checkpoint(self.last_path, weights_only=False)
        finally:
            self._mid_epoch_save = False
        self.preempted = Preempted(self.last_path, trainer.current_epoch, batch_idx + 1)
        raise self.preempted

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.last_path, weights_only=False)
        if self._stop_requested(trainer):
            # batch_progress.current is a _ProcessedTracker at run time; its annotation is narrower.
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]
            self.preempted = Preempted(self.last_path, trainer.current_epoch, done)
            raise self.preempted

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[SIGNATURE_KEY] = self.signature
        checkpoint[SIGNATURE_PARTS_KEY] = self.parts

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        mid_epoch = self._mid_epoch_save and trainer is not None
        # What differs between DDP processes (each draws its own random numbers and counts
        # its own shard of the batches) is saved for every process, by global rank.
        own: dict[str, Any] = {"rng": capture_rng(self.replay.generators if self.replay is not None else [])}
        if mid_epoch:
            assert trainer is not None
            stats = split_stats(trainer.lightning_module, "train")
            own["epoch_rng"] = self.replay.epoch_rng if self.replay is not None else None
            # The interrupted epoch's running loss and metric states, so that its
            # train_loss and metrics cover every batch of it.
            own["train"] = None if stats is None else stats.state_dict()
        state: dict[str, Any] = {
            "ranks": _gather(trainer, own),
            # Lightning does not store a stop request: without it a run stopped early and
            # resumed from its last checkpoint would train another epoch.
            "should_stop": bool(trainer.should_stop) if trainer is not None else False,
            "mid_epoch": None,
        }
        if mid_epoch:
            assert trainer is not None
            state["mid_epoch"] = {
                "produced": self.replay.produced if self.replay is not None else 0,
                "consumed": trainer.fit_loop.epoch_loop.batch_progress.current.processed,  # type: ignore[attr-defined]
            }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = self._own_state(state_dict["ranks"])
        # Lightning restores callbacks before it creates the training iterator, so the
        # restored RNG state is exactly what the next epoch's shuffle draws from.
        generators = self.replay.generators if self.replay is not None else []
        restore_rng(own["rng"], generators)
        if state_dict.get("should_stop") and self._trainer is not None:
            self._trainer.should_stop = True
        pending = state_dict.get("mid_epoch")
        if not pending:
            return
        if self.replay is None or own.get("epoch_rng") is None:
            from bz_lightning.errors import BzCheckpointError

            raise BzCheckpointError(
                "this checkpoint was written in the middle of an epoch and continuing it exactly needs the "
                "training loader wrapped by bz (Trainer.train does that); resume from an epoch-N.ckpt instead"
            )
        # The loader replays the interrupted epoch up to where training stopped.
        self.replay.pending = {**pending, "epoch_rng": own["epoch_rng"]}
        module = self._trainer.lightning_module if self._trainer is not None else None
        stats = split_stats(module, "train")
        if stats is not None and own.get("train"):
            stats.load_state_dict(own["train"])

    def _own_state(self, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """This process's part of the checkpoint: by global rank, when the run resumes on as
        many processes as it was saved from."""
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if len(ranks) == world:
            return ranks[rank]
        log.warning("the checkpoint was saved by %d process(es) and the run resumes on %d: every process continues "
                    "from the first one's random number state and epoch totals, so the resumed run is not exactly "
                    "the uninterrupted one", len(ranks), world)
        return ranks[0]


def _gather(trainer: pl.Trainer | None, own: dict[str, Any]) -> list[dict[str, Any]]:
    """``own`` of every process, by global rank (one collective call under DDP: every
    process saves checkpoints together, so every process gets here)."""
    import torch.distributed as dist

    if trainer is None or trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [own]
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, own)
    return gathered
