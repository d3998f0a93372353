"""``BzModule`` under a plain ``lightning.Trainer`` with your own callbacks and loggers.

The adapter is an ordinary LightningModule: Lightning's ModelCheckpoint and EarlyStopping
see ``val_loss``, and bz plugins can ride along through ``LifecycleCallback``.

    python examples/plain_lightning.py --epochs 5
"""

from __future__ import annotations

import argparse
import functools

import lightning.pytorch as pl
import torch
from custom_plugin import digits_loaders
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from bz_lightning import BzModule, LifecycleCallback
from bz_lightning.plugins import Plugin


class EpochPrinter(Plugin):
    def end_epoch(self, context):
        mean = context.validation_loss_total / max(context.validation_batch_count, 1)
        print(f"epoch {context.epoch}: val_loss {mean:.4f}")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--dir", default="checkpoints")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    train_loader, val_loader = digits_loaders(args.samples)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    module = BzModule(model, nn.CrossEntropyLoss(), functools.partial(torch.optim.Adam, lr=1e-3))
    checkpoint = ModelCheckpoint(dirpath=args.dir, monitor="val_loss", save_top_k=1)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[checkpoint, EarlyStopping(monitor="val_loss", patience=3), LifecycleCallback([EpochPrinter()])],
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, train_loader, val_loader)
    print(f"best checkpoint: {checkpoint.best_model_path} (val_loss {float(checkpoint.best_model_score):.4f})")
    return checkpoint.best_model_path


if __name__ == "__main__":
    main()
