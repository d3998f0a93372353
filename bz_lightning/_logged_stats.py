"""A split's running statistics for a ``LightningModule`` that is not a ``BzModule``.

``BzModule`` counts its own losses and metrics; a user's own module does not, but Lightning
tracks what bz plugins need:

* the loss of each training step: what ``training_step`` returned (a tensor, or a dict's
  ``"loss"``), which Lightning hands to ``on_train_batch_end``;
* the batches: each ``on_*_batch_end``;
* the module's logged values (``self.log``), in ``trainer.callback_metrics`` once Lightning
  has aggregated them: ``val_loss`` and ``val_<name>`` at the end of validation,
  ``train_<name>`` at the end of the training epoch (after validation, which Lightning runs
  inside the epoch). ``val_loss`` is the validation loss, as Lightning's own callbacks
  (``EarlyStopping``, ``ModelCheckpoint``) read it.

These are the values the bridge copies into the ``PluginContext``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bz_lightning._split_stats import SplitReading

__all__ = ["LoggedStats", "step_loss"]

log = logging.getLogger("bz_lightning")


def step_loss(outputs: Any) -> Any:
    """The loss a ``training_step`` / ``validation_step`` returned (a scalar tensor or a
    float), or ``None``: what Lightning passes to ``on_*_batch_end`` as ``outputs``."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, (int, float)) and not isinstance(outputs, bool):
        return float(outputs)
    if getattr(outputs, "ndim", None) == 0:  # a scalar tensor
        return outputs.detach()
    return None


class LoggedStats:
    """Statistics of one split (``"train"`` or ``"val"``) within one loop, from Lightning.

    Args:
        prefix: ``"train"`` or ``"val"``, the prefix of the logged keys.
        loss_from_log: prefer the logged ``<prefix>_loss`` to the steps' returned values
            (validation, where ``val_loss`` is the convention and ``validation_step`` may
            return anything); training counts the loss its steps returned, the one optimized.

    ``count``/``loss_total``: the batches whose step returned a loss and their sum, summed
    on the device (one host sync when read); with ``loss_from_log``, once the module's
    logged ``<prefix>_loss`` is read at the end of the loop, that mean times the loop's
    batches, so the context's mean loss is the value the module logged.
    ``metric_values()``: the module's logged ``<prefix>_<name>`` values, by ``name``.
    """

    def __init__(self, prefix: str, *, loss_from_log: bool) -> None:
        self.prefix = prefix
        self.loss_from_log = loss_from_log
        self._warned = False
        self.reset()

    def reset(self) -> None:
        self.batches = 0
        self.last_loss: Any = None
        self._loss_sum: Any = None
        self._losses = 0
        self._logged_loss: float | None = None
        self._metrics: dict[str, float] = {}

    def add_batch(self, outputs: Any) -> None:
        """Count one batch and the loss its step returned, if any."""
        self.batches += 1
        loss = step_loss(outputs)
        if loss is None:
            return
        self.last_loss = loss
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._losses += 1

    def read_logged(self, callback_metrics: Mapping[str, Any]) -> None:
        """Take the module's aggregated ``<prefix>_*`` values from ``trainer.callback_metrics``.

        ``_step`` / ``_epoch`` variants (from ``self.log(on_step=True, on_epoch=True)``) are
        skipped: at the end of a loop the plain key holds the epoch's value.
        """
        head = f"{self.prefix}_"
        loss_key = f"{head}loss"
        metrics: dict[str, float] = {}
        self._logged_loss = None
        for key, value in callback_metrics.items():
            if not key.startswith(head) or key.endswith(("_step", "_epoch")):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):  # a non-scalar: not a metric value
                continue
            if key == loss_key:
                self._logged_loss = number
            else:
                metrics[key[len(head):]] = number
        self._metrics = metrics
        if not self.loss_from_log and self._losses < self.batches and not self._warned:
            self._warned = True
            log.warning("training_step returned no loss for %d of %d batches; the plugins' training loss "
                        "counts only the others (return the loss, or a dict with 'loss', from training_step)",
                        self.batches - self._losses, self.batches)

    @property
    def count(self) -> int:
        return self.batches if self._use_logged_loss else self._losses

    @property
    def loss_total(self) -> float:
        if self._use_logged_loss:
            return self._logged_loss * self.batches  # type: ignore[operator]
        return 0.0 if self._loss_sum is None else float(self._loss_sum)

    @property
    def _use_logged_loss(self) -> bool:
        return self.loss_from_log and self._logged_loss is not None

    def metric_values(self) -> dict[str, float]:
        return self._metrics

    def read_loss_total(self) -> float:
        """``loss_total`` as a method, like ``SplitStats.read_loss_total``."""
        return self.loss_total

    def read(self, metrics: bool = True) -> SplitReading:
        """The values so far, as ``SplitStats.read`` gives them."""
        last = self.last_loss
        return SplitReading(loss_total=self.loss_total, last_loss=None if last is None else float(last),
                            count=self.count, metrics=dict(self._metrics) if metrics else None)
