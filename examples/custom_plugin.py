"""The bz Python API with a custom plugin (the spec's ``MyCustomPlugin``).

Trains a small MLP on scikit-learn's bundled 8x8 handwritten digits (real data, no
download) and prints the plugin's per-epoch loss line.

    python examples/custom_plugin.py --epochs 3
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning import Trainer
from bz_lightning.plugins import Plugin


class MyCustomPlugin(Plugin):
    def __init__(self, config=None):
        self.config = config or {}

    def start_training_session(self, context):
        print("Training started!")

    def end_epoch(self, context):
        if context.training_batch_count > 0:
            avg_loss = context.training_loss_total / context.training_batch_count
            print(f"Epoch {context.epoch} - Loss: {avg_loss:.4f}")


def digits_loaders(samples: int | None, batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:samples], dtype=torch.float32) / 16.0
    y = torch.tensor(y[:samples])
    split = int(0.8 * len(x))
    train = DataLoader(TensorDataset(x[:split], y[:split]), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x[split:], y[split:]), batch_size=batch_size)
    return train, val


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=None, help="use only the first N digits")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    train_loader, val_loader = digits_loaders(args.samples)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    trainer = Trainer()
    trainer.add_plugin(MyCustomPlugin())
    result = trainer.train(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        nn.CrossEntropyLoss(),
        train_loader,
        val_loader,
        device="cpu",
        epochs=args.epochs,
        compile=False,
    )
    print({k: round(v, 4) for k, v in result.metrics.items()})
    return result.metrics


if __name__ == "__main__":
    main()
