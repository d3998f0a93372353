"""Failed batches: catching them, counting them, and the budget that bounds them.

A batch fails when the loader raises while producing it, or when the forward pass or the
loss raises. Under ``on_batch_error="skip"`` the batch does no optimizer step (the
training step returns ``None``, which Lightning's automatic optimization skips), is logged
once with its traceback, and is counted against ``max_skipped_batches``.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from bz_lightning._loaders import with_iterator
from bz_lightning.errors import BzConfigError, BzError

__all__ = ["BatchErrorPolicy", "FailedBatch", "SkippedBatch", "SkipBudget", "guard_loader"]

log = logging.getLogger("bz_lightning")

BatchErrorPolicy = Literal["skip", "raise"]
NonFinitePolicy = Literal["raise", "skip"]


class FailedBatch:
    """Stands in for a batch the loader could not produce; the training step skips it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


@dataclass
class SkippedBatch:
    """One skipped batch, kept for the summary."""

    epoch: int
    batch: int
    reason: str
    traceback: str


class SkipBudget:
    """Counts skipped batches and raises once there are more than the budget allows.

    Args:
        limit: an ``int`` >= 0 is a number of batches per run; a ``float`` in (0, 1) is a
            fraction of one epoch's batches (resolved with ``resolve(batches_per_epoch)``).
    """

    def __init__(self, limit: int | float = 10) -> None:
        valid_int = isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        valid_fraction = isinstance(limit, float) and 0.0 < limit < 1.0
        if not (valid_int or valid_fraction):
            raise BzConfigError(
                f"max_skipped_batches must be an int >= 0 (batches per run) or a float in (0, 1) "
                f"(fraction of an epoch), got {limit!r}"
            )
        self.limit = limit
        self.max_batches: int = limit if isinstance(limit, int) else 0
        self.skipped: list[SkippedBatch] = []

    def resolve(self, batches_per_epoch: int | float) -> None:
        if isinstance(self.limit, float) and math.isfinite(batches_per_epoch):
            self.max_batches = max(1, int(self.limit * batches_per_epoch))

    def record(self, epoch: int, batch: int, error: BaseException) -> None:
        tb = "".join(traceback.format_exception(error))
        self.skipped.append(SkippedBatch(epoch, batch, f"{type(error).__name__}: {error}", tb))
        log.warning("skipped batch %d of epoch %d (%d skipped so far):\n%s", batch, epoch, len(self.skipped), tb)
        if len(self.skipped) > self.max_batches:
            first = self.skipped[0]
            raise BzError(
                f"{len(self.skipped)} batches failed, more than max_skipped_batches={self.limit!r} allows; "
                f"the first (epoch {first.epoch}, batch {first.batch}) failed with {first.reason}"
            ) from error


def guard_loader(loader: Iterable[Any]) -> Iterable[Any]:
    """A copy of ``loader`` whose iterator yields ``FailedBatch`` instead of raising (see
    ``with_iterator``: a ``DataLoader`` stays one; the user's object is left untouched)."""
    return with_iterator(loader, lambda start: _GuardedIterator(start()), "Guarded")


class _GuardedIterator:
    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator

    def __iter__(self) -> _GuardedIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except Exception as err:  # reported by the training step, under the skip budget
            return FailedBatch(err)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)
