"""Keras-style training callbacks (``on_epoch_end(trainer, epoch, logs)``) on bz's bridge.

A ``TrainingCallback`` is any object with some of the eight hooks below; ``BaseCallback``
gives no-op versions of all of them. Callbacks do not get a loop of their own: each one is
wrapped in a ``CallbackPlugin`` and runs through ``LifecycleCallback``'s plugin dispatch,
at the bz stage ``HOOK_STAGES`` names, so plugins and callbacks share one ordering, one
failure policy and one stop mechanism. A hook a callback does not implement is never
called and costs nothing per batch.

Use them with bz's trainer::

    Trainer().train(model, optimizer, loss_fn, train_loader, val_loader, callbacks=[MyCallback()])

or with a plain ``lightning.Trainer`` fitting a ``BzModule``::

    lightning.Trainer(callbacks=[LifecycleCallback(callbacks=[MyCallback()])]).fit(module, ...)
"""

from __future__ import annotations

from bz_lightning.callbacks.base import (
    HOOK_STAGES,
    BaseCallback,
    CallbackList,
    TrainerLike,
    TrainingCallback,
    implemented_hooks,
)
from bz_lightning.callbacks.plugin import CallbackPlugin, TrainerView

__all__ = [
    "TrainerLike",
    "TrainingCallback",
    "BaseCallback",
    "CallbackList",
    "CallbackPlugin",
    "TrainerView",
    "HOOK_STAGES",
    "implemented_hooks",
]
