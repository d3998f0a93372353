"""Classification inputs: infer the task from the first batch, check every later batch cheaply.

Shapes accepted (``N`` samples, ``C`` classes):

* multiclass: ``preds`` (N, C) logits or probabilities, ``targets`` (N,) class indices;
  or, with ``num_classes`` given, ``preds`` (N,) integer labels.
* binary: ``preds`` (N,) or (N, 1) logits or probabilities (a batch whose values all lie in
  [0, 1] is read as probabilities, otherwise as logits, as torchmetrics does), ``targets``
  of the same shape holding 0/1 (integer, bool or float, so ``BCEWithLogitsLoss`` targets
  work unchanged).

The first batch is validated completely (one host synchronisation, once). Later batches get
shape checks in Python and their targets' (min, max), kept on the device and checked only
when the value is read (with it, in the same host read), so ``update`` never waits for the
device. (Float binary targets are checked
for being exactly 0/1 at the first batch; later ones only for lying in [0, 1].)
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional, get_args

from bz_lightning.errors import BzConfigError
from bz_lightning.metrics._shim import TorchmetricsShim

if TYPE_CHECKING:
    import torchmetrics
    from torch import Tensor

__all__ = ["Task", "TaskName", "ClassificationShim", "binary_labels", "infer_task", "check_task_args"]

TaskName = Literal["binary", "multiclass"]
_TASKS = get_args(TaskName)


@dataclass(frozen=True)
class Task:
    """What the first batch said. ``scores``: preds are (N, C) scores rather than (N,) values."""

    kind: TaskName
    num_classes: int
    scores: bool

    def describe(self) -> str:
        if self.kind == "binary":
            return "binary preds of shape (N,) or (N, 1) with 0/1 targets of the same shape"
        if self.scores:
            return f"multiclass scores of shape (N, {self.num_classes}) with class-index targets of shape (N,)"
        return f"multiclass integer labels of shape (N,) with class-index targets of shape (N,) ({self.num_classes} classes)"


def check_task_args(metric: str, task: Optional[str], num_classes: Optional[int]) -> None:
    """Validate the optional ``task``/``num_classes`` constructor arguments."""
    if task is not None and task not in _TASKS:
        raise BzConfigError(f"{metric}: task={task!r} is not supported; use one of {list(_TASKS)} or None to infer it")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2):
        raise BzConfigError(f"{metric}: num_classes={num_classes!r} is invalid; use an int >= 2 or None to infer it")
    if task == "binary" and num_classes not in (None, 2):
        raise BzConfigError(f"{metric}: task='binary' has 2 classes, got num_classes={num_classes!r}")


def infer_task(
    metric: str, preds: Tensor, task: Optional[str] = None, num_classes: Optional[int] = None
) -> Task:
    """Infer the task from the shape of the first batch's ``preds`` (no host sync).

    Raises:
        ValueError: ``preds`` has a shape no task accepts, or contradicts ``task``/``num_classes``.
    """
    shape = tuple(preds.shape)
    if preds.ndim == 2 and shape[1] > 1:
        if task == "binary":
            raise ValueError(f"{metric}: task='binary' needs preds of shape (N,) or (N, 1), got {shape}")
        if num_classes is not None and num_classes != shape[1]:
            raise ValueError(
                f"{metric}: num_classes={num_classes} but preds of shape {shape} hold scores for {shape[1]} classes"
            )
        return Task("multiclass", shape[1], scores=True)
    if preds.ndim == 1 or (preds.ndim == 2 and shape[1] == 1):
        if task == "multiclass" or (task is None and num_classes is not None and num_classes > 2):
            if num_classes is None:
                raise ValueError(
                    f"{metric}: task='multiclass' with preds of shape {shape} needs num_classes; "
                    "or pass scores of shape (N, C)"
                )
            if preds.is_floating_point():
                raise ValueError(
                    f"{metric}: multiclass preds of shape {shape} must be integer class labels, got {preds.dtype}; "
                    "pass scores of shape (N, C) instead"
                )
            return Task("multiclass", num_classes, scores=False)
        return Task("binary", 2, scores=False)
    raise ValueError(
        f"{metric}: preds of shape {shape} are not supported; expected (N, C) class scores (multiclass) "
        "or (N,) values (binary)"
    )


class ClassificationShim(TorchmetricsShim):
    """A torchmetrics-backed classification metric; subclasses implement ``_make(task)``.

    Args:
        task: ``"binary"`` or ``"multiclass"`` to override inference from the first batch.
        num_classes: the number of classes, to override inference (needed for integer
            label preds of shape (N,) in a multiclass task).
        name: the name the value is reported under.
    """

    higher_is_better = True
    # Multiclass scores reach torchmetrics as their argmax (all a top-1 metric looks at);
    # top-k needs the scores themselves.
    _labels_from_scores = True
    # Every ~this many batches the per-batch (min, max) pairs are folded into one pair.
    _FOLD_EVERY = 256

    def __init__(
        self, *, task: Optional[TaskName] = None, num_classes: Optional[int] = None, name: Optional[str] = None
    ) -> None:
        super().__init__(name)
        check_task_args(type(self).__name__, task, num_classes)
        self.task = task
        self.num_classes = num_classes
        self._task: Optional[Task] = None
        # (min, max) of each batch's targets (and label preds), still on the device: read
        # only in compute(), so that update() never waits for the device.
        self._ranges: list[tuple[Tensor, Tensor]] = []

    def _make(self, task: Task) -> torchmetrics.Metric:
        """Return the torchmetrics metric for ``task``; raise ``ValueError`` if it does not fit."""
        raise NotImplementedError

    # ------------------------------------------------------------------ first batch
    def _build(self, preds: Tensor, targets: Tensor) -> torchmetrics.Metric:
        task = infer_task(self.name_for_errors, preds, self.task, self.num_classes)
        tm = self._make(task)
        self._task = task
        preds, targets = self._check_shapes(preds, targets)
        if task.kind == "multiclass" and targets.is_floating_point():
            raise ValueError(
                f"{self.name_for_errors}: targets must be integer class indices for {task.describe()}, "
                f"got {targets.dtype}"
            )
        self._check_values(preds, targets)  # the one host sync, at the first batch only
        return tm

    def _check_values(self, preds: Tensor, targets: Tensor) -> None:
        """Raise ``ValueError`` if a (shape-checked) batch holds a value the task does not allow."""
        task = self._task
        assert task is not None
        import torch

        checked = [targets] if task.scores or task.kind == "binary" else [targets, preds]
        if task.kind == "binary":
            fits = [((t == 0) | (t == 1)).all() for t in checked]
        else:
            fits = [((t >= 0) & (t < task.num_classes)).all() for t in checked]
        if bool(torch.stack(fits).all()):  # one host read
            return
        found = sorted({v for t in checked for v in t.unique().tolist()})
        raise ValueError(f"{self.name_for_errors}: {self._allowed()}; got values {found[:20]}")

    def _diagnose(self, preds: Tensor, targets: Tensor) -> None:
        self._check_values(preds, targets)

    def _allowed(self) -> str:
        task = self._task
        assert task is not None
        if task.kind == "binary":
            return f"targets must be 0 or 1 for {task.describe()}"
        what = "targets" if task.scores else "targets and label preds"
        return f"{what} must be class indices in [0, {task.num_classes}) for {task.describe()}"

    # ------------------------------------------------------------------ every batch
    def _check_shapes(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        task = self._task
        assert task is not None
        if task.scores:
            if preds.ndim == 2 and preds.shape[1] == task.num_classes and targets.shape == preds.shape[:1]:
                return preds, targets
        else:
            if preds.ndim == 2 and preds.shape[1] == 1:
                preds = preds[:, 0]
            if targets.ndim == 2 and targets.shape[1] == 1:
                targets = targets[:, 0]
            if preds.ndim == 1 and targets.shape == preds.shape:
                return preds, targets
        raise ValueError(
            f"{self.name_for_errors}: preds of shape {tuple(preds.shape)} and targets of shape "
            f"{tuple(targets.shape)} do not fit the task inferred from the first batch: {task.describe()}"
        )

    def _prepare(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        preds, targets = self._check_shapes(preds, targets)
        ranges = self._ranges
        ranges.append(targets.aminmax())
        task = self._task
        if task.scores:  # type: ignore[union-attr]
            if self._labels_from_scores:
                preds = preds.argmax(1)
        elif task.kind == "binary":  # type: ignore[union-attr]
            if targets.is_floating_point():
                targets = targets.long()
            if preds.is_floating_point():
                # torchmetrics decides logits or probabilities per update; batches reach it
                # several at a time, so the decision is taken here, per batch, as it would.
                preds = binary_labels(preds)
        else:
            ranges.append(preds.aminmax())
        if len(ranges) >= self._FOLD_EVERY:
            self._fold_ranges()
        return preds, targets

    def _fold_ranges(self) -> None:
        import torch

        lows, highs = zip(*self._ranges)
        self._ranges = [(torch.stack(lows).amin(), torch.stack(highs).amax())]

    def _pending_check(self) -> Tensor | None:
        if not self._ranges:
            return None
        self._fold_ranges()
        import torch

        return torch.stack(self._ranges[0])

    def _check_read(self, values: list[float]) -> None:
        low, high = values
        task = self._task
        assert task is not None
        if low < 0 or high > task.num_classes - 1:
            raise ValueError(
                f"{self.name_for_errors}: {self._allowed()}; a batch since the last reset held values "
                f"from {low:g} to {high:g}"
            )

    def _share_key(self) -> Hashable | None:
        """Per-class or summed stat scores over the same classes from the same inputs."""
        from torchmetrics.classification import MulticlassStatScores

        tm = self._tm
        if not isinstance(tm, MulticlassStatScores) or type(self)._prepare is not ClassificationShim._prepare:
            return None
        # The update of a stat-scores metric depends on these and on nothing else. The average
        # only decides whether the counts are kept per class or summed over classes ("micro"
        # with top_k 1); torchmetrics' micro reduction sums per-class counts itself.
        return (MulticlassStatScores, self._task, self._labels_from_scores, tm.num_classes, tm.top_k,
                tm.ignore_index, tm.multidim_average)

    def reset(self) -> None:
        super().reset()
        self._ranges = []

    def _build_info(self) -> dict[str, Any]:
        task = self._task
        assert task is not None
        if self._ranges:
            self._fold_ranges()
        return {"kind": task.kind, "num_classes": task.num_classes, "scores": task.scores,
                "ranges": [list(pair) for pair in self._ranges]}

    def _rebuild(self, info: dict[str, Any]) -> torchmetrics.Metric:
        task = Task(info["kind"], int(info["num_classes"]), bool(info["scores"]))
        self._task = task
        self._ranges = [(low, high) for low, high in info.get("ranges", [])]
        return self._make(task)

    def _to_device(self, device: Any) -> None:
        super()._to_device(device)
        self._ranges = [(low.to(device), high.to(device)) for low, high in self._ranges]

    def _repr_args(self) -> dict[str, object]:
        args: dict[str, object] = {}
        if self.task is not None:
            args["task"] = self.task
        if self.num_classes is not None:
            args["num_classes"] = self.num_classes
        return {**args, **super()._repr_args()}


def binary_labels(preds: Tensor) -> Tensor:
    """0/1 labels from binary logits or probabilities, as torchmetrics' binary metrics make them.

    torchmetrics applies a sigmoid when a batch has values outside [0, 1], then thresholds at
    0.5; ``sigmoid(x) > 0.5`` is ``x > 0``, so no sigmoid is computed here. On an accelerator
    the choice is made on the device (``torch.where``), without a host sync.
    """
    if preds.device.type == "cpu":  # a host "sync" costs nothing on the CPU
        low, high = preds.aminmax()
        return preds > (0.5 if low.item() >= 0 and high.item() <= 1 else 0.0)
    import torch

    logits = ((preds < 0) | (preds > 1)).any()
    return torch.where(logits, preds > 0, preds > 0.5)
