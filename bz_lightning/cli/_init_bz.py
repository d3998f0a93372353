"""``bz init --layout bz``: the files of a project in bz's own layout, for ``bz train``.

The spec's example project (``../shared/spec/bz-project``; its code and configs are these,
checked by ``tests/test_bz_train.py``): ``train.py`` defines the objects bz trains and reads
its settings with ``get_config_manager()``; ``bz_config.json`` is bz's nested JSON layout,
``flat_config.json`` the flat one. The data are scikit-learn's bundled digits, so the
project runs offline.
"""

from __future__ import annotations

__all__ = ["BZ_PROJECT_FILES"]

BZ_PROJECT_FILES: dict[str, str] = {
    "README.md": """\
# {name}

A bz project in bz's layout: `train.py` defines what to train (`model`, `loss_fn`,
`optimizer`, `training_loader`, `validation_loader`, and optionally `metrics`, used instead
of the config's metric names), `model.py` the model, `bz_config.json` the settings that
`train.py` reads with `get_config_manager()`.

    bz train                            # 3 epochs, console_out + early_stopping
    bz train --epochs 1 --device cpu
    bz train --config flat_config.json  # the same settings in bz's flat layout

Each run writes `outputs/train/runs/<time>/` with `metrics.json`, `config.json` and
`train.log`; checkpoints go to `runs/<signature>/checkpoints/`, and running the same
command again continues the run (or reuses its result when it had finished).
""",
    "train.py": """\
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning.config import get_config_manager
from bz_lightning.metrics import Accuracy, Precision, Recall
from model import DigitsNet

config_manager = get_config_manager()
training_config = config_manager.get_training_config()
hyperparameters = config_manager.get_hyperparameters()

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target, dtype=torch.long)
generator = torch.Generator().manual_seed(0)
order = torch.randperm(len(x), generator=generator)
train_idx, val_idx = order[:1400], order[1400:]

training_loader = DataLoader(
    TensorDataset(x[train_idx], y[train_idx]), batch_size=training_config["batch_size"], shuffle=True
)
validation_loader = DataLoader(
    TensorDataset(x[val_idx], y[val_idx]), batch_size=training_config["batch_size"], shuffle=False
)

model = DigitsNet(hidden=hyperparameters.get("hidden", 64))
loss_fn = torch.nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=training_config["learning_rate"])

metrics = [Accuracy(), Precision(average="macro"), Recall()]
""",
    "model.py": """\
import torch


class DigitsNet(torch.nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )

    def forward(self, x):
        return self.net(x)
""",
    "bz_config.json": """\
{
  "training": {
    "epochs": 3,
    "batch_size": 64,
    "learning_rate": 0.003,
    "device": "auto",
    "compile": false,
    "checkpoint_interval": 1
  },
  "hyperparameters": {
    "hidden": 64
  },
  "plugins": {
    "console_out": {"enabled": true},
    "tensorboard": {"enabled": false, "config": {"log_dir": "runs/experiment"}},
    "early_stopping": {
      "enabled": true,
      "config": {"patience": 3, "min_delta": 0.001, "monitor": "val_loss"}
    }
  },
  "metrics": {
    "metrics": ["accuracy", "precision", "recall"]
  }
}
""",
    "flat_config.json": """\
{
  "epochs": 2,
  "hyperparameters": {
    "hidden": 32,
    "batch_size": 64,
    "learning_rate": 0.003
  },
  "metrics": ["accuracy"],
  "plugins": ["console_out"]
}
""",
}
