"""bz on PyTorch Lightning: bz's Trainer, plugins and metrics, with Lightning running the loop.

Importing the package is cheap: torch and Lightning are imported the first time a name
that needs them is used, so ``bz --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning._lazy import lazy_getattr
from bz_lightning.context import PluginContext
from bz_lightning.errors import (
    BzCheckpointError,
    BzConfigError,
    BzDiskFullError,
    BzError,
    BzPluginError,
    NonFiniteLossError,
)
from bz_lightning.stages import Stage

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "Trainer": "bz_lightning.trainer",
    "TrainingResult": "bz_lightning.trainer",
    "BzModule": "bz_lightning.module",
    "LifecycleCallback": "bz_lightning.bridge",
    "STAGE_HOOKS": "bz_lightning.bridge",
    "find_latest_checkpoint_epoch": "bz_lightning.checkpointing",
    "compute_training_signature": "bz_lightning.checkpointing",
    "Preempted": "bz_lightning.checkpointing",
    "Interrupted": "bz_lightning.checkpointing",
}

__all__ = [
    "Stage",
    "PluginContext",
    "BzError",
    "BzConfigError",
    "BzCheckpointError",
    "BzDiskFullError",
    "BzPluginError",
    "NonFiniteLossError",
    *_LAZY,
]

if TYPE_CHECKING:
    from bz_lightning.bridge import STAGE_HOOKS, LifecycleCallback
    from bz_lightning.checkpointing import (
        Interrupted,
        Preempted,
        compute_training_signature,
        find_latest_checkpoint_epoch,
    )
    from bz_lightning.module import BzModule
    from bz_lightning.trainer import Trainer, TrainingResult


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
