"""``PluginContext``: the state of a run that plugins read and write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Protocol, Union

if TYPE_CHECKING:
    from bz_lightning._split_stats import SplitReading, SplitStats

__all__ = ["PluginContext", "RunningStats", "context_values", "epoch_values", "mean", "restore_context",
           "running_stats", "split_stats"]

#: The context's fields that describe where a run is: what checkpoints and ``result.json``
#: keep (not ``hyperparameters``, which the run's arguments give, nor ``extra``).
_SAVED_FIELDS = ("epoch", "training_loss_total", "training_batch_count", "validation_loss_total",
                 "validation_batch_count", "training_metrics", "validation_metrics", "should_stop_training")


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


class RunningStats(Protocol):
    """A split's statistics within the current loop: what the bridge copies into the context.

    ``BzModule`` keeps its own (``SplitStats``); for any other ``LightningModule`` the bridge
    keeps them from what Lightning tracks (``bz_lightning._logged_stats.LoggedStats``).
    """

    @property
    def count(self) -> int:
        """Batches counted in ``loss_total``."""

    @property
    def loss_total(self) -> float:
        """Sum of those batches' losses."""

    @property
    def last_loss(self) -> Any:
        """The last batch's loss (a float or a scalar tensor), or ``None``."""

    def metric_values(self) -> dict[str, float]:
        """Each metric's value so far, by name."""

    def read_loss_total(self) -> float:
        """``loss_total``, as a function the context calls only when a plugin reads it."""

    def read(self, metrics: bool = True) -> SplitReading:
        """The loss total, last loss, count and (with ``metrics``) metric values, read at once."""


def context_values(context: PluginContext) -> dict[str, Any]:
    """The context's epoch, loss totals, batch counts, metrics and stop request, as plain values.

    >>> context_values(PluginContext(epoch=3))["epoch"]
    3
    """
    return {name: (dict(value) if isinstance(value, dict) else value)
            for name in _SAVED_FIELDS for value in (getattr(context, name),)}


def restore_context(context: PluginContext, values: dict[str, Any]) -> PluginContext:
    """Put ``context_values`` back into ``context`` (unknown names are ignored); return it."""
    for name in _SAVED_FIELDS:
        if name in values:
            value = values[name]
            setattr(context, name, dict(value) if isinstance(value, dict) else value)
    return context


def split_stats(module: Any, split: str) -> SplitStats | None:
    """``module``'s running statistics of ``split`` (``"train"``, ``"val"``, ``"test"``) when it
    is a ``BzModule`` (a ``SplitStats``); ``None`` for any other module (or none)."""
    stats = getattr(module, "stats", None)
    return stats.get(split) if isinstance(stats, dict) else None


def running_stats(context: PluginContext, split: str) -> RunningStats | None:
    """The running statistics of ``split`` (``"train"`` or ``"val"``) in the run ``context``
    belongs to, whatever its ``LightningModule``: the ones the bridge publishes in
    ``context.extra["split_stats"]``, else the ``BzModule``'s own."""
    published = context.extra.get("split_stats")
    if isinstance(published, dict) and split in published:
        return published[split]  # type: ignore[no-any-return]
    return split_stats(context.extra.get("lightning_module"), split)


def mean(total: float, count: int) -> float:
    """``total / count``, NaN when nothing was counted (a mean loss before its first batch)."""
    return total / count if count else float("nan")
