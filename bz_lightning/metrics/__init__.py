"""Metrics tracked during training: bz's ``Metric`` API, computed by torchmetrics.

``Metric`` is the abstract base a user subclasses (``reset``, ``update(preds, targets)``,
``compute() -> float``, ``name``). The built-ins wrap the matching torchmetrics classes: their
state stays on the training device, ``update`` never waits for the device, and ``compute``
reduces across processes under DDP.

Importing this package and calling ``list_available_metrics()`` import neither torch nor
torchmetrics; they are imported at a metric's first ``update``.

Example:
    >>> from bz_lightning.metrics import get_metric, list_available_metrics
    >>> list_available_metrics()[:3]
    ['accuracy', 'precision', 'recall']
    >>> get_metric("f1_score", average="macro").name
    'f1_score'
"""

from bz_lightning.metrics.base import Metric
from bz_lightning.metrics.classification import Accuracy, Average, F1Score, Precision, Recall, TopKAccuracy
from bz_lightning.metrics.registry import (
    ENTRY_POINT_GROUP,
    METRIC_REGISTRY,
    MetricFactory,
    get_metric,
    list_available_metrics,
    register_metric,
)
from bz_lightning.metrics.regression import MeanAbsoluteError, MeanSquaredError

__all__ = [
    "Metric",
    "Accuracy",
    "Precision",
    "Recall",
    "F1Score",
    "TopKAccuracy",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "Average",
    "METRIC_REGISTRY",
    "ENTRY_POINT_GROUP",
    "MetricFactory",
    "get_metric",
    "list_available_metrics",
    "register_metric",
]
