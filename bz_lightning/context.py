"""``PluginContext``: the state of a run that plugins read and write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Union

if TYPE_CHECKING:
    from bz_lightning.module import SplitStats

__all__ = ["PluginContext", "epoch_values", "mean", "split_stats"]


class _ReadOnDemand:
    """A ``float`` field that may be given a function producing it instead of the value.

    The bridge sets the running loss totals at batch stages this way: reading one from a
    device means waiting for the device, and most plugins that run at every batch never
    look at it. The function runs the first time the field is read; its value is kept.
    """

    def __init__(self, default: float) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> float:
        if obj is None:
            return self.default  # the dataclass field's default
        value = obj.__dict__[self.slot]
        if callable(value):
            value = obj.__dict__[self.slot] = float(value())
        return value  # type: ignore[no-any-return]

    def __set__(self, obj: Any, value: Union[float, Callable[[], float]]) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class PluginContext:
    """What the trainer tells plugins at every stage.

    Loss totals and batch counts cover the current epoch: they are reset at
    ``start_epoch`` (training) and ``start_validation_loop`` (validation), so the mean
    training loss of an epoch is ``training_loss_total / training_batch_count``. At batch
    stages the loss totals are read from the device only when a plugin reads them (on an
    accelerator each such read waits for the device).
    Metrics are filled at ``end_training_loop`` and ``end_validation_loop`` under each
    metric's ``name``. A plugin asks for the run to stop by setting
    ``should_stop_training``; the epoch in progress finishes and no later epoch starts.

    Example:
        >>> ctx = PluginContext(epoch=2, training_loss_total=3.0, training_batch_count=4)
        >>> ctx.training_loss_total / ctx.training_batch_count
        0.75
    """

    epoch: int = 0
    # Set to a function at batch stages, read from the device only when a plugin reads it.
    training_loss_total: float = _ReadOnDemand(0.0)  # type: ignore[assignment]
    validation_loss_total: float = _ReadOnDemand(0.0)  # type: ignore[assignment]
    training_batch_count: int = 0
    validation_batch_count: int = 0
    training_metrics: Dict[str, float] = field(default_factory=dict)
    validation_metrics: Dict[str, float] = field(default_factory=dict)
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    should_stop_training: bool = False


def epoch_values(context: PluginContext, train: str = "training_", val: str = "validation_") -> dict[str, float]:
    """The epoch's mean losses and metrics, as plugins report and monitor them.

    Keys: ``<train>loss`` and ``<train><metric>``, then ``<val>loss`` and ``<val><metric>``
    when validation ran. The prefixes name them for each reader: ``training_``/``validation_``
    (early stopping's monitors), ``train_``/``val_`` (Lightning's logs, ``optimized_metric``),
    ``""``/``val_`` (Keras-style callback logs).

    Example:
        >>> ctx = PluginContext(training_loss_total=3.0, training_batch_count=2, training_metrics={"accuracy": 0.5})
        >>> epoch_values(ctx)
        {'training_loss': 1.5, 'training_accuracy': 0.5}
        >>> epoch_values(ctx, train="")
        {'loss': 1.5, 'accuracy': 0.5}
    """
    values: dict[str, float] = {}
    if context.training_batch_count:
        values[f"{train}loss"] = mean(context.training_loss_total, context.training_batch_count)
    values.update({f"{train}{k}": float(v) for k, v in context.training_metrics.items()})
    if context.validation_batch_count:
        values[f"{val}loss"] = mean(context.validation_loss_total, context.validation_batch_count)
        values.update({f"{val}{k}": float(v) for k, v in context.validation_metrics.items()})
    return values


def split_stats(module: Any, split: str) -> SplitStats | None:
    """``module``'s running statistics of ``split`` (``"train"``, ``"val"``, ``"test"``) when it
    is a ``BzModule``; ``None`` for any other module (or none)."""
    stats = getattr(module, "stats", None)
    return stats.get(split) if isinstance(stats, dict) else None


def mean(total: float, count: int) -> float:
    """``total / count``, NaN when nothing was counted (a mean loss before its first batch)."""
    return total / count if count else float("nan")
