"""``LifecycleCallback``: one Lightning callback that runs every bz plugin in bz's order.

Lightning runs validation inside its training epoch and a sanity-check validation before
the first one; bz plugins expect ``end_training_loop`` before ``start_validation_loop``
and never see the sanity check. ``STAGE_HOOKS`` says which Lightning hook fires each
stage; stages that share a hook fire in ``Stage`` order. Lightning calls every hook of
every callback, so a single bridge for all plugins is far cheaper than one callback per
plugin, and a stage no plugin implements costs one dict lookup.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn

from bz_lightning._logged_stats import LoggedStats
from bz_lightning.context import PluginContext, RunningStats, context_values, restore_context, split_stats
from bz_lightning.errors import BzConfigError, BzPluginError, NonFiniteLossError
from bz_lightning.plugins.base import Plugin, implemented_stages
from bz_lightning.stages import Stage

__all__ = ["LifecycleCallback", "STAGE_HOOKS", "PluginFailure"]

log = logging.getLogger(__name__)

#: The Lightning ``Callback`` hook that fires each stage. ``end_training_loop`` fires at the
#: first of its hooks that runs in an epoch: ``on_validation_start`` when the epoch
#: validates, else ``on_train_epoch_end``.
STAGE_HOOKS: Mapping[Stage, tuple[str, ...]] = MappingProxyType(
    {
        Stage.START_TRAINING_SESSION: ("on_train_start",),
        Stage.LOAD_CHECKPOINT: ("on_train_start",),
        Stage.START_EPOCH: ("on_train_epoch_start",),
        Stage.START_TRAINING_LOOP: ("on_train_epoch_start",),
        Stage.START_TRAINING_BATCH: ("on_train_batch_start",),
        Stage.END_TRAINING_BATCH: ("on_train_batch_end",),
        Stage.END_TRAINING_LOOP: ("on_validation_start", "on_train_epoch_end"),
        Stage.START_VALIDATION_LOOP: ("on_validation_start",),
        Stage.START_VALIDATION_BATCH: ("on_validation_batch_start",),
        Stage.END_VALIDATION_BATCH: ("on_validation_batch_end",),
        Stage.END_VALIDATION_LOOP: ("on_validation_end",),
        Stage.SAVE_CHECKPOINT: ("on_train_epoch_end",),
        Stage.END_EPOCH: ("on_train_epoch_end",),
        Stage.END_TRAINING_SESSION: ("on_train_end",),
    }
)

#: Lightning hook -> the stages it may fire, in firing order.
_HOOK_STAGES: dict[str, tuple[Stage, ...]] = {}
for _stage in Stage:
    for _hook in STAGE_HOOKS[_stage]:
        _HOOK_STAGES[_hook] = (*_HOOK_STAGES.get(_hook, ()), _stage)

#: Callback hooks Lightning calls at every training or validation step, with the stage each
#: fires (``None``: the bridge has no use for the hook). Lightning calls a callback's hook
#: only if ``callable(getattr(callback, hook))``, and each call it makes costs about 18
#: Python calls (a profiler context, property lookups); so the bridge sets the hooks whose
#: stage has no listener to ``None`` on the instance, and a step costs nothing for them.
_STEP_HOOKS: Mapping[str, Stage | None] = MappingProxyType(
    {
        "on_train_batch_start": Stage.START_TRAINING_BATCH,
        "on_train_batch_end": Stage.END_TRAINING_BATCH,
        "on_validation_batch_start": Stage.START_VALIDATION_BATCH,
        "on_validation_batch_end": Stage.END_VALIDATION_BATCH,
        "on_before_backward": None,
        "on_after_backward": None,
        "on_before_optimizer_step": None,
        "on_before_zero_grad": None,
    }
)

#: A plugin that fails this many times in a row in one stage is disabled.
MAX_CONSECUTIVE_FAILURES = 5

PluginErrorPolicy = Literal["log", "raise"]


class PluginFailure:
    """One failed plugin call, kept for the end-of-run summary."""

    __slots__ = ("plugin", "stage", "epoch", "error", "traceback")

    def __init__(self, plugin: str, stage: Stage, epoch: int, error: BaseException) -> None:
        self.plugin = plugin
        self.stage = stage
        self.epoch = epoch
        self.error = error
        self.traceback = "".join(traceback.format_exception(error))

    def __repr__(self) -> str:
        return f"PluginFailure({self.plugin!r}, {self.stage.value!r}, epoch={self.epoch}, {self.error!r})"


class LifecycleCallback(pl.Callback):
    """Runs bz plugins from Lightning's hooks, in bz's stage order.

    Add it to any ``lightning.Trainer``::

        trainer = lightning.Trainer(callbacks=[LifecycleCallback([MyPlugin()])])

    With a ``BzModule`` the context's losses and metrics are the module's own. With any
    other ``LightningModule`` they come from what Lightning tracks (see
    ``bz_lightning._logged_stats``): the training loss is what ``training_step`` returns,
    the validation loss the logged ``val_loss``, the metrics the logged ``train_<name>`` /
    ``val_<name>`` values (``training_metrics`` from ``end_epoch`` on: Lightning aggregates
    a training epoch's logged values at its end, after validation).

    Args:
        plugins: the plugins, called in this order at every stage.
        hyperparameters: copied into ``context.hyperparameters``.
        plugin_errors: ``"log"`` logs a failing plugin's traceback and goes on (a plugin
            failing ``MAX_CONSECUTIVE_FAILURES`` times in a row is disabled); ``"raise"``
            stops the run with ``BzPluginError``.
        context: the ``PluginContext`` to fill (a new one by default).
        callbacks: Keras-style ``TrainingCallback`` objects (see ``bz_lightning.callbacks``),
            registered with ``add_callback`` after the plugins.

    ``context.should_stop_training`` set by any plugin stops training after the current
    epoch's ``end_epoch``; under DDP the decision is shared by all processes.

    In checkpoints it keeps each plugin's ``state_dict`` under the plugin's ``state_key``
    and the context's epoch values. A run resumed in the middle of an epoch (Lightning
    skips ``on_train_epoch_start`` then) still fires ``start_epoch`` and
    ``start_training_loop`` for that epoch, with the batches trained before the
    interruption already in the context's totals (``context.extra["resumed_batches"]``
    says how many). A fit restored from a checkpoint with nothing left to train (the run
    had ended) still fires ``start_training_session``, ``load_checkpoint`` and
    ``end_training_session``, with the context of the run's last epoch.

    Under DDP the loss totals and batch counts of ``end_training_loop`` and
    ``end_validation_loop`` are summed over all processes (metrics are reduced by their own
    ``compute``), so every process's plugins see the same values; plugins whose class sets
    ``rank_zero_only`` run in the global-rank-0 process only.
    """

    def __init__(
        self,
        plugins: Iterable[Plugin] = (),
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        plugin_errors: PluginErrorPolicy = "log",
        context: PluginContext | None = None,
        callbacks: Iterable[Any] = (),
    ) -> None:
        if plugin_errors not in ("log", "raise"):
            raise BzConfigError(f"plugin_errors must be 'log' or 'raise', got {plugin_errors!r}")
        self.plugins: list[Plugin] = []
        self.context = context if context is not None else PluginContext()
        if hyperparameters:
            self.context.hyperparameters.update(hyperparameters)
        self.plugin_errors = plugin_errors
        self.failures: list[PluginFailure] = []
        self.disabled: set[str] = set()
        self._listeners: dict[Stage, list[Plugin]] = {stage: [] for stage in Stage}
        # (plugin id, stage) -> failures in a row of that plugin in that stage.
        self._consecutive_failures: dict[tuple[int, Stage], int] = {}
        self._restored_epoch: int | None = None
        # Whether a session started in this fit, and whether the fit failed.
        self._session_started = False
        self._failed = False
        self._training_loop_open = False
        self._written_checkpoint: str | None = None
        # Known from `setup` on; plugins with `rank_zero_only` listen on rank 0 only.
        self._global_rank = 0
        # Statistics kept from Lightning's values when the module is not a BzModule (set in
        # `setup`); None for a BzModule, which keeps its own.
        self._logged: dict[str, LoggedStats] | None = None
        self._bind_step_hooks()
        for plugin in plugins:
            self.add_plugin(plugin)
        for callback in callbacks:
            self.add_callback(callback)

    # ------------------------------------------------------------------------- plugins
    def add_plugin(self, plugin: Plugin) -> None:
        """Register ``plugin``; it is called only at the stages its class implements."""
        if not isinstance(plugin, Plugin):
            raise BzConfigError(
                f"plugins must be bz_lightning.plugins.Plugin instances, got {type(plugin).__name__}; "
                "subclass Plugin and override the stage methods you need"
            )
        self.plugins.append(plugin)
        if plugin.rank_zero_only and self._global_rank != 0:
            return
        for stage in implemented_stages(plugin):
            self._listeners[stage].append(plugin)
        self._bind_step_hooks()

    def _bind_step_hooks(self) -> None:
        """Switch off (``None``) the per-step Lightning hooks that would do nothing."""
        for hook, stage in _STEP_HOOKS.items():
            # A subclass's own override always runs.
            inherited = getattr(type(self), hook) in (getattr(LifecycleCallback, hook), getattr(pl.Callback, hook))
            # Without a BzModule the batch ends count the batches and their losses.
            counts = self._logged is not None and hook in ("on_train_batch_end", "on_validation_batch_end")
            if inherited and not counts and (stage is None or not self._listeners[stage]):
                self.__dict__[hook] = None
            else:
                self.__dict__.pop(hook, None)

    def add_callback(self, callback: Any) -> None:
        """Register a Keras-style ``TrainingCallback``; it runs as a plugin (see
        ``bz_lightning.callbacks.CallbackPlugin``), so both share one dispatch."""
        from bz_lightning.callbacks import CallbackPlugin

        self.add_plugin(CallbackPlugin(callback, self))

    def listeners(self, stage: Stage) -> Sequence[Plugin]:
        """The plugins called at ``stage``."""
        return self._listeners[stage]

    def dispatch(self, stage: Stage) -> None:
        """Call every plugin implementing ``stage`` with the context."""
        for plugin in self._listeners[stage]:
            try:
                plugin.run_stage(stage, self.context)
            except NonFiniteLossError:
                raise  # the run's own error, found when a plugin read the run's values
            except Exception as err:
                self._plugin_failed(plugin, stage, err)
            else:
                if self._consecutive_failures:
                    self._consecutive_failures.pop((id(plugin), stage), None)

    def _plugin_failed(self, plugin: Plugin, stage: Stage, err: Exception) -> None:
        if self.plugin_errors == "raise":
            raise BzPluginError(plugin.name, stage.value, err) from err
        failure = PluginFailure(plugin.name, stage, self.context.epoch, err)
        self.failures.append(failure)
        log.error("plugin %r failed in stage %r (epoch %d):\n%s", plugin.name, stage.value,
                  self.context.epoch + 1, failure.traceback)
        # Counted per stage: a plugin failing at every batch is disabled even if its
        # end_epoch succeeds in between.
        key = (id(plugin), stage)
        streak = self._consecutive_failures.get(key, 0) + 1
        self._consecutive_failures[key] = streak
        if streak >= MAX_CONSECUTIVE_FAILURES:
            log.warning("plugin %r failed %d times in a row and is disabled for the rest of the run",
                        plugin.name, streak)
            self.disabled.add(plugin.name)
            # New lists, not in-place removal: dispatch may be iterating one of them.
            for listener_stage, listeners in self._listeners.items():
                self._listeners[listener_stage] = [p for p in listeners if p is not plugin]
            self._bind_step_hooks()

    # ---------------------------------------------------------------- context updates
    def _fire(self, stage: Stage, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Bring the context up to date for ``stage`` and dispatch it."""
        ctx = self.context
        if stage is Stage.START_EPOCH:
            ctx.epoch = trainer.current_epoch
            ctx.training_loss_total = 0.0
            ctx.training_batch_count = 0
            ctx.training_metrics = {}
            _reset_validation(ctx)
            ctx.extra.pop("resumed_batches", None)
            if getattr(trainer.fit_loop, "restarted_mid_epoch", False):
                # The batches trained before the interruption (restored into the module's
                # statistics by the checkpoint) belong to this epoch's totals.
                self._copy_stats(trainer, split_stats(module, "train"), validation=False, loop_end=False)
                ctx.extra["resumed_batches"] = ctx.training_batch_count
        elif stage is Stage.LOAD_CHECKPOINT:
            # The epoch training continues from. (When a stop request was restored,
            # Lightning ends the fit before it brings current_epoch up to date.)
            processed = trainer.fit_loop.epoch_progress.current.processed  # type: ignore[attr-defined]
            ctx.epoch = max(trainer.current_epoch, processed)
        elif stage is Stage.END_TRAINING_LOOP:
            self._copy_stats(trainer, self._stats(module, "train"), validation=False, loop_end=True)
            self._copy_run_state(module)
        elif stage is Stage.START_VALIDATION_LOOP:
            _reset_validation(ctx)
        elif stage is Stage.END_VALIDATION_LOOP:
            self._copy_stats(trainer, self._stats(module, "val"), validation=True, loop_end=True)
        elif stage is Stage.END_EPOCH and self._logged is not None:
            # Lightning aggregates the module's logged training values at the epoch's end,
            # after validation: end_training_loop may have come before them.
            ctx.training_metrics = dict(self._logged["train"].metric_values())
        elif stage is Stage.END_TRAINING_SESSION:
            self._copy_run_state(module)
        elif self._listeners[stage]:
            # Batch stages: only when somebody listens, and the totals are read from the
            # device only if a plugin reads them (see _copy_stats).
            if stage is Stage.END_TRAINING_BATCH:
                self._copy_stats(trainer, self._stats(module, "train"), validation=False, loop_end=False)
            elif stage is Stage.END_VALIDATION_BATCH:
                self._copy_stats(trainer, self._stats(module, "val"), validation=True, loop_end=False)
        self.dispatch(stage)

    def _stats(self, module: pl.LightningModule, split: str) -> RunningStats | None:
        """The running statistics of ``split``: the BzModule's own, else the bridge's."""
        return self._logged[split] if self._logged is not None else split_stats(module, split)

    def _copy_run_state(self, module: pl.LightningModule) -> None:
        """What the end-of-run summary reports: skipped batches and fallbacks."""
        extra = self.context.extra
        extra["skipped_batches"] = getattr(module, "skipped_batches", 0)
        extra["warnings"] = list(getattr(module, "run_warnings", []))

    def _copy_stats(self, trainer: pl.Trainer, stats: RunningStats | None, *, validation: bool,
                    loop_end: bool) -> None:
        """The split's running loss total and batch count into the context, and at a loop's
        end its metrics. Under DDP a loop's end totals are summed over all processes (one
        all-reduce per loop, never per step), so every process's plugins decide alike."""
        if stats is None:
            return
        ctx = self.context
        if not loop_end:
            # At a batch stage the total is read from the device only if a plugin reads it.
            total: Any = stats.read_loss_total
            if validation:
                ctx.validation_loss_total, ctx.validation_batch_count = total, stats.count
            else:
                ctx.training_loss_total, ctx.training_batch_count = total, stats.count
            return
        reading = stats.read()  # one host read; metrics reduced by their own compute
        total, count, metrics = reading.loss_total, reading.count, reading.metrics
        if trainer.world_size > 1:
            import torch

            summed = trainer.strategy.reduce(
                torch.tensor((total, count), dtype=torch.float64, device=trainer.strategy.root_device),
                reduce_op="sum",
            )
            total, count = float(summed[0]), int(summed[1])
        if validation:
            ctx.validation_loss_total, ctx.validation_batch_count = total, count
            ctx.validation_metrics = metrics or {}
        else:
            ctx.training_loss_total, ctx.training_batch_count = total, count
            ctx.training_metrics = metrics or {}

    def _should_fire(self, stage: Stage) -> bool:
        """Whether ``stage`` fires this time (the table's side conditions)."""
        if stage is Stage.LOAD_CHECKPOINT:
            return self._restored_epoch is not None
        if stage is Stage.START_TRAINING_LOOP:
            self._training_loop_open = True
        elif stage is Stage.END_TRAINING_LOOP:
            if not self._training_loop_open:
                return False
            self._training_loop_open = False
        elif stage is Stage.SAVE_CHECKPOINT:
            return self._written_checkpoint is not None
        return True

    def _on_hook(self, hook: str, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        for stage in _HOOK_STAGES[hook]:
            if self._should_fire(stage):
                self._fire(stage, trainer, module)

    # ----------------------------------------------------------- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._session_started = self._failed = False
        # The first hook that knows the process's rank: plugins that write stop listening
        # everywhere but on rank 0.
        self._global_rank = trainer.global_rank
        if split_stats(pl_module, "train") is None:  # not a BzModule: keep what Lightning tracks
            self._logged = {"train": LoggedStats("train", loss_from_log=False),
                            "val": LoggedStats("val", loss_from_log=True)}
        else:
            self._logged = None
        self._bind_step_hooks()
        bar = trainer.progress_bar_callback
        if bar is not None and any(p.shows_progress for p in self.plugins if p.name not in self.disabled):
            bar.disable()  # a plugin shows progress: one display, not two
        if self._global_rank != 0:
            for listener_stage, listeners in self._listeners.items():
                self._listeners[listener_stage] = [p for p in listeners if not p.rank_zero_only]
            self._bind_step_hooks()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_loop_open = False
        self._session_started = True
        self._share_run_objects(trainer, pl_module)
        self._on_hook("on_train_start", trainer, pl_module)
        self._restored_epoch = None
        if getattr(trainer.fit_loop, "restarted_mid_epoch", False) and not trainer.sanity_checking:
            # Lightning continues the interrupted epoch without on_train_epoch_start.
            self._on_hook("on_train_epoch_start", trainer, pl_module)

    def _share_run_objects(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Plugins that act on the model (restoring best weights, say) find it here.
        self.context.extra["model"] = getattr(pl_module, "model", pl_module)
        self.context.extra["lightning_module"] = pl_module
        self.context.extra["trainer"] = trainer
        # Where plugins read running losses and metrics without a BzModule (context.running_stats).
        if self._logged is not None:
            self.context.extra["split_stats"] = self._logged
        else:
            self.context.extra.pop("split_stats", None)
        # The same list the bridge appends to, for end-of-run summaries.
        self.context.extra["plugin_failures"] = self.failures

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._logged is not None:
            self._logged["train"].reset()
        self._on_hook("on_train_epoch_start", trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._on_batch(Stage.START_TRAINING_BATCH, trainer, pl_module, batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._on_batch(Stage.END_TRAINING_BATCH, trainer, pl_module, batch_idx, outputs, "train")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._logged is not None:
            self._logged["val"].reset()
        self._on_hook("on_validation_start", trainer, pl_module)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._on_batch(Stage.START_VALIDATION_BATCH, trainer, pl_module, batch_idx)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._on_batch(Stage.END_VALIDATION_BATCH, trainer, pl_module, batch_idx, outputs, "val")

    def _on_batch(self, stage: Stage, trainer: pl.Trainer, module: pl.LightningModule, batch_idx: int,
                  outputs: Any = None, counted: str | None = None) -> None:
        # The per-step path: nothing but a lookup unless a plugin implements the stage (or,
        # without a BzModule, the batch is to be counted).
        listening = self._listeners[stage]
        logged = self._logged
        if (listening or (logged is not None and counted)) and not trainer.sanity_checking \
                and trainer.state.fn == TrainerFn.FITTING:
            if logged is not None and counted:
                logged[counted].add_batch(outputs)
            if listening:
                self.context.extra["batch_index"] = batch_idx
                self._fire(stage, trainer, module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._logged is not None and not trainer.sanity_checking:
            self._logged["val"].read_logged(trainer.callback_metrics)
        self._on_hook("on_validation_end", trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._logged is not None:
            self._logged["train"].read_logged(trainer.callback_metrics)
        elif trainer.world_size > 1 and not trainer.sanity_checking:
            # Lightning computes the epoch's logged values when first asked, sync_dist ones
            # with a collective: every process asks here, before plugins that run on rank 0
            # only (the console) read them.
            _ = trainer.callback_metrics
        self._on_hook("on_train_epoch_end", trainer, pl_module)
        self._written_checkpoint = None
        # A stop requested at any stage of this epoch takes effect now: Lightning checks
        # should_stop before starting the next epoch. Under DDP any rank's request counts.
        stop = trainer.strategy.reduce_boolean_decision(self.context.should_stop_training, all=False)
        self.context.should_stop_training = stop
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._on_hook("on_train_end", trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Plugins hold files and writers: end the session also when training fails, and when
        # a plugin failed under plugin_errors="raise" (unless ending the session is what
        # failed). A failure while ending it is logged, never raised: it would hide `exception`.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._failed = True
        if isinstance(exception, BzPluginError) and exception.stage == Stage.END_TRAINING_SESSION.value:
            return
        self.context.extra["exception"] = exception
        policy, self.plugin_errors = self.plugin_errors, "log"
        try:
            self._fire(Stage.END_TRAINING_SESSION, trainer, pl_module)
        finally:
            self.plugin_errors = policy

    # --------------------------------------------------------------- checkpointing
    def checkpoint_written(self, path: str) -> None:
        """Tell the bridge that bz wrote ``path`` this epoch, so ``save_checkpoint`` fires."""
        self._written_checkpoint = path
        self.context.extra["checkpoint_path"] = path

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._restored_epoch = int(checkpoint.get("epoch", 0))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if (stage == TrainerFn.FITTING.value and self._restored_epoch is not None and not self._session_started
                and not self._failed):
            self._finish_restored_session(trainer, pl_module)
        self._restored_epoch = None

    def _finish_restored_session(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """The checkpoint restored a run that had ended (its last epoch or a stop request):
        Lightning trains nothing and calls neither ``on_train_start`` nor ``on_train_end``.
        The plugins still get their session, and end it with the last epoch's values, as
        they would have had the run not been interrupted before it was recorded."""
        self._share_run_objects(trainer, module)
        final_epoch = self.context.epoch
        for stage in (Stage.START_TRAINING_SESSION, Stage.LOAD_CHECKPOINT):
            self._fire(stage, trainer, module)
        self.context.epoch = final_epoch
        self._fire(Stage.END_TRAINING_SESSION, trainer, module)

    def _keyed_plugins(self) -> list[tuple[str, Plugin]]:
        """Each plugin with its key in checkpoints: its ``state_key``, and ``key#2``,
        ``key#3``... for later plugins with the same key."""
        seen: dict[str, int] = {}
        keyed = []
        for plugin in self.plugins:
            key = plugin.state_key
            seen[key] = seen.get(key, 0) + 1
            keyed.append((key if seen[key] == 1 else f"{key}#{seen[key]}", plugin))
        return keyed

    def state_dict(self) -> dict[str, Any]:
        return {
            "plugins": {key: plugin.state_dict() for key, plugin in self._keyed_plugins()},
            "context": context_values(self.context),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = dict(state_dict.get("plugins", {}))
        for key, plugin in self._keyed_plugins():
            if key in saved:
                plugin.load_state_dict(saved.pop(key))
        if saved:
            log.info("the checkpoint holds state for plugins this run does not have: %s", ", ".join(saved))
        restored = state_dict.get("context")
        if restored:
            restore_context(self.context, restored)


def _reset_validation(ctx: PluginContext) -> None:
    ctx.validation_loss_total = 0.0
    ctx.validation_batch_count = 0
    ctx.validation_metrics = {}
