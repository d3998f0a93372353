"""What ``Trainer.train`` needs to describe a run (for its signature) and to record it.

* ``debug_options``: the Lightning options that make a run a debug run (never stored or
  reused).
* ``describe_call``: the ``Trainer.train`` arguments that define the run, as plain values.
* ``result_of``: the ``TrainingResult`` of a fit; ``stored_fields`` / ``result_from_stored``
  / ``reuse``: what ``result.json`` keeps of a finished run, and the ``TrainingResult`` a
  reused run returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch import nn

    from bz_lightning.bridge import LifecycleCallback
    from bz_lightning.checkpointing.run import RunCheckpoints
    from bz_lightning.module import BzModule
    from bz_lightning.plugins.base import Plugin
    from bz_lightning.trainer import TrainingResult

__all__ = ["DEBUG_OPTIONS", "as_list", "code_objects", "debug_options", "describe_call", "result_from_stored",
           "result_of", "reuse", "stored_fields"]

log = logging.getLogger("bz_lightning")

#: ``lightning.Trainer`` options that run only part of the data; value means "off".
DEBUG_OPTIONS: Mapping[str, tuple[Any, ...]] = {
    "fast_dev_run": (False, 0, None),
    "overfit_batches": (0, 0.0, None),
    "limit_train_batches": (None, 1.0),
    "limit_val_batches": (None, 1.0),
    "limit_test_batches": (None, 1.0),
    "limit_predict_batches": (None, 1.0),
}


def debug_options(lightning_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The options among ``lightning_kwargs`` that make this a debug run: it trains or
    validates on part of the data (``fast_dev_run``, ``overfit_batches``,
    ``limit_*_batches``), so its result is never stored nor answered from storage.

    >>> debug_options({"fast_dev_run": True, "precision": "bf16-mixed", "limit_val_batches": 1.0})
    {'fast_dev_run': True}
    """
    found = {}
    for name, off in DEBUG_OPTIONS.items():
        value = lightning_kwargs.get(name)
        if not any(value is v or (type(value) is type(v) and value == v) for v in off):
            found[name] = value
    return found


