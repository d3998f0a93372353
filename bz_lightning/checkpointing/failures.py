"""What a failing checkpoint write does to a run: ``on_checkpoint_error``.

bz's promise is "checkpoint errors are logged but training continues": a full disk or a
directory that went away must not throw away the hours already trained. With
``on_checkpoint_error="log"`` (the default) a write that raises ``OSError`` or
``BzCheckpointError`` is logged with the path and the error, counted in
``TrainingResult.checkpoint_failures`` and in the console summary, and training goes on;
the file at that path stays the last good checkpoint (writes are atomic, see
``atomic_write_bytes``). ``"raise"`` lets the error stop the run.

The writes are guarded where they happen, in the ``CheckpointIO``, rather than around
``trainer.save_checkpoint``: Lightning follows every save with a barrier of all processes,
which a failure caught outside it would skip on rank 0 only, leaving the others waiting.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, Literal, get_args

from bz_lightning.checkpointing.io import AtomicCheckpointIO
from bz_lightning.errors import BzCheckpointError, BzConfigError

__all__ = ["CheckpointErrorPolicy", "CheckpointFailure", "CheckpointWrites", "GuardedCheckpointIO"]

log = logging.getLogger("bz_lightning")

CheckpointErrorPolicy = Literal["log", "raise"]


class CheckpointFailure:
    """One checkpoint write that failed, kept for the end-of-run summary.

    Attributes:
        path: the file that could not be written.
        epoch: the epoch it was written for (from 0, like ``context.epoch``).
        error: the exception (an ``OSError`` or ``BzCheckpointError``).
        traceback: its formatted traceback.
    """

    __slots__ = ("path", "epoch", "error", "traceback")

    def __init__(self, path: str, epoch: int, error: BaseException) -> None:
        self.path = path
        self.epoch = epoch
        self.error = error
        self.traceback = "".join(traceback.format_exception(error))

    def __repr__(self) -> str:
        return f"CheckpointFailure({self.path!r}, epoch={self.epoch}, {self.error!r})"

    @property
    def reason(self) -> str:
        """Why the write failed, in words: ``no space left`` for a full disk, else the error."""
        return describe_write_error(self.error)


def describe_write_error(error: BaseException) -> str:
    """``"no space left"`` for a full disk (``BzDiskFullError`` already names the file and
    says the old one is unchanged), else ``"<ErrorType>: <message>"``."""
    from bz_lightning.errors import BzDiskFullError

    return "no space left" if isinstance(error, BzDiskFullError) else f"{type(error).__name__}: {error}"


class CheckpointWrites:
    """Runs a run's checkpoint writes under its ``on_checkpoint_error`` policy.

    Args:
        policy: ``"log"``: a failing write is logged and recorded in ``failures`` and the
            run goes on; ``"raise"``: the error propagates.

    Raises:
        BzConfigError: ``policy`` is neither.

    Example:
        >>> writes = CheckpointWrites("log")
        >>> def full_disk():
        ...     raise OSError(28, "No space left on device")
        >>> writes.run("/ckpt/last.ckpt", 3, full_disk)  # logged, not raised
        False
        >>> writes.failures
        [CheckpointFailure('/ckpt/last.ckpt', epoch=3, OSError(28, 'No space left on device'))]
    """

    def __init__(self, policy: CheckpointErrorPolicy = "log") -> None:
        if policy not in get_args(CheckpointErrorPolicy):
            raise BzConfigError(f"on_checkpoint_error must be 'log' or 'raise', got {policy!r}")
        self.policy = policy
        self.failures: list[CheckpointFailure] = []

    def run(self, path: str | os.PathLike[str], epoch: int, write: Callable[[], Any]) -> bool:
        """Call ``write()``; ``False`` when it failed and the failure was logged."""
        if self.policy == "raise":
            write()
            return True
        try:
            write()
        except (OSError, BzCheckpointError) as err:
            path = os.fspath(path)
            kept = "the previous file there is kept" if os.path.exists(path) else "no earlier file there"
            log.error("cannot write checkpoint %s (epoch %d): %s; %s, and training goes on "
                      "(on_checkpoint_error='raise' stops instead)", path, epoch + 1, describe_write_error(err), kept)
            self.failures.append(CheckpointFailure(path, epoch, err))
            return False
        return True


class GuardedCheckpointIO(AtomicCheckpointIO):
    """``AtomicCheckpointIO`` whose saves run through ``writes`` (see the module docstring)."""

    def __init__(self, writes: CheckpointWrites) -> None:
        super().__init__()
        self.writes = writes

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save = functools.partial(AtomicCheckpointIO.save_checkpoint, self, checkpoint, path, storage_options)
        self.writes.run(path, int(checkpoint.get("epoch", 0)), save)
