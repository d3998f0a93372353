"""Failed batches: catching them, counting them, and the budget that bounds them.

A batch fails when the loader raises while producing it, or when the forward pass or the
loss raises. Under ``on_batch_error="skip"`` the batch does no optimizer step (the
training step returns ``None``, which Lightning's automatic optimization skips), is logged
once with its traceback, and is counted against ``max_skipped_batches``.

A loader that cannot go on after raising (a generator, an ``IterableDataset``: the
iterator is finished once it raised) ends the epoch early; the batches that never came are
reported, counted (when the loader's length says how many) and charged to the same budget.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Iterable, Iterator
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
        #: Batches that never came because the loader stopped after an error.
        self.missing = 0

    def resolve(self, batches_per_epoch: int | float) -> None:
        if isinstance(self.limit, float) and math.isfinite(batches_per_epoch):
            self.max_batches = max(1, int(self.limit * batches_per_epoch))

    def record(self, epoch: int, batch: int, error: BaseException) -> None:
        """Count a skipped batch (``epoch`` and ``batch`` from 0; messages count from 1)."""
        tb = "".join(traceback.format_exception(error))
        self.skipped.append(SkippedBatch(epoch, batch, f"{type(error).__name__}: {error}", tb))
        log.warning("skipped batch %d of epoch %d (%d skipped so far):\n%s", batch + 1, epoch + 1,
                    len(self.skipped), tb)
        self._check(error)

    def record_missing(self, count: int) -> None:
        """Count ``count`` batches that never came (the loader stopped after an error)."""
        self.missing += count
        self._check(None)

    def _check(self, error: BaseException | None) -> None:
        if len(self.skipped) + self.missing > self.max_batches:
            first = self.skipped[0] if self.skipped else None
            cause = (f"; the first (epoch {first.epoch + 1}, batch {first.batch + 1}) failed with {first.reason}"
                     if first else "")
            missing = f" and {self.missing} never came" if self.missing else ""
            raise BzError(
                f"{len(self.skipped)} batches failed{missing}, more than max_skipped_batches={self.limit!r} "
                f"allows{cause}"
            ) from error


#: Told ``(batches produced, batches expected or None)`` when an epoch's iterator stopped
#: after an error before the loader's length was reached.
EndedEarly = Callable[[int, "int | None"], None]


def guard_loader(loader: Iterable[Any], ended_early: EndedEarly | None = None) -> Iterable[Any]:
    """A copy of ``loader`` whose iterator yields ``FailedBatch`` instead of raising (see
    ``with_iterator``: a ``DataLoader`` stays one; the user's object is left untouched).

    ``ended_early`` is called when an epoch's iterator stops after having raised, short of
    ``len(loader)`` batches (or of an unknown number, without a length).
    """
    try:
        expected: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        expected = None
    return with_iterator(loader, lambda start: _GuardedIterator(start(), expected, ended_early), "Guarded")


class _GuardedIterator:
    def __init__(self, iterator: Iterator[Any], expected: int | None, ended_early: EndedEarly | None) -> None:
        self._iterator = iterator
        self._expected = expected
        self._ended_early = ended_early
        self._produced = 0
        self._failed = False

    def __iter__(self) -> _GuardedIterator:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self._failed and self._ended_early is not None and (
                    self._expected is None or self._produced < self._expected):
                self._ended_early(self._produced, self._expected)
            raise
        except Exception as err:  # reported by the training step, under the skip budget
            batch = FailedBatch(err)
            self._failed = True
        self._produced += 1
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)
