"""The callback protocol: ``TrainerLike``, ``TrainingCallback``, ``BaseCallback``,
``CallbackList``, the hook -> stage table and the checks made when a callback is registered.

Nothing here imports torch or Lightning, so defining a callback is cheap.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bz_lightning.errors import BzConfigError, closest_match
from bz_lightning.stages import Stage

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "TrainerLike",
    "TrainingCallback",
    "BaseCallback",
    "CallbackList",
    "HOOK_STAGES",
    "implemented_hooks",
    "check_callback",
]


@runtime_checkable
class TrainerLike(Protocol):
    """Protocol for trainer-like objects that callbacks can interact with.

    The minimal interface a trainer offers to callbacks; using a protocol avoids circular
    imports between callbacks and trainer modules. The ``trainer`` that bz passes to every
    hook is a ``TrainerView``, which satisfies it.

    Example:
        >>> from torch import nn
        >>> class Holder:
        ...     model = nn.Linear(2, 1)
        >>> isinstance(Holder(), TrainerLike)
        True
    """

    @property
    def model(self) -> nn.Module:
        """The ``torch.nn.Module`` being trained."""
        ...


class TrainingCallback(Protocol):
    """Protocol defining the callback interface: the 8 lifecycle hooks.

    A callback may implement any subset of them (duck typing is enough); each implemented
    hook must accept these positional arguments, whatever their names.

    Example:
        >>> class EpochPrinter:
        ...     def on_epoch_end(self, trainer, epoch, logs):
        ...         print(epoch, sorted(logs))
        >>> CallbackList([EpochPrinter()]).on_epoch_end(None, 3, {"loss": 0.5})
        3 ['loss']
    """

    def on_train_begin(self, trainer: TrainerLike) -> None: ...
    def on_train_end(self, trainer: TrainerLike) -> None: ...
    def on_epoch_begin(self, trainer: TrainerLike, epoch: int) -> None: ...
    def on_epoch_end(self, trainer: TrainerLike, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_batch_begin(self, trainer: TrainerLike, batch: int) -> None: ...
    def on_batch_end(self, trainer: TrainerLike, batch: int, logs: dict[str, Any]) -> None: ...
    def on_validation_begin(self, trainer: TrainerLike) -> None: ...
    def on_validation_end(self, trainer: TrainerLike, logs: dict[str, Any]) -> None: ...


#: The bz stage at which each hook is called. ``on_epoch_end`` fires at ``end_epoch``, so
#: after that epoch's validation; validation hooks never see Lightning's sanity check.
HOOK_STAGES: Mapping[str, Stage] = MappingProxyType(
    {
        "on_train_begin": Stage.START_TRAINING_SESSION,
        "on_epoch_begin": Stage.START_EPOCH,
        "on_batch_begin": Stage.START_TRAINING_BATCH,
        "on_batch_end": Stage.END_TRAINING_BATCH,
        "on_validation_begin": Stage.START_VALIDATION_LOOP,
        "on_validation_end": Stage.END_VALIDATION_LOOP,
        "on_epoch_end": Stage.END_EPOCH,
        "on_train_end": Stage.END_TRAINING_SESSION,
    }
)

#: Each hook's positional parameters after ``self``, read from ``TrainingCallback``.
_HOOK_PARAMS: dict[str, tuple[str, ...]] = {
    hook: tuple(inspect.signature(getattr(TrainingCallback, hook)).parameters)[1:] for hook in HOOK_STAGES
}


def _expected(hook: str) -> str:
    return f"def {hook}(self, {', '.join(_HOOK_PARAMS[hook])}) -> None"


class BaseCallback:
    """Base callback class with no-op implementations of all hooks.

    Extend it and override only the hooks you need; the others are never called.

    Example:
        >>> class MyCallback(BaseCallback):
        ...     def on_epoch_end(self, trainer, epoch, metrics):
        ...         print(f"Epoch {epoch} completed with loss: {metrics.get('loss', 'N/A')}")
        >>> MyCallback().on_epoch_end(None, 0, {"loss": 0.25})
        Epoch 0 completed with loss: 0.25
        >>> sorted(implemented_hooks(MyCallback()))
        ['on_epoch_end']
    """

    def on_train_begin(self, trainer: TrainerLike) -> None:
        """Once, when training starts (after Lightning's sanity check)."""

    def on_train_end(self, trainer: TrainerLike) -> None:
        """Once, when training ends, also after a requested stop or a failure."""

    def on_epoch_begin(self, trainer: TrainerLike, epoch: int) -> None:
        """At the start of each training epoch; ``epoch`` counts from 0."""

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, logs: dict[str, Any]) -> None:
        """After the epoch's validation. ``logs``: ``loss`` (mean training batch loss),
        each training metric by name, and with validation ``val_loss`` and ``val_<metric>``."""

    def on_batch_begin(self, trainer: TrainerLike, batch: int) -> None:
        """Before each training batch; ``batch`` is its index within the epoch."""

    def on_batch_end(self, trainer: TrainerLike, batch: int, logs: dict[str, Any]) -> None:
        """After each training batch's optimizer step. ``logs``: ``loss`` (this batch's loss,
        a float) and each metric's running value over the epoch so far."""

    def on_validation_begin(self, trainer: TrainerLike) -> None:
        """Before each validation run (never for the sanity check)."""

    def on_validation_end(self, trainer: TrainerLike, logs: dict[str, Any]) -> None:
        """After each validation run. ``logs``: ``val_loss`` (mean batch loss) and
        ``val_<metric>``."""


