"""Per-step cost of bz on Lightning against a hand-written loop and plain Lightning.

Run: ``python benchmarks/bench_steps.py [--rounds 8] [--batches 64,512] [--profile VARIANT]``

The model is an MLP 784-256-10 (Adam, cross-entropy); the data is a Python list of
pre-built random ``(x, y)`` batches shaped like MNIST (``x`` float (B, 1, 28, 28), ``y``
int64 in 0..9), so no DataLoader cost is measured; torch uses 2 threads. Every variant
trains one epoch over that list; the time per step is taken from the ``--skip``-th batch
to the end of the epoch (so Trainer construction, the first steps and the epoch end are
not timed) by the list wrapper itself, which every variant iterates the same way.

Variants (rows):

* ``hand``: ``zero_grad / forward / loss / backward / step`` in a Python ``for`` loop;
* ``lightning``: a plain ``LightningModule`` under a minimal ``lightning.Trainer`` (no
  logger, progress bar, checkpointing or model summary, no sanity check);
* ``usual``: the usual Lightning pattern: ``TQDMProgressBar``, a ``TensorBoardLogger``,
  ``self.log(on_step=True)`` of the loss and of torchmetrics Accuracy and F1 every step;
* ``bz_bare``: bz's ``Trainer`` with no plugins and no metrics (it maps to ``lightning``);
* ``bz_module``: ``BzModule`` (no metrics) under the same minimal ``lightning.Trainer``;
* ``bz_default``: what ``bz-train`` runs by default: the ``console_out`` and
  ``tensorboard`` plugins and the ``accuracy`` and ``f1_score`` metrics, with the options of
  the shipped configs; the console writes plain lines (its mode when stdout is not a
  terminal) to a null stream;
* ``bz_default_bars``: the same with the console's interactive tqdm bars (its mode on a
  terminal), drawn into a null stream.

Printed per batch size: steps/s of each row, its slowdown against ``hand`` (median of the
per-round paired ratios, min..max) and its Python calls per step (deterministic, see
``_harness.calls_per_step``); then bz's own layer: ``bz_bare`` against ``lightning``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _harness import calls_per_step, fmt_ratio, interleave, paired, top_calls_per_step  # noqa: E402
from torch import nn  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "bz_lightning" / "conf"
LABELS = {
    "hand": "hand-written loop",
    "lightning": "minimal lightning.Trainer",
    "usual": "usual pattern (bar+logger+self.log+torchmetrics)",
    "bz_bare": "bz Trainer, no plugins, no metrics",
    "bz_module": "BzModule under minimal lightning.Trainer",
    "bz_default": "bz default (console lines+tensorboard+acc+f1)",
    "bz_default_bars": "bz default, console bars (tty mode)",
}


# --------------------------------------------------------------------------- data, model
class TimedBatches:
    """A list of batches whose iteration stamps the time each batch is handed out.

    Lightning fetches one batch ahead and does not always exhaust the iterator, so the time
    of a step is the gap between two hand-outs. ``seconds_per_step`` is the median over
    blocks of ``BLOCK`` steps (after the first ``skip``): another process taking the CPU
    for a moment spoils one block, not the figure. Work done every ``BLOCK`` steps or more
    often (the console's lines, every 10) is inside every block; rarer work (Lightning's
    logger writing every 50 steps in the usual pattern) mostly is not, which flatters only
    the usual pattern.
    """

    BLOCK = 10

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], skip: int) -> None:
        self.batches = batches
        self.skip = skip
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        stamps = self.stamps = []
        for batch in self.batches:
            stamps.append(time.perf_counter())
            yield batch

    def seconds_per_step(self) -> float:
        stamps, block = self.stamps[self.skip:], self.BLOCK
        blocks = [(stamps[i + block] - stamps[i]) / block for i in range(0, len(stamps) - block, block)]
        return statistics.median(blocks)


def make_batches(batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.rand(batch_size, 1, 28, 28, generator=gen), torch.randint(0, 10, (batch_size,), generator=gen))
        for _ in range(steps)
    ]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


# ------------------------------------------------------------------------------ variants
def run_hand(data: TimedBatches) -> None:
    model, loss_fn = make_model(), nn.CrossEntropyLoss()
    optimizer = make_optimizer(model.parameters())
    model.train()
    for x, y in data:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


def _plain_module(usual: bool, epoch_log: bool = False) -> Any:
    """A plain ``LightningModule``; ``usual``: logging the loss, accuracy and F1 every step
    (and the validation loss and accuracy); ``epoch_log``: the losses once per epoch."""
    import lightning.pytorch as pl

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = make_model()
            self.loss_fn = nn.CrossEntropyLoss()
            if usual:
                import torchmetrics

                self.train_acc = torchmetrics.classification.MulticlassAccuracy(10, average="micro")
                self.train_f1 = torchmetrics.classification.MulticlassF1Score(10, average="macro")
                self.val_acc = torchmetrics.classification.MulticlassAccuracy(10, average="micro")

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            preds = self.model(x)
            loss = self.loss_fn(preds, y)
            if usual:
                self.train_acc(preds, y)
                self.train_f1(preds, y)
                self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
                self.log("train_acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
                self.log("train_f1", self.train_f1, on_step=True, on_epoch=True)
            elif epoch_log:
                self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            preds = self.model(x)
            if usual or epoch_log:
                self.log("val_loss", self.loss_fn(preds, y), prog_bar=usual)
            if usual:
                self.val_acc(preds, y)
                self.log("val_acc", self.val_acc, prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.parameters())

    return Plain()


MINIMAL = {
    "max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
    "enable_checkpointing": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
}


def run_lightning(data: TimedBatches) -> None:
    import lightning.pytorch as pl

    pl.Trainer(**MINIMAL).fit(_plain_module(usual=False), data)


def run_usual(data: TimedBatches, log_dir: str) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    options = {**MINIMAL, "logger": TensorBoardLogger(log_dir, name="usual"), "enable_progress_bar": True,
               "callbacks": [TQDMProgressBar()]}
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
        pl.Trainer(**options).fit(_plain_module(usual=True), data)


def run_bz_module(data: TimedBatches) -> None:
    import lightning.pytorch as pl

    from bz_lightning.module import BzModule

    model = make_model()
    module = BzModule(model, nn.CrossEntropyLoss(), make_optimizer)
    pl.Trainer(**MINIMAL).fit(module, data)


def default_metrics() -> list[Any]:
    """The metrics ``bz-train`` builds by default, from the shipped configs."""
    from omegaconf import OmegaConf

    from bz_lightning.cli._build import build_metrics

    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"))["defaults"]
    names = next(d["metrics"] for d in defaults if isinstance(d, dict) and "metrics" in d)
    options = {}
    for name in names:
        options.update(OmegaConf.to_container(OmegaConf.load(CONF / "metrics" / f"{name}.yaml")))
    return build_metrics(options)


def default_plugins(train_batches: int, log_dir: str, stream: Any, interactive: bool) -> list[Any]:
    """The plugins ``bz-train`` builds by default (shipped options), output redirected."""
    from omegaconf import OmegaConf

    from bz_lightning.cli._build import build_plugins

    # The plugin options interpolate the trainer's (log_every_n_steps) and the paths.
    cfg = OmegaConf.create({"trainer": OmegaConf.load(CONF / "trainer" / "default.yaml"),
                            "paths": {"output_dir": log_dir}})
    for name in ("console_out", "tensorboard"):
        cfg = OmegaConf.merge(cfg, OmegaConf.load(CONF / "plugins" / f"{name}.yaml"))
    options: dict[str, Any] = {name: OmegaConf.to_container(cfg[name], resolve=True)
                               for name in ("console_out", "tensorboard")}
    options["console_out"].update(stream=stream, interactive=interactive)
    return build_plugins(options, train_batches, 0)


def run_bz(data: TimedBatches, *, plugins: bool, log_dir: str = "", interactive: bool = False) -> None:
    from bz_lightning.trainer import Trainer

    trainer = Trainer()
    model = make_model()
    with open(os.devnull, "w") as null:
        if plugins:
            for plugin in default_plugins(len(data), log_dir, null, interactive):
                trainer.add_plugin(plugin)
        trainer.train(model, make_optimizer, nn.CrossEntropyLoss(), data, device="cpu", compile=False,
                      metrics=default_metrics() if plugins else [])


def variants(log_dir: str) -> dict[str, Callable[[TimedBatches], None]]:
    return {
        "hand": run_hand,
        "lightning": run_lightning,
        "usual": lambda d: run_usual(d, log_dir),
        "bz_bare": lambda d: run_bz(d, plugins=False),
        "bz_module": run_bz_module,
        "bz_default": lambda d: run_bz(d, plugins=True, log_dir=log_dir),
        "bz_default_bars": lambda d: run_bz(d, plugins=True, log_dir=log_dir, interactive=True),
    }


def quiet() -> None:
    """Lightning's info lines and hints would flood the table."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels when imported)

    for name in [*logging.root.manager.loggerDict, "bz_lightning"]:
        if name.startswith(("lightning", "bz_lightning")):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def step_runner(run: Callable[[TimedBatches], None], batches: list[Any]) -> Callable[[int], None]:
    """``run`` over the first ``n`` batches: what the call counter drives."""
    return lambda n: run(TimedBatches(batches[:n], skip=0))


