"""Tiny deterministic worlds shared by the tests: a two-layer model and a small dataset."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning.metrics import Metric
from bz_lightning.plugins import Plugin

N_FEATURES = 6
N_CLASSES = 3

#: The environment variable naming mnist-mini (8,000 training + 2,000 validation images of
#: real MNIST digits; a directory holding ``MNIST/raw/``). Unset: ``../shared/data/mnist-mini``
#: beside this checkout. Tests that need real digits skip without it; tests that only need
#: MNIST files write small ones of their own (``test_data.write_mnist``).
MNIST_MINI_ENV = "BZ_MNIST_MINI"


def mnist_mini_dir() -> Path:
    """mnist-mini's directory; skips the calling test, saying why, when it is not there."""
    named = os.environ.get(MNIST_MINI_ENV)
    root = Path(named) if named else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-mini"
    if not (root / "MNIST" / "raw").is_dir():
        where = f"${MNIST_MINI_ENV}={named}" if named else f"${MNIST_MINI_ENV} unset and no {root}"
        pytest.skip(f"needs mnist-mini (real MNIST digits): {where}; set {MNIST_MINI_ENV} to a directory "
                    "holding MNIST/raw/")
    return root


@pytest.fixture
def mnist_mini() -> Path:
    """mnist-mini's directory (see ``MNIST_MINI_ENV``); the test skips without it."""
    return mnist_mini_dir()


def make_dataset(n: int = 48, seed: int = 0) -> TensorDataset:
    """``n`` samples of 6 features whose class (0..2) is a function of the features."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, N_CLASSES))


class CountingAccuracy(Metric):
    """Top-1 accuracy counted by hand, so tests do not depend on the built-in metrics and
    reference loops can count the same way."""

    def __init__(self, name: str = "accuracy") -> None:
        super().__init__(name)
        self.reset()

    def reset(self) -> None:
        self.correct = self.total = 0

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        self.correct += int((preds.argmax(-1) == targets).sum())
        self.total += targets.numel()

    def compute(self) -> float:
        return self.correct / self.total


class TermAt(Plugin):
    """Sends this process SIGTERM, as a scheduler's preemption would (bz's handler saves
    last.ckpt, then raises Preempted), at ``stage`` of ``epoch`` (from 0); for batch stages,
    at batch ``batch``."""

    def __init__(self, epoch: int, stage: str = "end_training_batch", batch: int = 0) -> None:
        super().__init__()
        self.at = (epoch, stage, batch)
        setattr(self, stage, self._maybe_term)

    def _maybe_term(self, context) -> None:
        epoch, stage, batch = self.at
        if context.epoch == epoch and ("batch" not in stage or context.extra["batch_index"] == batch):
            os.kill(os.getpid(), signal.SIGTERM)

    def run_signature(self):
        return None  # interrupting a run does not make it another run


@pytest.fixture
def model() -> nn.Module:
    return make_model()


@pytest.fixture
def train_loader() -> DataLoader:
    return DataLoader(make_dataset(48, seed=0), batch_size=16)


@pytest.fixture
def val_loader() -> DataLoader:
    return DataLoader(make_dataset(20, seed=1), batch_size=8)


@pytest.fixture(autouse=True)
def _quiet_lightning(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Keep Lightning's banner lines and known deprecation chatter out of test output, and
    run every test in its own directory so nothing is written into the repository."""
    monkeypatch.chdir(tmp_path)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Hydra runs in-process in some tests and reconfigures logging; give every test bz's
    # loggers back as they were (enabled, propagating to caplog).
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("bz_lightning") and isinstance(logger, logging.Logger):
            logger.disabled = False
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


@pytest.fixture(autouse=True)
def _no_leftover_process_group():
    """A test that runs Lightning's DDP strategy in-process (one device) leaves a process
    group holding MASTER_PORT and that port in os.environ, which later DDP subprocesses
    would inherit and fail to bind. Undo both after every test."""
    before = {key: os.environ.get(key) for key in _DDP_ENV}
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
