"""Metrics over the same batches that count the same thing count it once.

Precision, recall and F1 averaged over classes, and accuracy, are all computed from the
per-class true/false positive/negative counts of torchmetrics' ``MulticlassStatScores``:
on a run that tracks accuracy and F1, each batch is counted once instead of twice. This is
torchmetrics' ``MetricCollection`` compute groups applied to bz metrics, with the same rule:
metrics that update the same way and hold equal states after the first batch form a group;
only its leader updates afterwards, and each member takes the leader's state before it
computes. A member that sums the counts over classes (micro accuracy) may follow a leader
that keeps them per class: torchmetrics' micro reduction sums per-class counts itself.

Any other metric, a user's own included, updates on its own as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bz_lightning.errors import BzConfigError, BzError
from bz_lightning.metrics._shim import TorchmetricsShim

if TYPE_CHECKING:
    from torch import Tensor

    from bz_lightning.metrics.base import Metric

__all__ = ["MetricSet"]

log = logging.getLogger("bz_lightning")


class MetricSet:
    """Updates and computes ``metrics`` together, each shared state updated once.

    Raises:
        BzConfigError: two metrics report under the same ``name``; one value would hide
            the other.
    """

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = list(metrics)
        seen: dict[str, Metric] = {}
        for metric in self.metrics:
            other = seen.setdefault(metric.name, metric)
            if other is not metric:
                raise BzConfigError(
                    f"two metrics report under the name {metric.name!r} ({other!r} and {metric!r}); "
                    "give one of them another name, e.g. name='precision_macro'"
                )
        # Who updates after the first batch, and whom each follower takes its state from;
        # None until the first batch has built the torchmetrics objects.
        self._updating: list[Metric] | None = None
        self._leader_of: dict[int, TorchmetricsShim] = {}
        # States from a checkpoint, applied at the next update (on its batch's device).
        self._restored: list[dict[str, Any] | None] | None = None

    def reset(self) -> None:
        self._restored = None
        for metric in self.metrics:
            metric.reset()

    def update(self, preds: Tensor, targets: Tensor) -> None:
        if self._updating is not None:
            for metric in self._updating:
                metric.update(preds, targets)
            return
        if self._restored is not None:
            self._apply_restored(preds.device)
        for metric in self.metrics:
            metric.update(preds, targets)
        self._group()

    def compute(self) -> dict[str, float]:
        """Each metric's value, keyed by its ``name`` (one host read for all built-ins)."""
        from bz_lightning._host import read_host

        values, checks = self.compute_on_device()
        host = read_host([*values.values(), *(tensor for _, tensor in checks)])
        for (metric, _), found in zip(checks, host[len(values):]):
            metric._check_read(found)  # type: ignore[attr-defined]
        return dict(zip(values, host))

    def compute_on_device(self) -> tuple[dict[str, Tensor | float], list[tuple[Metric, Tensor]]]:
        """Each metric's value without reading the host (a built-in's is a tensor on its
        device; a metric of the user's own returns its float), and the checks still to run:
        ``(metric, tensor)`` pairs whose host values go to ``metric._check_read``.
        ``SplitStats.read`` reads them all, with the loss, in one transfer.

        Raises:
            BzError: a metric of the user's own returned several values (or not a number).
        """
        if self._restored is not None:
            self._apply_restored(None)
        for index, leader in self._leader_of.items():
            self.metrics[index]._follow(leader)  # type: ignore[attr-defined]
        values: dict[str, Tensor | float] = {}
        checks: list[tuple[Metric, Tensor]] = []
        for metric in self.metrics:
            if isinstance(metric, TorchmetricsShim):
                value, check = metric.compute_on_device()
                if check is not None:
                    checks.append((metric, check))
                values[metric.name] = value
            else:
                values[metric.name] = _one_number(metric, metric.compute())
        return values, checks

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> list[dict[str, Any] | None]:
        """Each metric's ``state_dict`` (``None`` for one that cannot save its state)."""
        for index, leader in self._leader_of.items():  # followers hold the counts too
            self.metrics[index]._follow(leader)  # type: ignore[attr-defined]
        states = [metric.state_dict() for metric in self.metrics]
        for metric, state in zip(self.metrics, states):
            if state is None:
                log.warning("metric %r cannot save what it has counted (its state_dict() returned None): after a "
                            "resume, this epoch's value covers only the batches trained after it", metric.name)
        return states

    def load_state_dict(self, states: list[dict[str, Any] | None]) -> None:
        """Take back what ``state_dict`` returned; applied when the next batch arrives."""
        if len(states) != len(self.metrics):
            log.warning("the checkpoint holds %d metric states for %d metrics; the interrupted epoch's metrics "
                        "cover only the batches trained after the resume", len(states), len(self.metrics))
            return
        self._restored = states
        self._updating = None  # group again, from the restored states
        self._leader_of = {}

    def _apply_restored(self, device: Any) -> None:
        restored, self._restored = self._restored, None
        assert restored is not None
        for metric, state in zip(self.metrics, restored):
            if state is None:
                continue
            metric.load_state_dict(state)
            if device is not None and isinstance(metric, TorchmetricsShim):
                metric._to_device(device)

    def _group(self) -> None:
        for metric in self.metrics:
            # States are compared as they are: nothing may wait in a metric's queue (after a
            # restore, the batch just counted does), or a follower would add it twice.
            if isinstance(metric, TorchmetricsShim):
                metric._flush()
        groups: dict[object, list[int]] = {}
        for index, metric in enumerate(self.metrics):
            key = metric._share_key() if isinstance(metric, TorchmetricsShim) else None
            if key is not None:
                groups.setdefault(key, []).append(index)
        for members in groups.values():
            shims = [self.metrics[i] for i in members]
            # A leader that keeps per-class counts can serve every member.
            leader = max(shims, key=lambda m: _states(m)["tp"].numel())  # type: ignore[arg-type]
            for index, shim in zip(members, shims):
                if shim is not leader and _same_counts(shim, leader):  # type: ignore[arg-type]
                    self._leader_of[index] = leader  # type: ignore[assignment]
        following = {id(self.metrics[i]) for i in self._leader_of}
        self._updating = [m for m in self.metrics if id(m) not in following]


