"""The exceptions bz raises. Every user-facing error names the object, the bad value and
what would be accepted."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BzError",
    "BzConfigError",
    "BzCheckpointError",
    "BzPluginError",
    "NonFiniteLossError",
    "closest_match",
]


class BzError(Exception):
    """Base class of every error bz raises on purpose."""


class BzConfigError(BzError, ValueError):
    """A bad argument or configuration value, detected before training starts."""


class BzCheckpointError(BzError):
    """A checkpoint could not be written, found or read."""


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
            "lower the learning rate, clip gradients (gradient_clip_val=...), or pass "
            'on_nonfinite_loss="skip" to skip such batches'
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
