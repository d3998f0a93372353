"""Metrics driven by training: bz's Trainer and a plain lightning.Trainer with BzModule."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning import BzModule, Trainer

# ---- the spec's "Creating a Custom Metric" example, pasted as-is ---------------------------
from bz_lightning.metrics import Accuracy, F1Score, MeanAbsoluteError, MeanSquaredError, Metric, Precision, TopKAccuracy


class CustomMetric(Metric):
    def __init__(self, name=None):
        super().__init__(name)
        self.sum = 0.0
        self.count = 0

    def reset(self):
        self.sum = 0.0
        self.count = 0

    def update(self, preds, targets):
        self.sum += (preds - targets).abs().sum().item()
        self.count += targets.numel()

    def compute(self):
        return self.sum / self.count if self.count > 0 else 0.0
# ---------------------------------------------------------------------------------------------


def regression_loaders() -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 6, generator=gen)
    y = x @ torch.randn(6, 1, generator=gen) + 0.1 * torch.randn(60, 1, generator=gen)
    return (DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16),
            DataLoader(TensorDataset(x[40:], y[40:]), batch_size=8))


def regression_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))


@torch.no_grad()
def outputs(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    preds, targets = zip(*[(model(x), y) for x, y in loader])
    return torch.cat(preds), torch.cat(targets)


def test_custom_metric_from_the_spec_trains_and_is_reported() -> None:
    train_loader, val_loader = regression_loaders()
    model = regression_model()
    result = Trainer().train(
        model, torch.optim.SGD(model.parameters(), lr=0.05), nn.MSELoss(), train_loader, val_loader,
        device="cpu", epochs=2, compile=False,
        metrics=[CustomMetric(), CustomMetric(name="l1"), MeanAbsoluteError(), MeanSquaredError(name="mse")],
    )
    train, val = result.context.training_metrics, result.context.validation_metrics
    assert set(train) == set(val) == {"CustomMetric", "l1", "mae", "mse"}
    # Same batches, same weights: the spec's per-batch .item() metric and the torchmetrics one agree.
    assert train["CustomMetric"] == pytest.approx(train["mae"], rel=1e-5)
    assert train["l1"] == train["CustomMetric"]
    # Validation runs after the last epoch's steps: recompute with the final model.
    preds, targets = outputs(model, val_loader)
    assert val["CustomMetric"] == pytest.approx(float((preds - targets).abs().mean()), rel=1e-5)
    assert val["mse"] == pytest.approx(float(((preds - targets) ** 2).mean()), rel=1e-5)
    logged = result.lightning_trainer.callback_metrics
    for name in ("CustomMetric", "l1", "mae", "mse"):
        assert float(logged[f"train_{name}"]) == pytest.approx(train[name])
        assert float(logged[f"val_{name}"]) == pytest.approx(val[name])


def classification_metrics() -> list[Metric]:
    return [Accuracy(), Precision("macro"), F1Score(average="weighted", name="f1"), TopKAccuracy(k=2, name="top2")]


def expected_classification(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    logits, targets = outputs(model, loader)
    y_true, y_pred = targets.numpy(), logits.argmax(1).numpy()
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "top2": float((logits.topk(2, 1).indices == targets[:, None]).any(1).float().mean()),
    }


def test_builtin_metrics_through_bz_trainer(model, train_loader, val_loader) -> None:
    # lr=0: the weights never change, so the training metrics can be recomputed afterwards.
    result = Trainer().train(
        model, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), train_loader, val_loader,
        device="cpu", epochs=2, compile=False, metrics=classification_metrics(),
    )
    expected_train = expected_classification(model, train_loader)
    expected_val = expected_classification(model, val_loader)
    assert result.context.training_metrics == pytest.approx(expected_train)
    assert result.context.validation_metrics == pytest.approx(expected_val)
    logged = result.lightning_trainer.callback_metrics
    for name, value in expected_train.items():
        assert float(logged[f"train_{name}"]) == pytest.approx(value)
        assert float(logged[f"val_{name}"]) == pytest.approx(expected_val[name])


def test_builtin_metrics_through_plain_lightning_trainer(model, train_loader, val_loader) -> None:
    module = BzModule(model, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1),
                      metrics=classification_metrics())
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_loader, val_loader)
    expected_val = expected_classification(model, val_loader)
    for name, value in expected_val.items():
        assert float(trainer.callback_metrics[f"val_{name}"]) == pytest.approx(value)
        assert 0.0 <= float(trainer.callback_metrics[f"train_{name}"]) <= 1.0
    # Metrics reset every epoch: the last value covers the last epoch's samples only (every
    # one of these counts each sample once as a true positive or a false negative).
    for split, loader in (("train", train_loader), ("val", val_loader)):
        module.stats[split].metric_values()
        seen = [int((m._tm.tp + m._tm.fn).sum()) for m in module.stats[split].metrics]
        assert seen == [len(loader.dataset)] * len(seen)


def test_each_split_gets_its_own_copy_of_a_metric(model, train_loader, val_loader) -> None:
    metric = Accuracy()
    module = BzModule(model, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.0), metrics=[metric])
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, train_loader, val_loader)
    assert metric._tm is None  # the user's object is a template, never updated
    train_metric, val_metric = module.stats["train"].metrics[0], module.stats["val"].metrics[0]
    assert train_metric is not val_metric
    assert train_metric.compute() == pytest.approx(expected_classification(model, train_loader)["accuracy"])
    assert val_metric.compute() == pytest.approx(expected_classification(model, val_loader)["accuracy"])
