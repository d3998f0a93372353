"""The Lightning callbacks that write bz checkpoints.

``EpochCheckpoint`` writes ``epoch-N.ckpt`` every ``interval`` epochs *before* the plugins'
``end_epoch`` (bz's stage order: ``save_checkpoint`` comes first). ``ResumeCheckpoint`` runs
after every other callback: it writes ``last.ckpt`` at the end of every epoch (so that file
holds the complete state, including what ``end_epoch`` decided), saves the RNG state and
the interrupted epoch's loader position, and turns SIGTERM into a checkpoint at the next
batch boundary followed by ``Preempted`` (exit status 143), and Ctrl-C (SIGINT) likewise
into ``Interrupted`` (exit status 130). In a submitit job it does the same with submitit's
time-limit warning (``SIGUSR2``) before handing it to submitit, which requeues the job.
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
    from bz_lightning.checkpointing.failures import CheckpointWrites

__all__ = [
    "EpochCheckpoint", "INTERRUPTED_EXIT_CODE", "Interrupted", "LAST", "PREEMPTED_EXIT_CODE", "Preempted",
    "ResumeCheckpoint", "SIGNATURE_KEY", "SIGNATURE_PARTS_KEY", "epoch_checkpoint_name",
]

log = logging.getLogger("bz_lightning")

LAST = "last.ckpt"
#: Top-level checkpoint key holding the run's signature.
SIGNATURE_KEY = "bz_signature"
#: Top-level checkpoint key holding a short hash of each part of the signature
#: (``signature_parts``), so that a mismatch can say what changed.
SIGNATURE_PARTS_KEY = "bz_signature_parts"
#: The exit status of a run stopped by SIGTERM: 128 + 15, what a shell reports for it.
PREEMPTED_EXIT_CODE = 143
#: The exit status of a run stopped by Ctrl-C: 128 + 2 (SIGINT), what a shell reports for it.
INTERRUPTED_EXIT_CODE = 130
# submitit sets SUBMITIT_FOLDER in its jobs; its warning signal (sent `signal_delay_s`
# before the time limit) is SIG + $SUBMITIT_PREEMPT_SIGNAL, USR2 by default.
_SUBMITIT_JOB_ENV = "SUBMITIT_FOLDER"
_SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def _submitit_warning_signal() -> signal.Signals | None:
    """The signal submitit warns this job with before its time limit; ``None`` outside submitit."""
    if _SUBMITIT_JOB_ENV not in os.environ:
        return None
    return getattr(signal, "SIG" + os.environ.get(_SUBMITIT_SIGNAL_ENV, "USR2"), None)


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

    exit_code = PREEMPTED_EXIT_CODE
    cause = "SIGTERM"

    def __init__(self, checkpoint_path: str | None, epoch: int = 0, batch: int = 0) -> None:
        super().__init__(self.exit_code)
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.batch = batch

    def __str__(self) -> str:
        where = f"saved {self.checkpoint_path}" if self.checkpoint_path else "no checkpoint written"
        return (f"training stopped by {self.cause} in epoch {self.epoch + 1} after {self.batch} batch"
                f"{'es' if self.batch != 1 else ''} ({where}); run the same command again to continue")


class Interrupted(Preempted):
    """Training stopped on Ctrl-C (SIGINT) after saving ``last.ckpt``; the process exits with 130.

    The first Ctrl-C is handled like SIGTERM (the current batch finishes, ``last.ckpt`` is
    saved); a second one stops at once, without saving, still with status 130.
    """

    exit_code = INTERRUPTED_EXIT_CODE
    cause = "Ctrl-C"


def _save(trainer: pl.Trainer, path: str, writes: CheckpointWrites | None) -> bool:
    """``trainer.save_checkpoint(path)``; ``False`` when the write failed and, under
    ``on_checkpoint_error="log"``, was logged instead of raised (see ``failures``)."""
    failed = len(writes.failures) if writes is not None else 0
    trainer.save_checkpoint(path, weights_only=False)
    return writes is None or len(writes.failures) == failed


class EpochCheckpoint(pl.Callback):
    """Writes ``<dirpath>/epoch-N.ckpt`` (N counted from 1) every ``interval`` epochs and
    tells the bridge, so plugins see ``save_checkpoint`` before ``end_epoch`` (not when the
    write failed under ``on_checkpoint_error="log"``: ``writes`` records that).

    Place it before the ``LifecycleCallback`` in the callback list.
    """

    def __init__(self, dirpath: str | os.PathLike[str], interval: int, bridge: LifecycleCallback,
                 writes: CheckpointWrites | None = None) -> None:
        self.dirpath = os.fspath(dirpath)
        self.interval = interval
        self.bridge = bridge
        self.writes = writes

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.interval and epoch % self.interval == 0:
            path = os.path.join(self.dirpath, epoch_checkpoint_name(epoch))
            if _save(trainer, path, self.writes):
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
        writes: the run's ``CheckpointWrites``, which tell whether a save failed (under
            ``on_checkpoint_error="log"``), so ``Preempted`` never names a file not written.
    """

    def __init__(self, dirpath: str | os.PathLike[str], signature: str, replay: ReplayState | None = None,
                 parts: dict[str, str] | None = None, writes: CheckpointWrites | None = None) -> None:
        self.dirpath = os.fspath(dirpath)
        self.signature = signature
        self.parts = dict(parts or {})
        self.replay = replay
        self.writes = writes
        self._trainer: pl.Trainer | None = None
        # What a signal asked for: Preempted (SIGTERM, submitit's time-limit warning) or
        # Interrupted (Ctrl-C), else None.
        self._stop: type[Preempted] | None = None
        self._previous_handlers: dict[int, Any] = {}
        # submitit's warning signal, in a submitit job; bz saves, then runs submitit's handler.
        self._warning: signal.Signals | None = None
        self._warned = False
        self._mid_epoch_save = False
        self.preempted: Preempted | None = None

    @property
    def last_path(self) -> str:
        return os.path.join(self.dirpath, LAST)

    # ---------------------------------------------------------------------- signals
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning's own SIGTERM handler ends fit with exit status 0 and may stop
        # mid-validation, and its Ctrl-C handling exits with 1 without saving; ours only
        # raise a flag that the next batch boundary acts on.
        self._stop = None
        self._warned = False
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # e.g. a background job: Ctrl-C is not ours
            self._previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        # submitit requeues the job from inside its handler and exits at once: the batches
        # since the last epoch end would be lost, every time, and an epoch longer than the
        # time limit would never finish. So the handler waits for the next batch boundary
        # and last.ckpt.
        warning = _submitit_warning_signal()
        if warning is not None and callable(signal.getsignal(warning)):
            self._warning = warning
            self._previous_handlers[warning] = signal.signal(warning, self._on_warning)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._stop is None:
            log.warning("received SIGTERM: saving %s after the current batch, then exiting with status %d",
                        self.last_path, PREEMPTED_EXIT_CODE)
            self._stop = Preempted

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop is Interrupted:  # the second Ctrl-C: stop now, as Python would
            self._restore_handlers()
            raise KeyboardInterrupt
        log.warning("Ctrl-C: saving %s after the current batch, then exiting with status %d "
                    "(Ctrl-C again to stop at once, without saving)", self.last_path, INTERRUPTED_EXIT_CODE)
        self._stop = Interrupted

    def _on_warning(self, signum: int, frame: Any) -> None:
        if not self._warned:
            log.warning("received %s (the job's time limit is near): saving %s after the current batch, then "
                        "submitit requeues the job", signal.Signals(signum).name, self.last_path)
        self._warned = True
        if self._stop is None:
            self._stop = Preempted

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
        self._previous_handlers = {}

    def _stop_requested(self, trainer: pl.Trainer) -> type[Preempted] | None:
        """What this process or, under DDP, any process was asked to do by a signal."""
        if trainer.world_size > 1:
            if trainer.strategy.reduce_boolean_decision(self._stop is not None, all=False):
                return self._stop or Preempted
            return None
        return self._stop

    def _stopped(self, preempted: Preempted) -> Preempted:
        """After the save: hand a submitit warning to submitit's handler (it requeues the
        job and exits the process); otherwise, or where it returns (a rank other than 0),
        the caller raises ``preempted``."""
        self.preempted = preempted
        warning = self._warning
        if self._warned and warning is not None:
            handler = self._previous_handlers.get(warning)
            self._restore_handlers()
            log.warning("training stopped by %s in epoch %d after %d batch(es) (saved %s); submitit requeues the job",
                        warning.name, preempted.epoch + 1, preempted.batch, preempted.checkpoint_path)
            if callable(handler):
                handler(warning, None)
        return preempted

    # ---------------------------------------------------------------------- saving
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop = self._stop_requested(trainer)
        if stop is None:
            return
        self._mid_epoch_save = True
        try:
            saved = _save(trainer, self.last_path, self.writes)
        finally:
            self._mid_epoch_save = False
        raise self._stopped(stop(self.last_path if saved else None, trainer.current_epoch, batch_idx + 1))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved = _save(trainer, self.last_path, self.writes)
        stop = self._stop_requested(trainer)
        if stop is not None:
            # batch_progress.current is a _ProcessedTracker at run time; its annotation is narrower.
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]
            raise self._stopped(stop(self.last_path if saved else None, trainer.current_epoch, done))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

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
