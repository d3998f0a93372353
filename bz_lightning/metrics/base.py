"""``Metric``: the contract every bz metric follows.

Importing this module does not import torch: ``bz list-metrics`` stays fast.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Optional

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

    def state_dict(self) -> Optional[dict[str, Any]]:
        """What the metric has accumulated since the last ``reset()``, as plain values, so
        that a checkpoint written in the middle of an epoch can carry it over (``None``: it
        cannot be saved, and a run resumed from such a checkpoint says so).

        The default is a copy of the instance's attributes when each one is a number, a
        string, a tensor or a list, tuple or dict of those, as in the example above; a
        metric holding anything else overrides this and ``load_state_dict``.
        """
        state = vars(self)
        if not all(_storable(value) for value in state.values()):
            return None
        return copy.deepcopy(dict(state))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what ``state_dict`` returned (in a new process, after a resume)."""
        vars(self).update(copy.deepcopy(state))


def _storable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _storable(v) for k, v in value.items())
    import torch  # only ever called while training, with torch imported

    return isinstance(value, torch.Tensor)
