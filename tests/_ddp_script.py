"""Train a tiny fixed problem with bz's Python API, on 1 process or 2 DDP processes (gloo, CPU).

    python tests/_ddp_script.py OUT_DIR {metrics,early_stop,skip,whole,cut,rerun} DEVICES

``whole``, ``cut`` and ``rerun`` checkpoint into ``OUT_DIR/ckpt`` (shuffled data, dropout,
Adam): ``cut`` sends its own process SIGTERM in the middle of the second epoch, ``rerun``
continues it; both must end where ``whole`` does.

Every process writes ``OUT_DIR/rank<global rank>.json``: the final validation metrics, the
epoch training stopped at, the sum of the model's weights and, per epoch, the loss totals
and batch counts its plugins saw at the end of the validation loop. Lightning starts the second DDP process by running this script again.

The data is sized so that DistributedSampler adds no padding and the global batch is the
same as single-process: 64 train / 32 val samples, batch 16 on one process, 8 on each of two.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning import Trainer
from bz_lightning.metrics import get_metric
from bz_lightning.plugins import EarlyStoppingPlugin, Plugin

EPOCHS = 6


class FailsAt(TensorDataset):
    """Raises for one sample index, as a corrupt file would (``skip`` scenario)."""

    def __init__(self, bad: int, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.bad = bad

    def __getitem__(self, index: int):
        if index == self.bad:
            raise OSError(f"corrupt sample {index}")
        return super().__getitem__(index)


class TermMidEpoch(Plugin):
    """Sends SIGTERM to the rank-0 process after batch 2 of epoch 1, as a preemption would."""

    def end_training_batch(self, context) -> None:
        trainer = context.extra["trainer"]
        if trainer.global_rank == 0 and context.epoch == 1 and context.extra["batch_index"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def run_signature(self):
        return None


def _snapshot(context) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights and the optimizer's per-parameter state tensors (momentum buffers), copied."""
    model = context.extra["model"]
    optimizer = context.extra["trainer"].optimizers[0]
    state = [v.clone() for p in model.parameters() for v in optimizer.state.get(p, {}).values()
             if isinstance(v, torch.Tensor)]
    return [p.detach().clone() for p in model.parameters()], state


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


class Recorder(Plugin):
    """Writes what this process's plugins saw, and whether each training step changed the
    weights and the optimizer's state."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.seen: list[list[float]] = []
        self.steps: list[list[bool]] = []  # per batch: [skipped, weights unchanged, optimizer state unchanged]
        self._before: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._skipped = 0

    def start_training_batch(self, context) -> None:
        self._before = _snapshot(context)
        self._skipped = len(context.extra["lightning_module"].skip_budget.skipped)

    def end_training_batch(self, context) -> None:
        weights, state = _snapshot(context)
        skipped = len(context.extra["lightning_module"].skip_budget.skipped) > self._skipped
        assert self._before is not None
        self.steps.append([skipped, _same(self._before[0], weights), _same(self._before[1], state)])

    def end_validation_loop(self, context) -> None:
        self.seen.append([context.validation_loss_total, context.validation_batch_count,
                          context.training_loss_total, context.training_batch_count, context.training_metrics])

    def end_training_session(self, context) -> None:
        trainer = context.extra["trainer"]
        record = {
            "world_size": trainer.world_size,
            "stop_epoch": context.epoch,
            "validation_metrics": context.validation_metrics,
            "validation_loss": context.validation_loss_total / max(context.validation_batch_count, 1),
            "seen": self.seen,
            "weights": float(sum(p.double().sum() for p in context.extra["model"].parameters())),
            "skipped": [[s.epoch, s.batch, s.reason] for s in context.extra["lightning_module"].skip_budget.skipped],
            "steps": self.steps,
            "training_loss": context.training_loss_total / max(context.training_batch_count, 1),
            "training_metrics": context.training_metrics,
            "state": {k: v.tolist() for k, v in context.extra["model"].state_dict().items()},
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def run_signature(self):
        return None


def resume(out: Path, scenario: str, devices: int) -> None:
    """3 epochs of a shuffled loader, a dropout model and Adam, checkpointed."""
    torch.manual_seed(0)  # the same data and initial weights in every process
    x = torch.randn(96, 8)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16 // devices, shuffle=True)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16 // devices)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    # Different RNG states per process from here on (dropout masks differ between ranks),
    # as in any run not seeded per rank: a resume must restore each rank's own.
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", 0)))
    trainer = Trainer()
    if scenario == "cut":
        trainer.add_plugin(TermMidEpoch())
    trainer.add_plugin(Recorder(out))
    ddp = {"strategy": "ddp", "devices": devices} if devices > 1 else {}
    ckpt = out / ("whole-ckpt" if scenario == "whole" else "ckpt")
    trainer.train(model, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), train, val,
                  device="cpu", epochs=3, compile=False, checkpoint_dir=str(ckpt),
                  metrics=[get_metric("accuracy")], **ddp)


def main(out: Path, scenario: str, devices: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if scenario in ("whole", "cut", "rerun"):
        resume(out, scenario, devices)
        return
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    batch = 16 // devices
    # Sample 3 goes to one process per epoch (Lightning's DistributedSampler shuffles): that
    # process's batch fails, and both must skip that step together.
    train_set = FailsAt(3, x[:64], y[:64]) if scenario == "skip" else TensorDataset(x[:64], y[:64])
    train = DataLoader(train_set, batch_size=batch, shuffle=False)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=batch, shuffle=False)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer()
    if scenario == "early_stop":
        # min_delta larger than any change: the first epoch sets the best, the next stops.
        trainer.add_plugin(EarlyStoppingPlugin({"patience": 1, "min_delta": 1e6, "monitor": "validation_loss",
                                                "mode": "min", "restore_best_weights": False, "verbose": False}))
    trainer.add_plugin(Recorder(out))
    ddp = {"strategy": "ddp", "devices": devices} if devices > 1 else {}
    # "metrics" keeps the weights fixed (lr 0): the same model evaluated on the whole
    # validation set by one process or on two halves by two must give the same values.
    # (Trained, 1 and 2 processes differ in float rounding of the gradient average, which can
    # flip a borderline sample after a few epochs.) The others train with momentum, so that a
    # step skipped by calling the optimizer with zero gradients would still move the weights.
    lr = 0.0 if scenario == "metrics" else 0.1
    trainer.train(
        model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), nn.CrossEntropyLoss(), train, val,
        device="cpu", epochs=EPOCHS, compile=False, metrics=[get_metric("accuracy"), get_metric("f1_score", average="macro")], **ddp,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
