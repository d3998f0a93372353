"""Bare Lightning with what ``bz-train`` sets up by default; prints the time at the first step.

The same work as ``bz-train``'s defaults: scikit-learn's digits (80/20 split, batch 64), an
MLP 64-128-64-10, Adam, cross-entropy, torchmetrics Accuracy and macro F1 on training and
validation, a TensorBoard logger, Lightning's progress bar, seed 42, no checkpointing and no
sanity check (bz-train has neither). Run by ``bench_first_step.py``; it exits at the first
training batch after printing ``FIRST_STEP <time.time()>``.
"""

import os
import sys
import time

import lightning.pytorch as pl
import torch
import torchmetrics
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class FirstStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        print(f"\nFIRST_STEP {time.time()}", flush=True)
        os._exit(0)


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                   nn.Linear(64, 10))
        self.loss_fn = nn.CrossEntropyLoss()
        self.metrics = nn.ModuleDict({
            f"{split}_{name}": metric
            for split in ("train", "val")
            for name, metric in (("accuracy", torchmetrics.classification.MulticlassAccuracy(10, average="micro")),
                                 ("f1_score", torchmetrics.classification.MulticlassF1Score(10, average="macro")))
        })

    def _step(self, split, batch):
        x, y = batch
        preds = self.model(x)
        loss = self.loss_fn(preds, y)
        for name in ("accuracy", "f1_score"):
            self.metrics[f"{split}_{name}"].update(preds, y)
        self.log(f"{split}_loss", loss, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        return self._step("val", batch)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main():
    pl.seed_everything(42, workers=True)
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_val = round(len(y) * 0.2)
    train = DataLoader(TensorDataset(x[order[n_val:]], y[order[n_val:]]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[order[:n_val]], y[order[:n_val]]), batch_size=64)
    trainer = pl.Trainer(max_epochs=10, logger=pl.loggers.TensorBoardLogger(sys.argv[1] if len(sys.argv) > 1 else "."),
                         enable_checkpointing=False, num_sanity_val_steps=0, callbacks=[FirstStep()])
    trainer.fit(Classifier(), train, val)


if __name__ == "__main__":
    main()
