"""Writing bz checkpoints every N epochs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import lightning.pytorch as pl

if TYPE_CHECKING:
    from bz_lightning.bridge import LifecycleCallback

__all__ = ["EpochCheckpoint", "find_latest_checkpoint_epoch"]


class EpochCheckpoint(pl.Callback):
    """Writes ``<dirpath>/epoch-N.ckpt`` (N counted from 1) every ``interval`` epochs and
    tells the bridge, so plugins see ``save_checkpoint`` before ``end_epoch``."""

    def __init__(self, dirpath: str, interval: int, bridge: LifecycleCallback) -> None:
        self.dirpath = dirpath
        self.interval = interval
        self.bridge = bridge

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.interval and epoch % self.interval == 0:
            path = os.path.join(self.dirpath, f"epoch-{epoch}.ckpt")
            trainer.save_checkpoint(path)
            self.bridge.checkpoint_written(path)


def find_latest_checkpoint_epoch(checkpoint_dir: str | os.PathLike[str]) -> int | None:
    """The highest N among ``epoch-N.ckpt`` files in ``checkpoint_dir``, or ``None``."""
    try:
        names = os.listdir(checkpoint_dir)
    except FileNotFoundError:
        return None
    epochs = [
        int(name[len("epoch-") : -len(".ckpt")])
        for name in names
        if name.startswith("epoch-") and name.endswith(".ckpt") and name[len("epoch-") : -len(".ckpt")].isdigit()
    ]
    return max(epochs, default=None)
