"""CNN on MNIST-shaped data on a GPU: bz (bare and default) against a hand-written loop with
``torch.autocast(bfloat16)`` and ``torch.compile``; steps/s, ratios and syncs per step.

Run: ``python benchmarks/bench_gpu.py [--rounds 5] [--batch 256] [--steps 300]``
(``make bench-gpu``). Without a CUDA device it says so and exits 0 (``--device cpu`` runs
the same code on the CPU as a smoke test of the script; its figures mean nothing).

The model is ``bz_lightning.models.CNN([1, 28, 28], 10)`` (what ``experiment=mnist``
trains), Adam(lr 1e-3), cross-entropy, ``torch.set_float32_matmul_precision("high")``; the
data is a list of pre-built random MNIST-shaped batches already on the device, so no loader
or copy is timed. Rows:

* ``hand``: ``torch.compile(model)``, ``zero_grad / autocast(bfloat16) forward + loss /
  backward / step``;
* ``lightning``: a plain ``LightningModule`` around the compiled model, minimal
  ``lightning.Trainer`` (no logger, bar, checkpointing, summary, sanity check) with
  ``precision="bf16-mixed"``;
* ``bz_bare``: bz's ``Trainer`` with ``compile=True``, ``precision="bf16-mixed"``, no plugins
  or metrics;
* ``bz_default``: the same with ``bz-train``'s default plugins and metrics (console lines to a
  null stream, TensorBoard, accuracy, F1).

Every variant compiles its model anew each run; the first ``--skip`` steps (compilation)
are not timed. The step time is the median over blocks of 10 steps, each block ended by
``torch.cuda.synchronize()``, so it is the device's pace, not the host's queueing.

Syncs per step: one more, untimed run of each variant under
``torch.cuda.set_sync_debug_mode("warn")``, counting the warnings torch emits for every
synchronising CUDA call made during the training steps after ``--skip`` (inside
Lightning's per-batch ``advance``; the whole loop for ``hand``), divided by the number of
those steps. Unlike ``bench_host_reads.py`` (a CPU proxy), this sees every synchronisation,
including those inside torch's C++ (boolean indexing, ``nonzero``, pageable copies).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _harness import fmt_ratio, interleave, paired  # noqa: E402
from bench_host_reads import Phases  # noqa: E402
from bench_steps import MINIMAL, default_metrics, default_plugins, quiet  # noqa: E402
from torch import nn  # noqa: E402

from bz_lightning.models import CNN  # noqa: E402

LABELS = {
    "hand": "hand-written loop (autocast bf16, torch.compile)",
    "lightning": "minimal lightning.Trainer (bf16-mixed, compiled model)",
    "bz_bare": "bz Trainer (bf16-mixed, compile=True), no plugins",
    "bz_default": "bz default (console+tensorboard+acc+f1)",
}
SYNC_MESSAGE = "synchroniz"  # torch: "called a synchronizing CUDA operation"


class DeviceTimedBatches:
    """Batches on the device; stamps every ``BLOCK`` batches after a device synchronisation.

    With ``timed=False`` it only counts: ``counting`` is ``True`` once ``skip`` batches were
    handed out (what the sync counter looks at)."""

    BLOCK = 10

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], skip: int, device: torch.device,
                 timed: bool = True) -> None:
        self.batches, self.skip, self.device, self.timed = batches, skip, device, timed
        self.stamps: list[float] = []
        self.counting = False

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.stamps, self.counting = [], False
        for i, batch in enumerate(self.batches):
            if i >= self.skip:
                self.counting = True
                if self.timed and (i - self.skip) % self.BLOCK == 0:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.stamps.append(time.perf_counter())
            yield batch

    def seconds_per_step(self) -> float:
        return statistics.median(b - a for a, b in zip(self.stamps, self.stamps[1:])) / self.BLOCK


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return CNN([1, 28, 28], 10)


def run_hand(data: DeviceTimedBatches, phases: Phases | None = None) -> None:
    model = make_model().to(data.device)
    compiled = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    if phases is not None:
        phases.phase = "steps"  # no Lightning loop: the whole loop is steps
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(data.device.type, dtype=torch.bfloat16):
            loss = loss_fn(compiled(x), y)
        loss.backward()
        optimizer.step()
    if phases is not None:
        phases.phase = "other"


def run_lightning(data: DeviceTimedBatches, phases: Phases | None = None) -> None:
    import lightning.pytorch as pl

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.compile(make_model())
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss_fn(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    pl.Trainer(**{**MINIMAL, "accelerator": data.device.type, "precision": "bf16-mixed"}).fit(Plain(), data)


def run_bz(data: DeviceTimedBatches, phases: Phases | None = None, *, plugins: bool, log_dir: str) -> None:
    from bz_lightning.trainer import Trainer

    trainer = Trainer()
    with open(os.devnull, "w") as null:
        if plugins:
            for plugin in default_plugins(len(data), log_dir, null, interactive=False):
                trainer.add_plugin(plugin)
        trainer.train(make_model(), lambda p: torch.optim.Adam(p, lr=1e-3), nn.CrossEntropyLoss(), data,
                      device=data.device.type, compile=True, precision="bf16-mixed",
                      metrics=default_metrics() if plugins else [])


def count_syncs(run: Callable[[DeviceTimedBatches, Phases], None], data: DeviceTimedBatches) -> float:
    """Synchronising CUDA calls per training step after ``skip`` (see the module docstring)."""
    found = 0

    with Phases() as phases:
        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            nonlocal found
            if SYNC_MESSAGE in str(message) and data.counting and phases.phase == "steps":
                found += 1

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(data, phases)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return found / (len(data) - data.skip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (plus one warm-up round)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300, help="steps per run")
    parser.add_argument("--skip", type=int, default=50, help="untimed steps at the start of each run (compilation)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here, nothing measured (the figures need a GPU; "
              "`--device cpu` runs the script as a smoke test)")
        return 0
    device = torch.device(args.device)
    quiet()
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch, 1, 28, 28, generator=gen).to(device),
                torch.randint(0, 10, (args.batch,), generator=gen).to(device)) for _ in range(args.steps)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test)"
    print(f"{name}, torch {torch.__version__}; CNN on MNIST-shaped batches of {args.batch}, {args.steps} steps per "
          f"run ({args.skip} untimed), {args.rounds} rounds + 1 warm-up")
    with tempfile.TemporaryDirectory() as log_dir:
        runs: dict[str, Callable[..., None]] = {
            "hand": run_hand,
            "lightning": run_lightning,
            "bz_bare": lambda d, p=None: run_bz(d, p, plugins=False, log_dir=log_dir),
            "bz_default": lambda d, p=None: run_bz(d, p, plugins=True, log_dir=log_dir),
        }

        def timed(run: Callable[..., None]) -> Callable[[], float]:
            def once() -> float:
                data = DeviceTimedBatches(batches, args.skip, device)
                run(data)
                return data.seconds_per_step()
            return once

        times = interleave({n: timed(r) for n, r in runs.items()}, args.rounds)
        syncs = {n: count_syncs(r, DeviceTimedBatches(batches, args.skip, device, timed=False))
                 for n, r in runs.items()} if device.type == "cuda" else {}
    ratios = paired(times, "hand")
    print("| setup | steps/s | throughput vs hand (min..max) | syncs/step |\n|---|---:|---|---:|")
    for n in runs:
        throughput = 1 / ratios[n].median  # the ratios are of step times
        sync = f"{syncs[n]:.3f}" if n in syncs else "n/a"
        print(f"| {LABELS[n]} | {1 / statistics.median(times[n]):.0f} | {throughput:.2f} "
              f"(step time {fmt_ratio(ratios[n]).strip()}) | {sync} |")
    layer = paired(times, "lightning")["bz_bare"]
    print(f"bz's own layer (bz_bare vs lightning): {fmt_ratio(layer)} step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