def implemented_hooks(callback: object) -> frozenset[str]:
    """The hooks of ``callback`` that can do anything, so dispatch may skip the rest.

    For a ``BaseCallback`` these are the hooks its class overrides (or its instance sets);
    for a ``CallbackList`` the hooks any member implements; for any other object, the hook
    attributes it has.

    Example:
        >>> class OnlyBatches:
        ...     def on_batch_end(self, trainer, batch, logs): ...
        >>> implemented_hooks(OnlyBatches())
        frozenset({'on_batch_end'})
    """
    if isinstance(callback, CallbackList):
        return frozenset(hook for hook, fns in callback._hooks.items() if fns)
    if isinstance(callback, BaseCallback):
        cls = type(callback)
        return frozenset(
            hook for hook in HOOK_STAGES
            if hook in vars(callback) or getattr(cls, hook) is not getattr(BaseCallback, hook)
        )
    return frozenset(hook for hook in HOOK_STAGES if getattr(callback, hook, None) is not None)


def check_callback(callback: object) -> dict[str, Callable[..., Any]]:
    """``callback``'s implemented hooks as callables, in ``HOOK_STAGES`` order.

    Raises:
        BzConfigError: ``callback`` is a class or a Lightning callback, implements no hook,
            or has a hook that cannot take the hook's positional arguments.
    """
    owner = type(callback).__name__
    if isinstance(callback, type):
        raise BzConfigError(f"got the class {callback.__name__}, not a callback; pass an instance: {callback.__name__}()")
    lightning = sys.modules.get("lightning.pytorch")  # an object can only be one if it is imported
    if lightning is not None and isinstance(callback, lightning.Callback):
        raise BzConfigError(
            f"{owner} is a Lightning Callback, not a TrainingCallback; pass it to "
            "lightning.Trainer(callbacks=[...]) (bz's Trainer.train(callbacks=...) routes it there itself)"
        )
    hooks = implemented_hooks(callback)
    strays = [name for name in dir(callback) if name.startswith("on_") and name not in HOOK_STAGES]
    suggestions = {name: match for name in strays if (match := closest_match(name, HOOK_STAGES)) is not None}
    if not hooks and not isinstance(callback, (BaseCallback, CallbackList)):
        hint = "".join(f"; {name} looks like {match}" for name, match in suggestions.items())
        raise BzConfigError(
            f"{owner} implements none of the TrainingCallback hooks ({', '.join(HOOK_STAGES)}){hint}"
        )
    for name, match in suggestions.items():
        if match not in hooks:
            warnings.warn(f"{owner}.{name} is not a TrainingCallback hook and is never called "
                          f"(did you mean {match!r}?)", stacklevel=3)
    checked: dict[str, Callable[..., Any]] = {}
    for hook in HOOK_STAGES:
        if hook not in hooks:
            continue
        fn = getattr(callback, hook)
        if not callable(fn):
            raise BzConfigError(f"{owner}.{hook} is a {type(fn).__name__}, not a method; expected {_expected(hook)}")
        _check_signature(owner, hook, fn)
        checked[hook] = fn
    return checked


