"""``SplitStats``: the running loss and metrics of one split within one epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bz_lightning.context import mean

if TYPE_CHECKING:
    from bz_lightning._nonfinite import NonFiniteGuard
    from bz_lightning.metrics.base import Metric

__all__ = ["SplitReading", "SplitStats"]


@dataclass(frozen=True)
class SplitReading:
    """The host values of a ``SplitStats`` at one point of the epoch.

    Attributes:
        loss_total: the sum of the batch losses so far (0.0 before the first batch).
        last_loss: the last batch's loss, or ``None`` before the first batch.
        count: batches counted so far.
        metrics: each metric's value by ``name`` (empty before the first batch), or ``None``
            when read without metrics.
    """

    loss_total: float
    last_loss: float | None
    count: int
    metrics: dict[str, float] | None

    @property
    def loss_mean(self) -> float:
        return mean(self.loss_total, self.count)


class SplitStats:
    """Running statistics of one split (train, val or test) within one epoch.

    Losses are summed on the device and metrics count on the device, so a step reads
    nothing on the host. ``read()`` brings the values to the host in one transfer (and
    caches them until the next batch); the training split's ``guard`` (see
    ``NonFiniteGuard``) is read in the same transfer, so no non-finite loss is ever handed
    out as a value. Splits without a guard (validation, test) count their non-finite
    losses on the device instead (``nonfinite_batches``).
    """

    def __init__(self, prefix: str, metrics: Sequence[Metric], guard: NonFiniteGuard | None = None) -> None:
        from bz_lightning.metrics._shared import MetricSet

        self.prefix = prefix
        self._metric_set = MetricSet(metrics)
        self.guard = guard
        self.reset()

    @property
    def metrics(self) -> list[Metric]:
        return self._metric_set.metrics

    def reset(self) -> None:
        self.loss_sum: Tensor | float | None = None
        self.last_loss: Tensor | float | None = None
        self.count = 0
        # Batches whose (device) loss was NaN or infinite, counted on the device.
        self._nonfinite: Tensor | None = None
        self._reading: SplitReading | None = None
        self._read_at: tuple[int, int] | None = None
        self._metric_set.reset()

    def update(self, loss: Tensor | float, preds: Tensor, targets: Tensor) -> None:
        """Count one batch. ``loss``: a detached tensor, summed on the device, or a float
        when the caller has read it already."""
        self.last_loss = loss
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.count += 1
        if self.guard is None and isinstance(loss, Tensor):
            bad = (~torch.isfinite(loss)).to(torch.int64)
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad
        if self.metrics:
            self._metric_set.update(preds.detach(), targets)

    def read(self, metrics: bool = True) -> SplitReading:
        """The values so far, read on the host in one transfer (cached until the next batch).

        ``metrics=False`` leaves the metrics uncomputed (``SplitReading.metrics`` is then
        ``None``). Raises ``NonFiniteLossError`` if the guard finds a non-finite loss, and a
        metric's ``ValueError`` if a target it counted was invalid.
        """
        from bz_lightning._host import read_host

        # Keyed by the count and the sum's identity: a resumed run assigns both directly.
        key = (self.count, id(self.loss_sum))
        cached = self._reading
        if cached is not None and self._read_at == key and (cached.metrics is not None or not metrics):
            return cached
        flag = self.guard.unread() if self.guard is not None else None
        values: dict[str, Tensor | float] = {}
        checks: list[tuple[Metric, Tensor]] = []
        if metrics and self.count and self.metrics:
            values, checks = self._metric_set.compute_on_device()
        host = read_host([flag, self.loss_sum, self.last_loss, *values.values(), *(t for _, t in checks)])
        if flag is not None:
            self.guard.settle(host[0])  # type: ignore[union-attr]
        for (metric, _), found in zip(checks, host[3 + len(values):]):
            metric._check_read(found)  # type: ignore[attr-defined]
        reading = SplitReading(
            loss_total=0.0 if host[1] is None else float(host[1]),
            last_loss=None if host[2] is None else float(host[2]),
            count=self.count,
            metrics=dict(zip(values, host[3:3 + len(values)])) if metrics else None,
        )
        self._reading, self._read_at = reading, key
        return reading

    @property
    def nonfinite_batches(self) -> int:
        """How many of this epoch's batches had a NaN or infinite loss (one host sync)."""
        return 0 if self._nonfinite is None else int(self._nonfinite)

    @property
    def loss_total(self) -> float:
        """Sum of this epoch's batch losses, as a float (one host read)."""
        return self.read(metrics=False).loss_total

    def read_loss_total(self) -> float:
        """``loss_total`` as a method: what the bridge hands the context to read on demand."""
        return self.read(metrics=False).loss_total

    @property
    def loss_mean(self) -> float:
        return self.read(metrics=False).loss_mean

    def state_dict(self) -> dict[str, Any]:
        """The epoch so far (loss total, batch count, metric states), for a checkpoint
        written in the middle of an epoch."""
        return {"loss_sum": None if self.loss_sum is None else self.loss_total, "count": self.count,
                "metrics": self._metric_set.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the epoch ``state_dict`` described."""
        loss_sum = state.get("loss_sum")
        self.loss_sum = None if loss_sum is None else float(loss_sum)
        self.count = int(state.get("count", 0))
        self._reading = None
        if state.get("metrics") is not None:
            self._metric_set.load_state_dict(state["metrics"])

    def metric_values(self) -> dict[str, float]:
        """Each metric's value over the batches seen so far, keyed by its ``name``."""
        return self.read().metrics or {}

    def logged_values(self) -> dict[str, float]:
        """``<prefix>_loss`` and ``<prefix>_<metric>``: the names logged to Lightning."""
        reading = self.read()
        values = {f"{self.prefix}_loss": reading.loss_mean}
        values.update({f"{self.prefix}_{name}": v for name, v in (reading.metrics or {}).items()})
        return values