def _one_number(metric: Metric, value: Any) -> float:
    """``value`` as a float, or a ``BzError`` naming the metric whose ``compute()`` returned
    something else (a tensor of several values, a list, a string...)."""
    size = getattr(value, "numel", None)
    if size is not None and size() != 1:
        got = f"a tensor of shape {tuple(value.shape)}"
    elif isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        got = f"{type(value).__name__} {value!r:.60}"
    else:
        return float(value)
    raise BzError(f"metric {metric.name!r} ({type(metric).__name__}): compute() must return one number, got {got}")


def _states(metric: TorchmetricsShim) -> dict[str, Tensor]:
    tm = metric._tm
    assert tm is not None
    return {name: getattr(tm, name) for name in tm._defaults}


def _same_counts(member: TorchmetricsShim, leader: TorchmetricsShim) -> bool:
    """Whether the two states agree after the same batches (per-class counts summed where
    the member sums them), as torchmetrics checks before it groups metrics."""
    import torch

    mine, theirs = _states(member), _states(leader)
    if mine.keys() != theirs.keys():
        return False
    equal = []
    for name, value in mine.items():
        other = theirs[name]
        if not isinstance(value, torch.Tensor) or not isinstance(other, torch.Tensor):
            return False
        if value.shape != other.shape:  # summed over classes (shape (1,)) against per class
            if value.shape != (1,) or other.ndim != 1:
                return False
            other = other.sum(0, keepdim=True)
        if value.dtype != other.dtype:
            return False
        equal.append((value == other).all())
    return bool(torch.stack(equal).all()) if equal else True  # one host read
