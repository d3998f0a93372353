"""A tiny training run for the kill/resume subprocess tests (tests/test_resume_kill.py).

    python _resume_script.py train CKPT_DIR OUT EPOCHS [--slow S] [--interval N] [--kill-at-end 1]
        Trains with Trainer.train (shuffle=True, dropout, Adam, checkpoint_dir=CKPT_DIR,
        resume="auto") and saves the final model and optimizer state to OUT, and the
        result's metrics to OUT.json. --kill-at-end: SIGKILL itself when the session ends,
        after the last checkpoint and before the run's result is recorded.
    python _resume_script.py writer CKPT_DIR
        Imports once, then for every "go" line on stdin forks a child that trains with
        frequent, large checkpoints until it is killed; prints "child PID" and, once the
        child is gone, "done STATUS".
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning import Trainer
from bz_lightning.plugins import Plugin


class Slow(Plugin):
    """Sleeps after every training batch, so a test can signal the process mid-epoch, and
    writes a marker file once the given batch of the given epoch has finished."""

    def __init__(self, seconds: float, marker: str) -> None:
        super().__init__()
        self.seconds, self.marker = seconds, marker

    def end_training_batch(self, context) -> None:
        time.sleep(self.seconds)
        if context.epoch == 1 and context.extra.get("batch_index") == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()

    def run_signature(self):
        return None  # it only slows the run down


class KillAtEnd(Plugin):
    """SIGKILL at the end of the session: the last checkpoint is written, the result is not."""

    def end_training_session(self, context) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def run_signature(self):
        return None


def train(ckpt_dir: str, out: str, epochs: int, slow: float, interval: int, kill_at_end: bool = False) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = Trainer()
    if slow:
        trainer.add_plugin(Slow(slow, os.path.join(os.path.dirname(out), "marker")))
    if kill_at_end:
        trainer.add_plugin(KillAtEnd())
    result = trainer.train(model, optimizer, nn.CrossEntropyLoss(), loader, device="cpu", epochs=epochs,
                           compile=False, checkpoint_interval=interval, checkpoint_dir=ckpt_dir)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out)
    with open(out + ".json", "w") as f:
        json.dump({"metrics": result.metrics, "epochs": result.epochs_completed, "reused": result.reused}, f)


def writer(ckpt_dir: str) -> None:
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        pid = os.fork()
        if pid == 0:  # the child: the real Trainer.train save path, until killed
            try:
                torch.manual_seed(0)
                data = DataLoader(TensorDataset(torch.randn(2, 1024), torch.randn(2, 1024)), batch_size=2)
                model = nn.Linear(1024, 1024)  # 4 MiB of weights, 12 MiB with Adam's state
                # Epochs of one tiny batch: the child spends most of its time writing last.ckpt.
                Trainer().train(model, torch.optim.Adam(model.parameters()), nn.MSELoss(), data, device="cpu",
                                epochs=100_000, compile=False, checkpoint_interval=10, checkpoint_dir=ckpt_dir)
            finally:
                os._exit(1)
        print(f"child {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"done {status}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    mode, *args = sys.argv[1:]
    if mode == "train":
        options = dict(zip(args[3::2], args[4::2]))
        train(args[0], args[1], int(args[2]), float(options.get("--slow", 0)), int(options.get("--interval", 1)),
              bool(int(options.get("--kill-at-end", 0))))
    else:
        writer(args[0])
