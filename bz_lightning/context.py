"""``PluginContext``: the state of a run that plugins read and write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

__all__ = ["PluginContext"]


@dataclass
class PluginContext:
    """What the trainer tells plugins at every stage.

    Loss totals and batch counts cover the current epoch: they are reset at
    ``start_epoch`` (training) and ``start_validation_loop`` (validation), so the mean
    training loss of an epoch is ``training_loss_total / training_batch_count``.
    Metrics are filled at ``end_training_loop`` and ``end_validation_loop`` under each
    metric's ``name``. A plugin asks for the run to stop by setting
    ``should_stop_training``; the epoch in progress finishes and no later epoch starts.

    Example:
        >>> ctx = PluginContext(epoch=2, training_loss_total=3.0, training_batch_count=4)
        >>> ctx.training_loss_total / ctx.training_batch_count
        0.75
    """

    epoch: int = 0
    training_loss_total: float = 0.0
    validation_loss_total: float = 0.0
    training_batch_count: int = 0
    validation_batch_count: int = 0
    training_metrics: Dict[str, float] = field(default_factory=dict)
    validation_metrics: Dict[str, float] = field(default_factory=dict)
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    should_stop_training: bool = False