def describe_call(
    *,
    epochs: int,
    device: Any,
    compile: bool,
    metrics: Sequence[Any],
    scheduler: Any,
    plugins: Sequence[Plugin],
    callbacks: Sequence[Any],
    policies: Mapping[str, Any],
    lightning_kwargs: Mapping[str, Any],
    hyperparameters: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The arguments of a ``Trainer.train`` call that define the run, as plain values.

    Plugins are described by their ``run_signature()`` (those returning ``None`` only
    report, and are left out), Lightning callbacks by their ``state_key``, everything else
    by ``describe``. ``hyperparameters`` is ``None`` when a ``config`` defines the run.
    """
    from lightning.pytorch import Callback

    from bz_lightning.checkpointing.signature import describe

    described_plugins = [p.run_signature() for p in plugins]
    call: dict[str, Any] = {
        "epochs": epochs,
        "device": str(device),
        "compile": compile,
        "metrics": [{"name": m.name, **describe(m)} for m in metrics],
        "scheduler": describe(scheduler),
        "plugins": [d for d in described_plugins if d is not None],
        "callbacks": [{"lightning": c.state_key} if isinstance(c, Callback) else describe(c) for c in callbacks],
        **{name: describe(value) for name, value in policies.items()},
        "lightning": {name: describe(value) for name, value in lightning_kwargs.items() if name != "callbacks"},
    }
    if hyperparameters is not None:
        call["hyperparameters"] = describe(dict(hyperparameters))
    return call


def code_objects(
    *,
    scheduler: Any,
    metrics: Iterable[Any],
    plugins: Iterable[Plugin],
    callbacks: Iterable[Any],
    loaders: Iterable[Any],
) -> list[Any]:
    """Objects whose defining source is part of the signature, beside the model, optimizer
    and loss: the scheduler, metrics, callbacks, plugins that define the run (not those
    that only report), and the loaders' datasets."""
    from bz_lightning.callbacks.plugin import CallbackPlugin

    objects: list[Any] = [scheduler, *metrics, *callbacks]
    for plugin in plugins:
        if plugin.run_signature() is not None:
            objects.append(plugin.callback if isinstance(plugin, CallbackPlugin) else plugin)
    for loader in loaders:
        if loader is not None:
            objects.append(getattr(loader, "dataset", loader))
    return objects


def stored_fields(result: TrainingResult, epochs: int) -> dict[str, Any]:
    """What ``result.json`` keeps of a finished run."""
    from bz_lightning.context import context_values

    return {
        "epochs": epochs,
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "metrics": result.metrics,
        "training_metrics": result.training_metrics,
        "validation_metrics": result.validation_metrics,
        "training_loss": result.training_loss,
        "validation_loss": result.validation_loss,
        "context": context_values(result.context),
        "skipped_batches": [[s.epoch, s.batch, s.reason] for s in result.skipped_batches],
        "plugin_failures": len(result.plugin_failures),
        "warnings": list(result.warnings),
        "duration_s": result.duration_s,
    }


def result_from_stored(stored: Mapping[str, Any]) -> TrainingResult:
    """The ``TrainingResult`` of a run that had already finished: nothing was trained, and
    every value comes from its ``result.json``."""
    from bz_lightning._batch_guard import SkippedBatch
    from bz_lightning.context import PluginContext, restore_context
    from bz_lightning.trainer import TrainingResult

    context = restore_context(PluginContext(), dict(stored.get("context", {})))
    return TrainingResult(
        context=context,
        training_metrics=dict(stored.get("training_metrics", {})),
        validation_metrics=dict(stored.get("validation_metrics", {})),
        training_loss=_float(stored.get("training_loss")),
        validation_loss=_float(stored.get("validation_loss")),
        epochs_completed=int(stored.get("epochs_completed", 0)),
        stopped_early=bool(stored.get("stopped_early", False)),
        skipped_batches=[SkippedBatch(int(e), int(b), str(r), "") for e, b, r in stored.get("skipped_batches", [])],
        warnings=[str(w) for w in stored.get("warnings", [])],
        reused=True,
    )


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def result_of(bridge: LifecycleCallback, module: BzModule, trainer: pl.Trainer, duration: float) -> TrainingResult:
    """The ``TrainingResult`` of a fit that returned."""
    from bz_lightning.context import mean
    from bz_lightning.trainer import TrainingResult

    ctx = bridge.context
    return TrainingResult(
        context=ctx,
        training_metrics=dict(ctx.training_metrics),
        validation_metrics=dict(ctx.validation_metrics),
        # The context's totals are summed over processes under DDP; the module's are local.
        training_loss=mean(ctx.training_loss_total, ctx.training_batch_count),
        validation_loss=mean(ctx.validation_loss_total, ctx.validation_batch_count),
        # Epochs whose training finished: also right when a restored run had nothing left.
        epochs_completed=max(trainer.current_epoch,
                             trainer.fit_loop.epoch_progress.current.processed),  # type: ignore[attr-defined]
        stopped_early=trainer.should_stop,
        plugin_failures=list(bridge.failures),
        skipped_batches=list(module.skip_budget.skipped),
        warnings=module.run_warnings,
        module=module,
        lightning_trainer=trainer,
        duration_s=duration,
    )


def reuse(checkpoints: RunCheckpoints, model: nn.Module) -> TrainingResult | None:
    """The stored result of a finished run, said aloud, with its final weights in ``model``."""
    stored = checkpoints.finished_result(model)
    if stored is None:
        return None
    log.warning(
        "reusing the finished run %s (%s, %s epochs, finished %s): nothing was trained, its final weights are "
        "loaded into the model; pass resume='never' (bz-train: resume=never) to train it again",
        checkpoints.signature, checkpoints.result_path, stored.get("epochs_completed"), stored.get("finished_at"),
    )
    result = result_from_stored(stored)
    result.signature = checkpoints.signature
    result.checkpoint_dir = str(checkpoints.directory)
    return result


def as_list(value: Any) -> list[Any]:
    """``None`` -> ``[]``, a list or tuple -> a list, anything else -> ``[value]``."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
