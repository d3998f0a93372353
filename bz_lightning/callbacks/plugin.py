"""``CallbackPlugin`` and ``TrainerView``: how callbacks run through the bridge's plugin
dispatch, and the ``trainer`` object their hooks receive."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from bz_lightning.callbacks.base import HOOK_STAGES, TrainingCallback, check_callback
from bz_lightning.context import PluginContext, epoch_values, running_stats
from bz_lightning.plugins.base import Plugin, public_settings

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch import nn

    from bz_lightning.bridge import LifecycleCallback

__all__ = ["CallbackPlugin", "TrainerView"]


class TrainerView:
    """The ``trainer`` passed to callback hooks: a live view of one run of the bridge.

    It satisfies ``TrainerLike``. ``should_stop`` is a request, as in Keras and HF's
    ``TrainerControl``: setting it to ``True`` (in any hook) lets the current epoch finish,
    ``on_epoch_end`` included, and starts no further epoch; ``on_train_end`` still runs.

    Args:
        context: the ``PluginContext`` of the ``LifecycleCallback`` running the callbacks;
            ``TrainerView.of(bridge)`` returns the one view shared by all of that bridge's
            callbacks.

    Example:
        >>> from bz_lightning.bridge import LifecycleCallback
        >>> view = TrainerView.of(LifecycleCallback())
        >>> view.should_stop = True
        >>> view.should_stop, view.current_epoch
        (True, 0)
    """

    _views: ClassVar[weakref.WeakKeyDictionary[Any, TrainerView]] = weakref.WeakKeyDictionary()

    def __init__(self, context: PluginContext) -> None:
        # The context, not the bridge: a view that referenced its WeakKeyDictionary key
        # would keep the bridge alive forever.
        self._context = context

    @classmethod
    def of(cls, bridge: LifecycleCallback) -> TrainerView:
        """The view of ``bridge``, created on first use."""
        view = cls._views.get(bridge)
        if view is None:
            view = cls._views[bridge] = cls(bridge.context)
        return view

    def _extra(self, key: str, what: str) -> Any:
        try:
            return self._context.extra[key]
        except KeyError:
            # AttributeError, so that hasattr() and isinstance(view, TrainerLike) say False.
            raise AttributeError(f"trainer.{what} is available once training starts (from on_train_begin on)") from None

    @property
    def model(self) -> nn.Module:
        """The user's ``torch.nn.Module`` (``BzModule.model``), not the Lightning adapter."""
        return self._extra("model", "model")

    @property
    def lightning_trainer(self) -> pl.Trainer:
        """The ``lightning.Trainer`` running the fit."""
        return self._extra("trainer", "lightning_trainer")

    @property
    def lightning_module(self) -> pl.LightningModule:
        """The ``LightningModule`` being fitted (a ``BzModule`` under bz's ``Trainer``)."""
        return self._extra("lightning_module", "lightning_module")

    @property
    def current_epoch(self) -> int:
        """The epoch in progress (the ``epoch`` the hooks receive); the last one after training."""
        return self._context.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (Lightning's ``global_step``)."""
        trainer = self._context.extra.get("trainer")
        return 0 if trainer is None else int(trainer.global_step)

    @property
    def should_stop(self) -> bool:
        """Whether a stop was requested, by a callback, a plugin or Lightning itself."""
        trainer = self._context.extra.get("trainer")
        return bool(self._context.should_stop_training or (trainer is not None and trainer.should_stop))

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        # The bridge turns the request into Lightning's stop after end_epoch; False
        # withdraws a bz request made earlier in the epoch (a Lightning callback's stands).
        self._context.should_stop_training = bool(value)

    def __repr__(self) -> str:
        return f"TrainerView(current_epoch={self.current_epoch}, global_step={self.global_step})"


def _batch_logs(ctx: PluginContext) -> dict[str, Any]:
    # A callback with on_batch_end is given the batch's loss and the running metrics: for a
    # BzModule one host read per batch (the only per-batch read a callback costs), which
    # also checks the losses are finite; for another module, what Lightning logged.
    stats = running_stats(ctx, "train")
    if stats is None:
        return {}
    reading = stats.read()
    if reading.last_loss is None:
        return {}  # the step returned no loss
    return {"loss": reading.last_loss, **(reading.metrics or {})}


def _epoch_logs(ctx: PluginContext) -> dict[str, Any]:
    """``loss``, each training metric, then ``val_loss`` and ``val_<metric>`` if validated."""
    return epoch_values(ctx, train="", val="val_")


def _validation_logs(ctx: PluginContext) -> dict[str, Any]:
    return {k: v for k, v in _epoch_logs(ctx).items() if k.startswith("val_")}


#: How each hook's arguments after ``trainer`` are read from the context at its stage.
_ARGUMENTS: dict[str, Callable[[PluginContext], tuple[Any, ...]]] = {
    "on_train_begin": lambda ctx: (),
    "on_epoch_begin": lambda ctx: (ctx.epoch,),
    "on_batch_begin": lambda ctx: (ctx.extra["batch_index"],),
    "on_batch_end": lambda ctx: (ctx.extra["batch_index"], _batch_logs(ctx)),
    "on_validation_begin": lambda ctx: (),
    "on_validation_end": lambda ctx: (_validation_logs(ctx),),
    "on_epoch_end": lambda ctx: (ctx.epoch, _epoch_logs(ctx)),
    "on_train_end": lambda ctx: (),
}
assert _ARGUMENTS.keys() == HOOK_STAGES.keys()


def _call(fn: Callable[..., Any], view: TrainerView, arguments: Callable[[PluginContext], tuple[Any, ...]],
          context: PluginContext) -> None:
    fn(view, *arguments(context))


class CallbackPlugin(Plugin):
    """A ``Plugin`` that runs one ``TrainingCallback`` at the stages in ``HOOK_STAGES``.

    The plugin gets a stage method only for each hook the callback implements (see
    ``implemented_hooks``), so the bridge never calls it at the others, and the per-batch
    logs are built only for a callback with ``on_batch_end``. A failing hook is handled
    like any failing plugin (logged, or ``BzPluginError`` with ``plugin_errors="raise"``);
    its plugin name is the callback's class name. A callback's ``state_dict`` and
    ``load_state_dict``, if it has them, are saved in and restored from checkpoints.
    ``LifecycleCallback.add_callback`` builds these; you rarely need to.

    Args:
        callback: any object with some of ``TrainingCallback``'s hooks (a ``BaseCallback``,
            a duck-typed object or a ``CallbackList``).
        bridge: the ``LifecycleCallback`` that will run it; hooks get ``TrainerView.of(bridge)``.

    Raises:
        BzConfigError: when a hook cannot take its positional arguments (the message names
            the hook and the expected signature), when ``callback`` implements no hook, or
            when it is a Lightning ``Callback`` or a class.

    Example:
        >>> from bz_lightning.bridge import LifecycleCallback
        >>> from bz_lightning.plugins import implemented_stages
        >>> class EpochCounter:
        ...     def on_epoch_begin(self, trainer, epoch):
        ...         print("epoch", epoch)
        >>> bridge = LifecycleCallback()
        >>> plugin = CallbackPlugin(EpochCounter(), bridge)
        >>> sorted(s.value for s in implemented_stages(plugin))
        ['start_epoch']
        >>> plugin.run_stage("start_epoch", PluginContext(epoch=4))
        epoch 4
    """

    def __init__(self, callback: TrainingCallback, bridge: LifecycleCallback) -> None:
        super().__init__(name=type(callback).__name__)
        self.callback = callback
        self.hooks = check_callback(callback)
        view = TrainerView.of(bridge)
        for hook, fn in self.hooks.items():
            # Instance attributes, not class methods: implemented_stages() counts exactly these.
            setattr(self, HOOK_STAGES[hook].value, partial(_call, fn, view, _ARGUMENTS[hook]))

    @property
    def state_key(self) -> str:
        """The callback's own ``state_key`` if it has one, else its class name."""
        key = getattr(self.callback, "state_key", None)
        return key if isinstance(key, str) else self.name

    def run_signature(self) -> Any:
        """The callback's class and its public plain settings (see ``Plugin.run_signature``)."""
        cls = type(self.callback)
        return {"callback": f"{cls.__module__}.{cls.__qualname__}", "settings": public_settings(self.callback)}

    def state_dict(self) -> dict[str, Any]:
        state = getattr(self.callback, "state_dict", None)
        return state() if callable(state) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load = getattr(self.callback, "load_state_dict", None)
        if callable(load):
            load(state)
