"""``Plugin``: the base class of everything that hooks into the bz lifecycle."""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC
from typing import Any, ClassVar

from bz_lightning.context import PluginContext
from bz_lightning.stages import Stage

__all__ = ["Plugin", "implemented_stages", "public_settings"]


class Plugin(ABC):
    """Base class of bz plugins: one no-op method per ``Stage``; override the ones you need.

    A plugin that keeps state across epochs (counters, best weights) returns it from
    ``state_dict`` and takes it back in ``load_state_dict``; bz saves it in checkpoints.
    Subclasses do not have to call ``super().__init__``: ``name``, ``config`` and
    ``logger`` work without it.

    Under DDP every process runs every plugin, and the context's loss totals, batch counts
    and metrics at the end of each loop are the same on every process (summed and reduced
    over all of them), so a plugin that *decides* (early stopping) decides alike
    everywhere; a stop requested on any process stops all of them at the same epoch. Values
    seen at batch stages are the process's own. A plugin that *writes* (console, files,
    TensorBoard) sets ``rank_zero_only = True`` and then runs in the global-rank-0
    process only.

    Example:
        >>> class LossPrinter(Plugin):
        ...     def end_epoch(self, context):
        ...         print(f"epoch {context.epoch}: {context.training_loss_total:.2f}")
        >>> LossPrinter().run_stage("end_epoch", PluginContext(epoch=1, training_loss_total=2.5))
        epoch 1: 2.50
    """

    config: Any = None
    #: Run only in the global-rank-0 process under distributed training (plugins that write).
    rank_zero_only: ClassVar[bool] = False
    #: Shows training progress itself: Lightning's progress bar is switched off while it runs.
    shows_progress: ClassVar[bool] = False

    def __init__(self, name: str | None = None, config: Any | None = None) -> None:
        self._name = name
        self.config = config

    @property
    def name(self) -> str:
        """The name given at construction, else the class name."""
        return getattr(self, "_name", None) or type(self).__name__

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``bz_lightning.plugins.<name>``."""
        return logging.getLogger(f"bz_lightning.plugins.{self.name}")

    @property
    def state_key(self) -> str:
        """The key of this plugin's ``state_dict`` in checkpoints, as Lightning's
        ``Callback.state_key``: the plugin's ``name``, so adding or removing another plugin
        never hands this one somebody else's state. Two plugins with the same key are told
        apart by their order; give them names (or override this) to make that stable."""
        return self.name

    def run_signature(self) -> Any:
        """What about this plugin defines the run (part of the run's signature), or ``None``
        when it cannot change what a run trains or reports (it only shows or writes).

        The default is the class and every public attribute holding a plain value (numbers,
        strings, lists and dicts of them, dataclass configs) when the run starts. Override
        it when the plugin's behaviour depends on something else.
        """
        cls = type(self)
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "name": self.name, "settings": public_settings(self)}

    def run_stage(self, stage: Stage | str, context: PluginContext) -> None:
        """Call the method named by ``stage`` with ``context``."""
        getattr(self, Stage(stage).value)(context)

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints (plain Python values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def start_training_session(self, context: PluginContext) -> None:
        """Once, before the first epoch."""

    def load_checkpoint(self, context: PluginContext) -> None:
        """After ``start_training_session`` when training resumed; ``context.epoch`` is the
        epoch training continues from."""

    def start_epoch(self, context: PluginContext) -> None:
        """At the start of every epoch. An epoch resumed in its middle (after a preemption)
        starts again in the new process, with the batches trained before the interruption
        already in the context's totals; ``context.extra["resumed_batches"]`` says how many."""

    def start_training_loop(self, context: PluginContext) -> None:
        """Before the first training batch of an epoch."""

    def start_training_batch(self, context: PluginContext) -> None:
        """Before each training batch."""

    def end_training_batch(self, context: PluginContext) -> None:
        """After each training batch (after the optimizer step)."""

    def end_training_loop(self, context: PluginContext) -> None:
        """After the last training batch; ``training_metrics`` is filled."""

    def start_validation_loop(self, context: PluginContext) -> None:
        """Before the first validation batch (only with a validation loader)."""

    def start_validation_batch(self, context: PluginContext) -> None:
        """Before each validation batch."""

    def end_validation_batch(self, context: PluginContext) -> None:
        """After each validation batch."""

    def end_validation_loop(self, context: PluginContext) -> None:
        """After the last validation batch; ``validation_metrics`` is filled."""

    def save_checkpoint(self, context: PluginContext) -> None:
        """After a checkpoint was written; ``context.extra["checkpoint_path"]`` names it."""

    def end_epoch(self, context: PluginContext) -> None:
        """At the end of every epoch, after validation and checkpointing."""

    def end_training_session(self, context: PluginContext) -> None:
        """Once, after the last epoch, also when training stopped early or failed."""


def public_settings(obj: Any) -> dict[str, Any]:
    """``obj``'s public attributes that hold plain values (numbers, strings, lists and dicts
    of them, dataclasses as dicts), sorted by name: how ``run_signature`` describes it."""
    attributes = getattr(obj, "__dict__", {})
    return {k: _plain(v) for k, v in sorted(attributes.items()) if not k.startswith("_") and _is_plain(v)}


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:  # NaN: JSON has no NaN
        return "nan"
    return value


def implemented_stages(plugin: Plugin) -> frozenset[Stage]:
    """The stages at which calling ``plugin`` can do anything.

    A plugin that overrides ``run_stage`` may act at every stage; otherwise only the
    stage methods its class overrides count, so dispatch can skip the rest for free.
    """
    cls = type(plugin)
    if getattr(cls, "run_stage", None) is not Plugin.run_stage or "run_stage" in vars(plugin):
        return frozenset(Stage)
    return frozenset(
        s
        for s in Stage
        if s.value in vars(plugin) or getattr(cls, s.value, None) is not getattr(Plugin, s.value)
    )
