"""The common machinery of the built-in metrics: a bz ``Metric`` in front of a torchmetrics one.

The torchmetrics object is built at the first ``update``, on that batch's device, once the
first batch has told what the task is; it keeps its state as tensors on that device and
reduces it across processes in its own ``compute()`` under DDP. torch and torchmetrics are
imported there, not when this module is imported.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from bz_lightning.metrics.base import Metric

if TYPE_CHECKING:
    import torchmetrics
    from torch import Tensor

__all__ = ["TorchmetricsShim"]


class TorchmetricsShim(Metric):
    """A ``Metric`` computed by a torchmetrics metric created lazily at the first batch.

    Subclasses implement ``_build(preds, targets)``, which inspects (and validates) the first
    batch and returns the torchmetrics object, and ``_prepare(preds, targets)``, the per-batch
    path: cheap shape checks, no host synchronisation, returning what to hand to torchmetrics.
    """

    #: Batches whose prepared inputs wait to reach torchmetrics in one ``update``: a
    #: torchmetrics update costs tens of microseconds of Python whatever the batch holds,
    #: so 32 small batches cost about what one does. ``compute()`` takes the waiting ones.
    BATCHES_PER_UPDATE = 32

    #: The name a value is reported under when no ``name`` is given: the metric's name in
    #: the registry (``accuracy``, ``f1_score``...), so ``Accuracy()`` is logged as
    #: ``train_accuracy`` / ``val_accuracy``, the names bz-train and the docs use.
    default_name: ClassVar[str]

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name)
        self._tm: Optional[torchmetrics.Metric] = None
        self._pending: list[tuple[Tensor, Tensor]] = []

    @abstractmethod
    def _build(self, preds: Tensor, targets: Tensor) -> torchmetrics.Metric:
        """Validate the first batch and return the torchmetrics metric for it."""

    @abstractmethod
    def _prepare(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Check a batch cheaply and return the ``(preds, targets)`` torchmetrics expects,
        in a form that batches can be concatenated in (along the first dimension) and
        torchmetrics' per-call decisions (logits or probabilities?) already taken."""

    def _diagnose(self, preds: Tensor, targets: Tensor) -> None:
        """Called with prepared inputs when torchmetrics' ``update`` raised: raise a clearer
        ``ValueError`` if they explain it (may sync; only ever on this error path)."""

    def _pending_check(self) -> Tensor | None:
        """What ``_check_read`` needs to see on the host to find a problem recorded on the
        device during ``update`` (e.g. the targets' range), or ``None``: no host read here."""
        return None

    def _check_read(self, values: list[float]) -> None:
        """Raise ``ValueError`` if ``values`` (the host values of ``_pending_check()``) show a
        problem."""

    def _share_key(self) -> Hashable | None:
        """What decides this metric's torchmetrics state, once built: two metrics with equal
        keys (and equal states after the same first batch) may keep one state between them
        (see ``bz_lightning.metrics._shared``). ``None``: never shared."""
        return None

    def _follow(self, leader: TorchmetricsShim) -> None:
        """Take ``leader``'s accumulated state as this metric's, to compute from it.

        What torchmetrics' ``MetricCollection`` does for the members of a compute group: the
        states are references to the leader's tensors, and the update count is copied.
        """
        leader._flush()
        tm, source = self._tm, leader._tm
        assert tm is not None and source is not None
        for state in source._defaults:
            setattr(tm, state, getattr(source, state))
        tm._update_count = source._update_count
        tm._computed = None  # a value cached from the state before

    def reset(self) -> None:
        self._pending = []
        if self._tm is not None:
            self._tm.reset()

    # ------------------------------------------------------------- checkpoints
    def _build_info(self) -> dict[str, Any]:
        """What ``_rebuild`` needs to re-create the torchmetrics object without a batch."""
        return {}

    def _rebuild(self, info: dict[str, Any]) -> torchmetrics.Metric:
        """The torchmetrics object ``_build`` made, from what ``_build_info`` returned."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The torchmetrics states (counts, sums) accumulated since ``reset()``."""
        self._flush()
        tm = self._tm
        if tm is None:
            return {"built": None}
        return {"built": self._build_info(), "states": {name: _own_shape(getattr(tm, name), default)
                                                        for name, default in tm._defaults.items()},
                "update_count": tm._update_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = []
        info = state.get("built")
        if info is None:
            self.reset()
            return
        tm = self._rebuild(info)
        for name, value in state["states"].items():
            setattr(tm, name, value)
        tm._update_count = int(state["update_count"])
        tm._computed = None
        self._tm = tm

    def _to_device(self, device: Any) -> None:
        """Move the restored state to the device the batches are on."""
        if self._tm is not None:
            self._tm = self._tm.to(device)


    def update(self, preds: Tensor, targets: Tensor) -> None:
        if self._tm is None:  # the first batch: checked in full, and counted at once
            self._tm = self._build(preds, targets).to(preds.device)
            self._update(*self._prepare(preds, targets))
            return
        pending = self._pending
        pending.append(self._prepare(preds, targets))
        if len(pending) >= self.BATCHES_PER_UPDATE:
            self._flush()

    def _flush(self) -> None:
        """Hand the waiting batches to torchmetrics, concatenated, in one update."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if len(pending) == 1:
            self._update(*pending[0])
            return
        import torch

        self._update(torch.cat([p for p, _ in pending]), torch.cat([t for _, t in pending]))

    def _update(self, preds: Tensor, targets: Tensor) -> None:
        assert self._tm is not None
        try:
            self._tm.update(preds, targets)
        except (RuntimeError, IndexError, ValueError):
            self._diagnose(preds, targets)
            raise

    def compute(self) -> float:
        """The value over all batches since ``reset()`` (reduced across processes under DDP);
        ``0.0`` before the first ``update``."""
        from bz_lightning._host import read_host

        value, check = self.compute_on_device()
        value, found = read_host([value, check])  # one host read for both
        if found is not None:
            self._check_read(found)
        return float(value)

    def compute_on_device(self) -> tuple[Tensor | float, Tensor | None]:
        """``compute()`` without reading the host: the value (a tensor on the metric's device,
        or ``0.0`` before the first ``update``) and what ``_check_read`` must be given once
        read (``None``: nothing to check). ``MetricSet`` reads many metrics' values at once."""
        self._flush()
        if self._tm is None or not self._tm.update_called:
            return 0.0, None
        return self._tm.compute(), self._pending_check()

    @property
    def name(self) -> str:
        """The name given at construction, else ``default_name``."""
        return self._name or self.default_name

    @property
    def name_for_errors(self) -> str:
        """``Precision`` or ``Precision 'val_prec'``: how error messages name this metric."""
        return type(self).__name__ if self._name is None else f"{type(self).__name__} {self._name!r}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def _repr_args(self) -> dict[str, Any]:
        return {"name": self._name}


def _own_shape(value: Any, default: Any) -> Any:
    """A state in the metric's own shape. A metric that sums its counts over classes (micro
    accuracy) may hold its compute-group leader's per-class counts (see ``_follow``):
    summed, they are its own."""
    import torch

    if isinstance(value, torch.Tensor) and isinstance(default, torch.Tensor) and value.shape != default.shape:
        if default.shape == (1,) and value.ndim == 1:
            return value.sum(0, keepdim=True)
    return value
