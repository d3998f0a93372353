"""The exceptions bz raises. Every user-facing error names the object, the bad value and
what would be accepted."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BzError",
    "BzConfigError",
    "BzCheckpointError",
    "BzDiskFullError",
    "BzPluginError",
    "NonFiniteLossError",
    "closest_match",
]


class BzError(Exception):
    """Base class of every error bz raises on purpose.

    Every one survives pickling with its message and attributes: a sweep job's error
    travels back to the sweep as a pickle (submitit's SLURM and local launchers, joblib).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Python pickles an exception as ``cls(*self.args)``; a subclass whose __init__
        # takes other arguments (NonFiniteLossError, BzPluginError) then fails to unpickle,
        # and the whole sweep with it. Rebuild from the message and attributes instead.
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type[BzError], args: tuple[Any, ...], state: dict[str, Any]) -> BzError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class BzConfigError(BzError, ValueError):
    """A bad argument or configuration value, detected before training starts."""


class BzCheckpointError(BzError):
    """A checkpoint could not be written, found or read."""


class BzDiskFullError(BzCheckpointError, OSError):
    """A file could not be written because its filesystem is full (or the quota is spent).

    Raised by every atomic write (checkpoints, ``result.json``, ``metrics.json``) in place of
    what the writer saw (torch reports a full disk as ``unexpected pos``); the file that was
    there before is left as it was. Both a ``BzCheckpointError`` and an ``OSError``
    (``errno.ENOSPC``), so either kind of handler catches it.

    Attributes:
        path: the file that could not be written (also ``filename``).
    """

    def __init__(self, path: str) -> None:
        import errno

        OSError.__init__(self, errno.ENOSPC, "no space left", path)
        self.path = path

    def __str__(self) -> str:
        return f"no space left on {self.path} (the file there before, if any, is unchanged)"


class BzPluginError(BzError):
    """A plugin failed in a stage while ``plugin_errors="raise"`` was set.

    Attributes:
        plugin: the failing plugin's name.
        stage: the stage (``Stage`` value) in which it failed.
    """

    def __init__(self, plugin: str, stage: str, cause: BaseException | None = None) -> None:
        self.plugin = plugin
        self.stage = stage
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"plugin {plugin!r} failed in stage {stage!r}{detail}")


class NonFiniteLossError(BzError, FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes:
        epoch: the epoch of the batch (from 0, like ``context.epoch``; the message counts from 1).
        batch: the batch index within the epoch (from 0; the message counts from 1).
        last_finite_loss: the last finite batch loss seen, or ``None``.
    """

    def __init__(self, epoch: int, batch: int, value: float, last_finite_loss: float | None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.value = value
        self.last_finite_loss = last_finite_loss
        last = "none yet" if last_finite_loss is None else f"{last_finite_loss:.6g}"
        super().__init__(
            f"loss is {value} at epoch {epoch + 1}, batch {batch + 1} (last finite loss: {last}); "
            "lower the learning rate, clip gradients (bz-train: trainer.gradient_clip_val=1.0), or skip such "
            "batches with on_nonfinite_loss=skip (a bz-train key and a Trainer.train argument)"
        )


def closest_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``word``, or ``None`` if nothing is close.

    >>> closest_match("acuracy", ["accuracy", "mse"])
    'accuracy'
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    match = closest_match(word, choices)
    return f" (did you mean {match!r}?)" if match else ""
