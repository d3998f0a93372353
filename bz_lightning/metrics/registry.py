"""Metric names -> factories: the built-ins, ``register_metric`` and the ``bz.metrics`` entry points.

A third-party package adds metrics by declaring entry points in the group ``bz.metrics``::

    [project.entry-points."bz.metrics"]
    balanced_accuracy = "my_pkg.metrics:BalancedAccuracy"

``list_available_metrics()`` lists those names without importing anything; an entry point
is loaded the first time ``get_metric`` asks for its name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bz_lightning.errors import BzConfigError, did_you_mean
from bz_lightning.metrics.base import Metric
from bz_lightning.metrics.classification import Accuracy, F1Score, Precision, Recall, TopKAccuracy
from bz_lightning.metrics.regression import MeanAbsoluteError, MeanSquaredError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "METRIC_REGISTRY",
    "ENTRY_POINT_GROUP",
    "MetricFactory",
    "get_metric",
    "list_available_metrics",
    "register_metric",
]

MetricFactory = Callable[..., Metric]

ENTRY_POINT_GROUP = "bz.metrics"

METRIC_REGISTRY: dict[str, MetricFactory] = {
    "accuracy": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1_score": F1Score,
    "mse": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "top5_accuracy": functools.partial(TopKAccuracy, k=5),
}


def register_metric(name: str, factory: MetricFactory, *, overwrite: bool = False) -> None:
    """Make ``get_metric(name, **kwargs)`` return ``factory(**kwargs)``.

    Args:
        name: the registry name (what a config's ``metrics:`` list refers to).
        factory: a ``Metric`` subclass or any callable returning a ``Metric``.
        overwrite: replace an existing entry of the same name instead of raising.

    Raises:
        BzConfigError: ``name`` is empty or taken (without ``overwrite``), or ``factory`` is
            not callable.

    Example:
        >>> from bz_lightning.metrics import Accuracy, get_metric, register_metric
        >>> register_metric("val_acc", lambda **kw: Accuracy(name="val_acc", **kw), overwrite=True)
        >>> get_metric("val_acc").name
        'val_acc'
    """
    if not isinstance(name, str) or not name:
        raise BzConfigError(f"register_metric: name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise BzConfigError(f"register_metric: the factory for {name!r} must be callable, got {factory!r}")
    if name in METRIC_REGISTRY and not overwrite:
        raise BzConfigError(
            f"register_metric: a metric named {name!r} is already registered ({METRIC_REGISTRY[name]!r}); "
            "pass overwrite=True to replace it"
        )
    METRIC_REGISTRY[name] = factory


def _entry_points() -> dict[str, EntryPoint]:
    # Scanned on every call (a few ms) rather than cached, so a package installed or put on
    # sys.path while the process runs is seen.
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_available_metrics() -> list[str]:
    """Every name ``get_metric`` accepts: built-ins first, then registered and entry-point names.

    Imports neither torch nor any plugin package.

    Example:
        >>> list_available_metrics()[:7]
        ['accuracy', 'precision', 'recall', 'f1_score', 'mse', 'mae', 'top5_accuracy']
    """
    names = list(METRIC_REGISTRY)
    names += [name for name in _entry_points() if name not in METRIC_REGISTRY]
    return names


def get_metric(metric_name: str, **kwargs: Any) -> Metric:
    """A new metric by registry name, built with ``kwargs``.

    Args:
        metric_name: a name from ``list_available_metrics()``.
        **kwargs: passed to the metric's constructor (``average="macro"``, ``name="acc"``...).

    Raises:
        ValueError (``BzConfigError``): the name is unknown (the message lists the available
            names and the closest one), the metric does not take one of ``kwargs``, its entry
            point fails to load, or the factory returns something that is not a ``Metric``.

    Example:
        >>> get_metric("precision", average="macro")
        Precision(average='macro', name=None)
        >>> get_metric(metric_name="recall").name
        'recall'
        >>> get_metric("top5_accuracy").k
        5
    """
    factory = METRIC_REGISTRY.get(metric_name)
    if factory is None:
        points = _entry_points()
        if metric_name not in points:
            available = list_available_metrics()
            raise BzConfigError(
                f"unknown metric {metric_name!r}{did_you_mean(metric_name, available)}; "
                f"available metrics: {', '.join(available)}"
            )
        factory = _load(points[metric_name])
        METRIC_REGISTRY[metric_name] = factory
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C callables have none
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            raise BzConfigError(
                f"metric {metric_name!r} does not accept {kwargs}: {err}; its parameters are {signature}"
            ) from None
    metric = factory(**kwargs)
    if not isinstance(metric, Metric):
        raise BzConfigError(
            f"metric {metric_name!r}: its factory {factory!r} returned {type(metric).__name__}, "
            "expected a bz_lightning.metrics.Metric"
        )
    return metric


def _load(point: EntryPoint) -> MetricFactory:
    where = f"entry point {point.name} = {point.value} (group {ENTRY_POINT_GROUP!r})"
    try:
        factory = point.load()
    except Exception as err:
        raise BzConfigError(f"metric {point.name!r}: {where} failed to load: {type(err).__name__}: {err}") from err
    if not callable(factory):
        raise BzConfigError(f"metric {point.name!r}: {where} is {factory!r}, expected a Metric class or factory")
    return factory  # type: ignore[no-any-return]
