"""Host reads per training step: how often a training step makes the host wait for the device.

Run: ``python benchmarks/bench_host_reads.py [--steps 200] [--val-steps 20]``

On a GPU, reading a device value on the host (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, ``.cpu()``...) waits for every kernel queued before it, so the host can no
longer run ahead of the device and Python's per-step cost adds to the device's time instead
of hiding under it. This script counts those reads on the CPU, where they cost nothing but
happen all the same, by wrapping the ``torch.Tensor`` methods and ``torch`` functions that
hand a tensor's value to Python (``TENSOR_READS``, ``TORCH_READS``); a read made inside
another counted read counts once. Not counted: reads by ``torch.optim``'s ``_get_value``
(an optimizer's step counter stays on the host on a GPU too) and ``.to("cpu")`` (on the CPU
it cannot tell a read from Lightning moving a batch to the CPU "device"). The count is
deterministic: it does not depend on the machine or its load. It is a proxy: reads inside
torch's C++ (``x[mask]``, ``torch.nonzero`` called from C++) are not seen;
``benchmarks/bench_gpu.py`` counts every synchronisation on a GPU.

Every variant trains one epoch of ``--steps`` steps (MLP 784-256-10, Adam, batch 64,
random MNIST-shaped batches from a Python list) and validates on ``--val-steps`` batches.
Reads are attributed to where they happen:

* **steps**: inside Lightning's training-epoch loop ``advance`` (fetching a batch, its
  hooks, the training step, backward, optimizer step), i.e. per training batch; for the
  hand-written loop, everything;
* **validation**: inside the validation loop;
* **other**: the rest of ``fit``: start, the end of the training loop (after its last
  batch's hooks), epoch end, end.

The per-step figure is ``steps / --steps``; validation and other reads are reported beside
it. Rows:

* ``hand``: ``zero_grad / forward / loss / backward / step``; no validation;
* ``lightning``: a plain ``LightningModule`` (``self.log(..., on_step=False, on_epoch=True)``
  of the losses) under a minimal ``lightning.Trainer``;
* ``usual``: the usual Lightning pattern: ``TQDMProgressBar``, a ``TensorBoardLogger``,
  ``self.log(on_step=True, prog_bar=True)`` of the loss and of torchmetrics accuracy and F1;
* ``bz_bare``: bz's ``Trainer``, no plugins, no metrics;
* ``bz_default``: ``bz-train``'s default: ``console_out`` (in its terminal mode: bars) and
  ``tensorboard`` with the shipped options, ``accuracy`` and ``f1_score``.

The console refreshes by time (every 0.5 s with bars); so that its count does not depend on
the machine, its clock is replaced by a simulated one that advances ``SIMULATED_STEP_S``
(4 ms, a small CNN's step on a GPU) per training batch handed out: 200 steps are 0.8 s, and
the console refreshes once in them, at step 125 (a read of its own, not shared with
TensorBoard's). ``tests/test_host_reads.py`` gates on ``count_reads``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_steps import (  # noqa: E402
    MINIMAL,
    _plain_module,
    default_metrics,
    default_plugins,
    make_batches,
    make_model,
    make_optimizer,
    quiet,
)
from torch import nn  # noqa: E402

#: ``torch.Tensor`` methods that hand a tensor's value to the host.
TENSOR_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__complex__",
                "__array__", "nonzero", "unique", "equal", "allclose")
#: ``torch`` functions that do the same.
TORCH_READS = ("equal", "allclose", "is_nonzero", "nonzero", "unique")
#: Simulated seconds per training batch for the console's clock: a small CNN's step on a GPU,
#: chosen so that the console's refresh does not fall on a TensorBoard step (where the two
#: would share one read).
SIMULATED_STEP_S = 0.004
VARIANTS = ("hand", "lightning", "usual", "bz_bare", "bz_default")
LABELS = {
    "hand": "hand-written loop",
    "lightning": "minimal lightning.Trainer, self.log on epoch",
    "usual": "usual pattern (bar+logger+self.log+torchmetrics per step)",
    "bz_bare": "bz Trainer, no plugins, no metrics",
    "bz_default": "bz default (console+tensorboard+acc+f1)",
}


class Phases:
    """Tracks where a ``fit`` is: ``"steps"`` inside Lightning's training-epoch loop
    ``advance`` (one training batch), ``"validation"`` inside the validation loop, ``"other"``
    elsewhere; set ``phase`` by hand around code without Lightning (a hand-written loop)."""

    def __init__(self) -> None:
        self.phase = "other"
        self._saved: list[tuple[Any, str, Any]] = []

    def _track(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def in_phase(*args: Any, **kwargs: Any) -> Any:
            before, self.phase = self.phase, name
            try:
                return original(*args, **kwargs)
            finally:
                self.phase = before

        return in_phase

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def __enter__(self) -> Phases:
        from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
        from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

        for owner, method, phase in ((_TrainingEpochLoop, "advance", "steps"), (_EvaluationLoop, "run", "validation")):
            self._patch(owner, method, self._track(phase, getattr(owner, method)))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved = []


class ReadCounter(Phases):
    """Counts host reads by phase while active (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._depth = 0
        # Callers whose tensors stay on the host on a GPU too: the optimizers' step counters
        # (torch keeps ``state["step"]`` on the CPU unless ``capturable`` or ``fused``).
        from torch.optim import optimizer

        self._host_only = {optimizer._get_value.__code__}

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        host_only = self._host_only

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0 and sys._getframe(1).f_code not in host_only:
                self.counts[self.phase] += 1
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        self._patch(owner, name, counted)

    def __enter__(self) -> ReadCounter:
        super().__enter__()
        for name in TENSOR_READS:
            self._wrap(torch.Tensor, name)
        for name in TORCH_READS:
            self._wrap(torch, name)
        return self


class SimulatedClock:
    """``time.monotonic`` stand-in that advances a fixed time per training batch handed out."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TickingBatches:
    """A list of batches whose iteration advances ``clock`` by ``SIMULATED_STEP_S`` per batch."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], clock: SimulatedClock | None) -> None:
        self.batches, self.clock = batches, clock

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batches:
            if self.clock is not None:
                self.clock.now += SIMULATED_STEP_S
            yield batch


# ------------------------------------------------------------------------------ variants
def run_hand(train: TickingBatches, val: TickingBatches, log_dir: str) -> None:
    model, loss_fn = make_model(), nn.CrossEntropyLoss()
    optimizer = make_optimizer(model.parameters())
    for x, y in train:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


def run_lightning(train: TickingBatches, val: TickingBatches, log_dir: str, *, usual: bool = False) -> None:
    import lightning.pytorch as pl

    options: dict[str, Any] = dict(MINIMAL)
    if usual:
        from lightning.pytorch.callbacks import TQDMProgressBar
        from lightning.pytorch.loggers import TensorBoardLogger

        options.update(logger=TensorBoardLogger(log_dir, name="usual"), enable_progress_bar=True,
                       callbacks=[TQDMProgressBar()])
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
        pl.Trainer(**options).fit(_plain_module(usual, epoch_log=True), train, val)


def run_bz(train: TickingBatches, val: TickingBatches, log_dir: str, *, plugins: bool, extra: tuple[Any, ...] = ()
           ) -> None:
    from bz_lightning.trainer import Trainer

    trainer = Trainer()
    with open(os.devnull, "w") as null:
        if plugins:
            # The console's mode on a terminal: bars, refreshed every 0.5 s (plain lines in
            # a log refresh every 10 s, which would read less).
            for plugin in default_plugins(len(train), log_dir, null, interactive=True):
                trainer.add_plugin(plugin)
        for plugin in extra:
            trainer.add_plugin(plugin)
        trainer.train(make_model(), make_optimizer, nn.CrossEntropyLoss(), train, val, device="cpu", compile=False,
                      metrics=default_metrics() if plugins else [])


RUNS: dict[str, Callable[[TickingBatches, list[Any], str], None]] = {
    "hand": run_hand,
    "lightning": run_lightning,
    "usual": functools.partial(run_lightning, usual=True),
    "bz_bare": functools.partial(run_bz, plugins=False),
    "bz_default": functools.partial(run_bz, plugins=True),
}


@contextlib.contextmanager
def simulated_console_clock() -> Iterator[SimulatedClock]:
    """Replace the console's clock (``bz_lightning.progress.monotonic``) for the block."""
    clock = SimulatedClock()
    try:
        import bz_lightning.progress as progress
    except ImportError:  # a bz without the time-based console: nothing to replace
        yield clock
        return
    original = progress.monotonic
    progress.monotonic = clock  # type: ignore[assignment]
    try:
        yield clock
    finally:
        progress.monotonic = original  # type: ignore[assignment]


def count_reads(name: str, steps: int = 200, val_steps: int = 20, extra_plugins: tuple[Any, ...] = ()
                ) -> dict[str, float]:
    """Host reads of one epoch of variant ``name``: ``steps``, ``validation`` and ``other``
    counts, and ``per_step`` (``steps`` reads over the number of steps).

    ``extra_plugins`` are added to a bz variant's plugins (the tests use it to check that a
    read per step is counted)."""
    quiet()
    torch.set_num_threads(1)
    batches = make_batches(64, steps)
    val = make_batches(64, val_steps)
    run = RUNS[name]
    if extra_plugins:
        run = functools.partial(run, extra=extra_plugins)
    with tempfile.TemporaryDirectory() as log_dir, simulated_console_clock() as clock:
        run(TickingBatches(batches[:2], None), TickingBatches(val[:1], None), log_dir)  # first-use imports, outside the count
        with ReadCounter() as counter:
            if name == "hand":
                counter.phase = "steps"  # no Lightning loop: every read is a step's
            run(TickingBatches(batches, clock), TickingBatches(val, None), log_dir)
    counts = {phase: float(counter.counts[phase]) for phase in ("steps", "validation", "other")}
    counts["per_step"] = counts["steps"] / steps
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (one epoch)")
    parser.add_argument("--val-steps", type=int, default=20, help="validation batches")
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = parser.parse_args(argv)
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    print(f"torch {torch.__version__}; one epoch of {args.steps} steps + {args.val_steps} validation batches; "
          f"console clock simulated at {SIMULATED_STEP_S * 1000:g} ms per step")
    print(f"| {'setup':<58} | {'reads/step':>10} | {'in steps':>8} | {'validation':>10} | {'other':>5} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 10}|{'-' * 12}|{'-' * 7}|")
    for name in names:
        c = count_reads(name, args.steps, args.val_steps)
        print(f"| {LABELS[name]:<58} | {c['per_step']:10.3f} | {c['steps']:8.0f} | {c['validation']:10.0f} | "
              f"{c['other']:5.0f} |")


if __name__ == "__main__":
    main()
