"""``Metric``: the contract every bz metric follows.

Importing this module does not import torch: ``bz list-metrics`` stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Optional

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Metric"]


class Metric(ABC):
    """Abstract base class of all metrics: accumulate over batches, then compute one float.

    ``BzModule`` gives each split (train, val, test) its own deep copy of a metric, calls
    ``reset()`` at the start of every epoch, ``update(preds, targets)`` once per batch with
    the model's detached output, and ``compute()`` when the epoch's value is needed. The
    value is reported in ``PluginContext.training_metrics`` / ``validation_metrics`` under
    ``name`` and logged to Lightning as ``train_<name>`` / ``val_<name>``.

    Args:
        name: the name the value is reported under; defaults to the class name.

    Attributes:
        higher_is_better: ``True`` if larger values are better (accuracy), ``False`` if
            smaller are (errors), ``None`` if unknown. Lets a checkpoint or early-stopping
            monitor pick ``mode="max"``/``"min"``.

    Example:
        >>> class MeanError(Metric):
        ...     def __init__(self, name=None):
        ...         super().__init__(name)
        ...         self.total, self.count = 0.0, 0
        ...     def reset(self):
        ...         self.total, self.count = 0.0, 0
        ...     def update(self, preds, targets):
        ...         self.total += float((preds - targets).sum())
        ...         self.count += targets.numel()
        ...     def compute(self):
        ...         return self.total / self.count if self.count else 0.0
        >>> import torch
        >>> m = MeanError()
        >>> m.update(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        >>> m.name, m.compute()
        ('MeanError', 1.5)
    """

    higher_is_better: ClassVar[Optional[bool]] = None

    def __init__(self, name: Optional[str] = None) -> None:
        self._name = name

    @abstractmethod
    def reset(self) -> None:
        """Reset the metric state."""

    @abstractmethod
    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Update the metric with one batch of predictions and targets."""

    @abstractmethod
    def compute(self) -> float:
        """Compute the metric's value over every batch since the last ``reset()``."""

    @property
    def name(self) -> str:
        """The name the value is reported and logged under."""
        return self._name or self.__class__.__name__
