"""``SplitStats``: the running loss and metrics of one split within one epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bz_lightning.context import mean

if TYPE_CHECKING:
    from bz_lightning.metrics.base import Metric

__all__ = ["SplitStats"]


class SplitStats:
    """Running statistics of one split (train, val or test) within one epoch.

    Validation and test losses are summed on the device, so their steps cost no host
    synchronisation; a training step reads its loss anyway (it must be finite before the
    backward pass), so training sums that float. Metric values are produced only when
    somebody reads ``metric_values()``.
    """

    def __init__(self, prefix: str, metrics: Sequence[Metric]) -> None:
        from bz_lightning.metrics._shared import MetricSet

        self.prefix = prefix
        self._metric_set = MetricSet(metrics)
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
        self._metric_cache: dict[str, float] | None = None
        self._metric_set.reset()

    def update(self, loss: Tensor | float, preds: Tensor, targets: Tensor) -> None:
        """Count one batch. ``loss``: a detached tensor, summed on the device, or a float
        when the caller has read it already (training does, to check it is finite)."""
        self.last_loss = loss
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.count += 1
        if isinstance(loss, Tensor):
            bad = (~torch.isfinite(loss)).to(torch.int64)
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad
        self._metric_cache = None
        if self.metrics:
            self._metric_set.update(preds.detach(), targets)

    @property
    def nonfinite_batches(self) -> int:
        """How many of this epoch's batches had a NaN or infinite loss (one host sync)."""
        return 0 if self._nonfinite is None else int(self._nonfinite)

    @property
    def loss_total(self) -> float:
        """Sum of this epoch's batch losses, as a float (one host sync)."""
        return 0.0 if self.loss_sum is None else float(self.loss_sum)

    @property
    def loss_mean(self) -> float:
        return mean(self.loss_total, self.count)

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
        self._metric_cache = None
        if state.get("metrics") is not None:
            self._metric_set.load_state_dict(state["metrics"])

    def metric_values(self) -> dict[str, float]:
        """Each metric's value over the batches seen so far, keyed by its ``name``."""
        if self._metric_cache is None:
            self._metric_cache = self._metric_set.compute() if self.count else {}
        return self._metric_cache

    def logged_values(self) -> dict[str, float]:
        """``<prefix>_loss`` and ``<prefix>_<metric>``: the names logged to Lightning."""
        values = {f"{self.prefix}_loss": self.loss_mean}
        values.update({f"{self.prefix}_{name}": v for name, v in self.metric_values().items()})
        return values