def _check_signature(owner: str, hook: str, fn: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables cannot be introspected
        return
    params = _HOOK_PARAMS[hook]
    try:
        signature.bind(*params)
    except TypeError as err:
        raise BzConfigError(
            f"{owner}.{hook}{signature} cannot be called as {hook}({', '.join(params)}) ({err}); "
            f"expected {_expected(hook)} (parameter names are free)"
        ) from None


class CallbackList:
    """Container for multiple callbacks that dispatches each hook to all of them, in order.

    Members are checked when added (see ``check_callback``); a member that does not
    implement a hook is skipped for it. A ``CallbackList`` is itself a callback: passed to
    a trainer, it is adapted with the hooks its members implement at that moment.

    Args:
        callbacks: the initial members (``None``: none).

    Raises:
        BzConfigError: when a member is not a valid callback.

    Example:
        >>> class Printer(BaseCallback):
        ...     def on_epoch_end(self, trainer, epoch, logs):
        ...         print(f"epoch {epoch}: {logs['loss']}")
        >>> callbacks = CallbackList([Printer()])
        >>> callbacks.append(Printer())
        >>> len(callbacks)
        2
        >>> callbacks.on_epoch_end(None, 5, {"loss": 0.5})
        epoch 5: 0.5
        epoch 5: 0.5
    """

    def __init__(self, callbacks: Iterable[TrainingCallback] | None = None) -> None:
        self._entries: list[tuple[TrainingCallback, dict[str, Callable[..., Any]]]] = []
        self._hooks: dict[str, list[Callable[..., Any]]] = {hook: [] for hook in HOOK_STAGES}
        for callback in callbacks or ():
            self.append(callback)

    def append(self, callback: TrainingCallback) -> None:
        """Add ``callback`` at the end, after checking its hooks' signatures."""
        hooks = check_callback(callback)
        self._entries.append((callback, hooks))
        for hook, fn in hooks.items():
            self._hooks[hook].append(fn)

    def remove(self, callback: TrainingCallback) -> None:
        """Remove the first occurrence of ``callback``; ``ValueError`` if it is absent."""
        for i, (member, _) in enumerate(self._entries):
            if member is callback or member == callback:
                del self._entries[i]
                break
        else:
            raise ValueError(f"{type(callback).__name__} is not in this CallbackList")
        for fns in self._hooks.values():
            fns.clear()
        for _, hooks in self._entries:
            for hook, fn in hooks.items():
                self._hooks[hook].append(fn)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[TrainingCallback]:
        return iter([member for member, _ in self._entries])

    def __repr__(self) -> str:
        return f"CallbackList([{', '.join(type(m).__name__ for m, _ in self._entries)}])"

    def on_train_begin(self, trainer: TrainerLike) -> None:
        for fn in self._hooks["on_train_begin"]:
            fn(trainer)

    def on_train_end(self, trainer: TrainerLike) -> None:
        for fn in self._hooks["on_train_end"]:
            fn(trainer)

    def on_epoch_begin(self, trainer: TrainerLike, epoch: int) -> None:
        for fn in self._hooks["on_epoch_begin"]:
            fn(trainer, epoch)

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, logs: dict[str, Any]) -> None:
        for fn in self._hooks["on_epoch_end"]:
            fn(trainer, epoch, logs)

    def on_batch_begin(self, trainer: TrainerLike, batch: int) -> None:
        for fn in self._hooks["on_batch_begin"]:
            fn(trainer, batch)

    def on_batch_end(self, trainer: TrainerLike, batch: int, logs: dict[str, Any]) -> None:
        for fn in self._hooks["on_batch_end"]:
            fn(trainer, batch, logs)

    def on_validation_begin(self, trainer: TrainerLike) -> None:
        for fn in self._hooks["on_validation_begin"]:
            fn(trainer)

    def on_validation_end(self, trainer: TrainerLike, logs: dict[str, Any]) -> None:
        for fn in self._hooks["on_validation_end"]:
            fn(trainer, logs)