def count_calls(name: str, batch_size: int = 64, n1: int = 20, n2: int = 60) -> float:
    """Python calls per step of variant ``name`` (deterministic; used by the tests)."""
    quiet()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as log_dir:
        return calls_per_step(step_runner(variants(log_dir)[name], make_batches(batch_size, n2)), n1, n2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (plus one warm-up round)")
    parser.add_argument("--batches", default="64,512", help="batch sizes, comma-separated")
    parser.add_argument("--steps", default="300,80", help="steps per run for each batch size")
    parser.add_argument("--skip", type=int, default=20, help="untimed steps at the start of each run")
    parser.add_argument("--only", default="", help="comma-separated variants to run (default: all)")
    parser.add_argument("--profile", default="", help="print the per-step call counts of VARIANT's functions")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    quiet()
    import lightning

    with tempfile.TemporaryDirectory() as log_dir:
        table = variants(log_dir)
        if args.profile:
            for per_step, func in top_calls_per_step(step_runner(table[args.profile], make_batches(64, 60))):
                print(f"{per_step:8.1f}  {func}")
            return
        names = [n for n in table if not args.only or n in args.only.split(",") or n == "hand"]
        print(f"torch {torch.__version__}, lightning {lightning.__version__}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs; MLP 784-256-10, Adam; pre-batched list of random MNIST-shaped tensors")
        for batch_size, steps in zip(map(int, args.batches.split(",")), map(int, args.steps.split(","))):
            batches = make_batches(batch_size, steps)

            def timed(run: Callable[[TimedBatches], None], batches: list = batches) -> Callable[[], float]:
                def once() -> float:
                    data = TimedBatches(batches, args.skip)
                    run(data)
                    return data.seconds_per_step()

                return once

            times = interleave({n: timed(table[n]) for n in names}, args.rounds)
            ratios = paired(times, "hand")
            counted = batches if len(batches) >= 60 else make_batches(batch_size, 60)  # calls_per_step runs 60 steps
            calls = {n: calls_per_step(step_runner(table[n], counted)) for n in names}
            print(f"\nbatch {batch_size}: {steps} steps per run ({args.skip} untimed), "
                  f"{args.rounds} rounds + 1 warm-up, shuffled order")
            print(f"| {'setup':<50} | {'steps/s':>7} | {'vs hand (min..max)':<20} | {'calls/step':>10} |")
            print(f"|{'-' * 52}|{'-' * 9}|{'-' * 22}|{'-' * 12}|")
            for n in names:
                sps = 1 / sorted(times[n])[len(times[n]) // 2]
                print(f"| {LABELS[n]:<50} | {sps:7.0f} | {fmt_ratio(ratios[n]):<20} | {calls[n]:10.0f} |")
            if "bz_bare" in names and "lightning" in names:
                layer = paired(times, "lightning")["bz_bare"]
                print(f"bz's own layer (bz_bare vs lightning): {fmt_ratio(layer)} time, "
                      f"{calls['bz_bare'] - calls['lightning']:+.0f} calls/step")
            if "bz_default" in names and "usual" in names:
                speedup = paired(times, "bz_default")["usual"]
                print(f"bz default vs the usual pattern: the usual pattern takes {fmt_ratio(speedup)} as long")


if __name__ == "__main__":
    main()
