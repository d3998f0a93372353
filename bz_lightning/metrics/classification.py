"""Classification metrics: ``Accuracy``, ``Precision``, ``Recall``, ``F1Score``, ``TopKAccuracy``.

Each one is computed by the matching ``torchmetrics.classification`` class, built at the
first batch on that batch's device. The task is inferred from the first batch (see
``bz_lightning.metrics._task``): ``preds`` of shape (N, C) are multiclass scores over C
classes with (N,) class-index targets; ``preds`` of shape (N,) are binary logits or
probabilities with 0/1 targets. ``task=`` and ``num_classes=`` override the inference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, get_args

from bz_lightning.errors import BzConfigError
from bz_lightning.metrics._task import ClassificationShim, Task, TaskName

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["Accuracy", "Precision", "Recall", "F1Score", "TopKAccuracy", "Average"]

Average = Literal["micro", "macro", "weighted", "binary"]
_AVERAGES = get_args(Average)


class Accuracy(ClassificationShim):
    """Fraction of samples whose predicted class equals the target.

    Args:
        name: the name the value is reported under (default ``"accuracy"``).
        task: ``"binary"`` or ``"multiclass"``; inferred from the first batch if omitted.
        num_classes: number of classes; inferred from ``preds.shape[1]`` if omitted.

    Shapes:
        ``preds`` (N, C) scores with ``targets`` (N,) class indices, or ``preds`` (N,)
        logits/probabilities with ``targets`` (N,) in {0, 1}.

    Example:
        >>> import torch
        >>> acc = Accuracy()
        >>> acc.update(torch.tensor([[2.0, 0.1], [0.3, 1.0], [0.9, 0.2]]), torch.tensor([0, 1, 1]))
        >>> round(acc.compute(), 4)
        0.6667
    """

    default_name = "accuracy"

    def __init__(
        self, name: Optional[str] = None, *, task: Optional[TaskName] = None, num_classes: Optional[int] = None
    ) -> None:
        super().__init__(task=task, num_classes=num_classes, name=name)

    def _make(self, task: Task) -> torchmetrics.Metric:
        from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

        if task.kind == "binary":
            return BinaryAccuracy(validate_args=False)
        return MulticlassAccuracy(task.num_classes, average="micro", validate_args=False)


class _AveragedScore(ClassificationShim):
    """Precision, recall or F1, averaged over classes like scikit-learn's ``average=``.

    ``average=None`` (the default) scores the positive class on binary data, as
    scikit-learn's and torchmetrics' binary metrics do by default, and micro-averages over
    the classes of multiclass data (scikit-learn's ``average="micro"``).
    """

    _binary_cls: str
    _multiclass_cls: str

    def _init_average(
        self,
        average: Optional[Average],
        name: Optional[str],
        task: Optional[TaskName],
        num_classes: Optional[int],
    ) -> None:
        if average is not None and average not in _AVERAGES:
            raise BzConfigError(
                f"{type(self).__name__}: average={average!r} is not supported; use one of {list(_AVERAGES)} "
                "or None (the positive class of binary data, micro over the classes of multiclass data)"
            )
        super().__init__(task=task, num_classes=num_classes, name=name)
        self.average = average

    def _make(self, task: Task) -> torchmetrics.Metric:
        import torchmetrics.classification as tmc

        average = self.average
        if average is None:
            average = "binary" if task.kind == "binary" else "micro"
        if average == "binary":
            if task.kind != "binary":
                raise ValueError(
                    f"{self.name_for_errors}: average='binary' scores the positive class of a binary task, but "
                    f"the first batch is {task.describe()}; use one of ['micro', 'macro', 'weighted']"
                )
            return getattr(tmc, self._binary_cls)(validate_args=False)  # type: ignore[no-any-return]
        # micro/macro/weighted on binary data average over both classes, as scikit-learn does.
        return getattr(tmc, self._multiclass_cls)(  # type: ignore[no-any-return]
            task.num_classes, average=average, validate_args=False
        )

    def _repr_args(self) -> dict[str, object]:
        return {"average": self.average, **super()._repr_args()}


class Precision(_AveragedScore):
    """Precision ``tp / (tp + fp)``, averaged over classes as scikit-learn's ``precision_score``.

    Args:
        average: ``None`` (default: ``"binary"`` on binary data, ``"micro"`` on multiclass
            data), ``"micro"`` (global counts), ``"macro"`` (unweighted mean over classes),
            ``"weighted"`` (mean weighted by each class's support), or ``"binary"`` (the
            positive class of a binary task only, scikit-learn's default for binary data).
            Classes absent from both preds and targets are left out of the average; a class
            with no predicted samples scores 0.
        name: the name the value is reported under (default ``"precision"``).
        task: ``"binary"`` or ``"multiclass"``; inferred from the first batch if omitted.
        num_classes: number of classes; inferred from ``preds.shape[1]`` if omitted.

    Shapes:
        as ``Accuracy``.

    Raises:
        BzConfigError: ``average`` is not one of the values above.

    Example:
        >>> import torch
        >>> p = Precision(average="macro")
        >>> p.update(torch.tensor([[2.0, 0.1], [0.3, 1.0], [0.9, 0.2]]), torch.tensor([0, 1, 1]))
        >>> round(p.compute(), 4)
        0.75
    """

    _binary_cls = "BinaryPrecision"
    _multiclass_cls = "MulticlassPrecision"
    default_name = "precision"

    def __init__(
        self,
        average: Optional[Average] = None,
        name: Optional[str] = None,
        *,
        task: Optional[TaskName] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        self._init_average(average, name, task, num_classes)


class _NameFirstScore(_AveragedScore):
    """The spec's ``Recall(name=None)`` / ``F1Score(name=None)``: ``name`` first, the rest
    keyword-only (``Precision`` keeps ``average`` first, as documented)."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        average: Optional[Average] = None,
        task: Optional[TaskName] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        self._init_average(average, name, task, num_classes)


class Recall(_NameFirstScore):
    """Recall ``tp / (tp + fn)``, averaged over classes as scikit-learn's ``recall_score``.

    Args:
        name: the name the value is reported under (default ``"recall"``).
        average: ``None`` (default), ``"micro"``, ``"macro"``, ``"weighted"`` or ``"binary"``,
            as for ``Precision``.
        task: ``"binary"`` or ``"multiclass"``; inferred from the first batch if omitted.
        num_classes: number of classes; inferred from ``preds.shape[1]`` if omitted.

    Shapes:
        as ``Accuracy``.

    Example:
        >>> import torch
        >>> r = Recall(average="macro")
        >>> r.update(torch.tensor([[2.0, 0.1], [0.3, 1.0], [0.9, 0.2]]), torch.tensor([0, 1, 1]))
        >>> round(r.compute(), 4)
        0.75
    """

    _binary_cls = "BinaryRecall"
    _multiclass_cls = "MulticlassRecall"
    default_name = "recall"


class F1Score(_NameFirstScore):
    """F1, the harmonic mean of precision and recall, averaged as scikit-learn's ``f1_score``.

    Args:
        name: the name the value is reported under (default ``"f1_score"``).
        average: ``None`` (default), ``"micro"``, ``"macro"``, ``"weighted"`` or ``"binary"``,
            as for ``Precision``.
        task: ``"binary"`` or ``"multiclass"``; inferred from the first batch if omitted.
        num_classes: number of classes; inferred from ``preds.shape[1]`` if omitted.

    Shapes:
        as ``Accuracy``.

    Example:
        >>> import torch
        >>> f1 = F1Score(average="binary")
        >>> f1.update(torch.tensor([2.0, -1.0, 0.5, -0.2]), torch.tensor([1, 0, 0, 1]))
        >>> round(f1.compute(), 4)
        0.5
    """

    _binary_cls = "BinaryF1Score"
    _multiclass_cls = "MulticlassF1Score"
    default_name = "f1_score"


class TopKAccuracy(ClassificationShim):
    """Fraction of samples whose target is among the ``k`` highest-scored classes.

    Args:
        k: how many of the top predictions count (>= 1, and at most the number of classes).
        name: the name the value is reported under (default ``"top<k>_accuracy"``, e.g.
            ``"top5_accuracy"``, the registry's name for ``k=5``).
        num_classes: number of classes; inferred from ``preds.shape[1]`` if omitted.

    Shapes:
        ``preds`` (N, C) scores, ``targets`` (N,) class indices.

    Raises:
        BzConfigError: ``k`` is not an int >= 1.
        ValueError: at the first batch, if ``preds`` are not (N, C) scores or ``k > C``.

    Example:
        >>> import torch
        >>> top2 = TopKAccuracy(k=2)
        >>> top2.update(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), torch.tensor([1, 0]))
        >>> top2.compute()
        0.5
    """

    _labels_from_scores = False  # the top k need the scores

    def __init__(self, k: int = 5, name: Optional[str] = None, *, num_classes: Optional[int] = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BzConfigError(f"TopKAccuracy: k={k!r} is invalid; use an int >= 1")
        super().__init__(num_classes=num_classes, name=name)
        self.k = k

    @property
    def default_name(self) -> str:  # type: ignore[override]
        return f"top{self.k}_accuracy"

    def _make(self, task: Task) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        if not task.scores:
            raise ValueError(
                f"{self.name_for_errors}: needs multiclass scores of shape (N, C) with class-index targets of "
                f"shape (N,); the first batch is {task.describe()}"
            )
        if self.k > task.num_classes:
            raise ValueError(
                f"{self.name_for_errors}: k={self.k} is larger than the number of classes ({task.num_classes}); "
                f"use k <= {task.num_classes}"
            )
        return MulticlassAccuracy(task.num_classes, top_k=self.k, average="micro", validate_args=False)

    def _repr_args(self) -> dict[str, object]:
        return {"k": self.k, **super()._repr_args()}
