"""Checks on ``Trainer.train``'s arguments, run before anything is built or trained.

Each failure is a ``BzConfigError`` naming the argument, the value received and what is
accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from bz_lightning.errors import BzConfigError

__all__ = ["check_train_args"]


def check_train_args(
    *,
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    training_loader: Any,
    validation_loader: Any,
    epochs: Any,
    checkpoint_interval: Any,
    metrics: Any,
    checkpointing: bool = False,
) -> None:
    if not isinstance(model, nn.Module):
        raise BzConfigError(f"model must be a torch.nn.Module, got {_show(model)}")
    _check_optimizer(optimizer, model)
    if isinstance(loss_fn, type):
        # Callable, but calling it builds a loss module instead of computing a loss.
        raise BzConfigError(
            f"loss_fn is the class {loss_fn.__name__}, not a loss; pass an instance, e.g. {loss_fn.__name__}()"
        )
    if not callable(loss_fn):
        raise BzConfigError(
            f"loss_fn must be callable as loss_fn(preds, targets), e.g. torch.nn.CrossEntropyLoss(), got {_show(loss_fn)}"
        )
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise BzConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    _check_loader("training_loader", training_loader, required=True)
    if validation_loader is not None:
        _check_loader("validation_loader", validation_loader, required=False)
    for name, loader in (("training_loader", training_loader), ("validation_loader", validation_loader)):
        _check_repeatable(name, loader, epochs, checkpointing)
    if not isinstance(checkpoint_interval, int) or isinstance(checkpoint_interval, bool) or checkpoint_interval < 0:
        raise BzConfigError(
            f"checkpoint_interval must be an integer >= 0 (0: no periodic checkpoints), got {checkpoint_interval!r}"
        )
    _check_metrics(metrics)


def _check_optimizer(optimizer: Any, model: nn.Module) -> None:
    if isinstance(optimizer, torch.optim.Optimizer):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in held for p in model.parameters()):
            raise BzConfigError(
                f"optimizer {type(optimizer).__name__} holds none of the model's parameters; "
                "create it from this model, e.g. torch.optim.Adam(model.parameters()), "
                "or pass a factory such as functools.partial(torch.optim.Adam, lr=1e-3)"
            )
    elif not callable(optimizer):
        raise BzConfigError(
            f"optimizer must be a torch.optim.Optimizer or a factory taking the parameters, got {_show(optimizer)}"
        )


def _check_loader(name: str, loader: Any, *, required: bool) -> None:
    if not isinstance(loader, Iterable) or isinstance(loader, (str, bytes, torch.Tensor)):
        raise BzConfigError(
            f"{name} must be an iterable of (inputs, targets) batches such as a torch.utils.data.DataLoader, "
            f"got {_show(loader)}"
        )
    try:
        length = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return  # an iterable without a length is allowed
    if required and length == 0:
        raise BzConfigError(f"{name} is empty (len(training_loader) == 0); there is nothing to train on")


def _check_repeatable(name: str, loader: Any, epochs: int, checkpointing: bool) -> None:
    """A loader is iterated once per epoch: a one-shot iterator would leave later epochs empty."""
    if loader is None or not _one_shot(loader):
        return
    if epochs > 1:
        raise BzConfigError(
            f"{name} is a one-shot iterator ({_show(loader)}): it is exhausted after the first epoch, so epochs 2 "
            f"to {epochs} would have nothing to train on; pass something that can be iterated again, such as a "
            "DataLoader, a list of batches, or an object whose __iter__ returns a new iterator"
        )
    if checkpointing:
        raise BzConfigError(
            f"{name} is a one-shot iterator ({_show(loader)}): a checkpointed run must be able to read its data "
            "again (to fingerprint it and to resume); pass a DataLoader, a list of batches, or an object whose "
            "__iter__ returns a new iterator"
        )


def _one_shot(loader: Any) -> bool:
    if isinstance(loader, Iterator):  # a generator, iter(...), map(...): yields its items once
        return True
    from torch.utils.data import DataLoader, IterableDataset

    dataset = loader.dataset if isinstance(loader, DataLoader) else None
    if isinstance(dataset, IterableDataset):
        # An IterableDataset whose __iter__ hands out the same iterator every time.
        return isinstance(dataset, Iterator) or iter(dataset) is iter(dataset)
    return False


def _check_metrics(metrics: Any) -> None:
    from bz_lightning.metrics import Metric

    if not isinstance(metrics, Sequence) or isinstance(metrics, str):
        raise BzConfigError(f"metrics must be a list of bz_lightning.metrics.Metric objects, got {_show(metrics)}")
    for i, metric in enumerate(metrics):
        if not isinstance(metric, Metric):
            hint = " (an instance, not the class)" if isinstance(metric, type) else ""
            raise BzConfigError(
                f"metrics[{i}] must be a bz_lightning.metrics.Metric{hint}, got {_show(metric)}; "
                'use e.g. Accuracy() or get_metric("accuracy")'
            )


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, type) else f"the class {value.__name__}"
