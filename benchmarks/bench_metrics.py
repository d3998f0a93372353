"""Per-update cost of the bz metric shims against torchmetrics and a hand-written running count.

Run: ``python benchmarks/bench_metrics.py [--rounds 15] [--updates 200] [--batch 64]``

For every metric three variants are timed in the same process, round-robin in a shuffled
order each round (the first round is a discarded warm-up):

* ``shim``: ``bz_lightning.metrics.<Metric>.update(preds, targets)``; the shim hands batches to
  torchmetrics up to 32 at a time, and the batches still waiting at the end of a block are
  handed over inside the timed block;
* ``tm``: torchmetrics doing the same job from the same inputs: the torchmetrics object the
  shim builds (same class and arguments), ``.update`` called directly; for binary data
  averaged over both classes, which no torchmetrics class does in one call, torchmetrics' own
  thresholding of binary inputs (``normalize_logits_if_needed`` + ``> 0.5``, what its binary
  metrics do) before the 2-class metric. The ratio shim/tm is the target (<= 1.10);
* ``tm fed labels`` (binary-averaged rows only): the same 2-class metric fed labels already
  thresholded, i.e. the shim's whole cost including a thresholding torchmetrics would do too;
* ``hand``: a hand-written running count on tensors (e.g. ``correct += (argmax == y).sum()``),
  the cheapest way to keep the state on the device.

A round times ``--updates`` consecutive updates of each variant; the ratios are computed per
round (paired) and reported as the median with the min..max over rounds. Inputs are CPU
tensors built once; torch runs on one thread to keep the shared machine's noise down.
"""

from __future__ import annotations

import argparse
import copy
import functools
import random
import statistics
import time
from collections.abc import Callable

import torch
import torchmetrics
from torchmetrics.utilities.compute import normalize_logits_if_needed

from bz_lightning.metrics import (
    Accuracy,
    F1Score,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    Precision,
    Recall,
    TopKAccuracy,
)

Update = Callable[[torch.Tensor, torch.Tensor], None]


class RunningCount:
    """Hand-written device-side state: a tensor accumulated with one update function."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.step = step
        self.state: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        value = self.step(preds, targets)
        self.state = value if self.state is None else self.state + value


def _confusion(num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda p, y: torch.bincount(y * num_classes + p.argmax(1), minlength=num_classes**2)


# How torchmetrics is called for a case: given the torchmetrics object and the shim (built
# at its first batch), the update to time and the inputs to time it on.
Route = Callable[[torchmetrics.Metric, Metric, torch.Tensor, torch.Tensor], tuple[Update, torch.Tensor, torch.Tensor]]


def direct(tm: torchmetrics.Metric, shim: Metric, preds: torch.Tensor, targets: torch.Tensor):
    return tm.update, preds, targets


def thresholded_by_torchmetrics(tm: torchmetrics.Metric, shim: Metric, preds: torch.Tensor, targets: torch.Tensor):
    def update(p: torch.Tensor, y: torch.Tensor) -> None:
        tm.update(normalize_logits_if_needed(p, "sigmoid") > 0.5, y)

    return update, preds, targets


def fed_labels(tm: torchmetrics.Metric, shim: Metric, preds: torch.Tensor, targets: torch.Tensor):
    return (tm.update, *shim._prepare(preds, targets))  # type: ignore[attr-defined]


def cases(batch: int, num_classes: int) -> list[tuple[str, Metric, RunningCount, torch.Tensor, torch.Tensor, Route]]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, num_classes, generator=gen)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    bin_logits = torch.randn(batch, generator=gen) * 3
    bin_labels = torch.randint(0, 2, (batch,), generator=gen)
    reg_preds = torch.randn(batch, generator=gen)
    reg_targets = torch.randn(batch, generator=gen)
    conf = _confusion(num_classes)
    hit = RunningCount(lambda p, y: (p.argmax(1) == y).sum())
    bin_conf = RunningCount(lambda p, y: torch.bincount(y * 2 + (p > 0).long(), minlength=4))
    return [
        ("Accuracy (multiclass)", Accuracy(), hit, logits, labels, direct),
        ("Accuracy (binary logits)", Accuracy(), RunningCount(lambda p, y: ((p > 0).long() == y).sum()),
         bin_logits, bin_labels, direct),
        ("Precision micro", Precision("micro"), RunningCount(conf), logits, labels, direct),
        ("Precision macro", Precision("macro"), RunningCount(conf), logits, labels, direct),
        ("Precision weighted", Precision("weighted"), RunningCount(conf), logits, labels, direct),
        ("Precision macro (binary)", Precision("macro"), bin_conf, bin_logits, bin_labels, thresholded_by_torchmetrics),
        ("  tm fed labels", Precision("macro"), bin_conf, bin_logits, bin_labels, fed_labels),
        ("Recall macro", Recall(average="macro"), RunningCount(conf), logits, labels, direct),
        ("F1Score macro", F1Score(average="macro"), RunningCount(conf), logits, labels, direct),
        ("TopKAccuracy k=5", TopKAccuracy(5),
         RunningCount(lambda p, y: (p.topk(5, 1).indices == y[:, None]).any(1).sum()), logits, labels, direct),
        ("MeanSquaredError", MeanSquaredError(), RunningCount(lambda p, y: ((p - y) ** 2).sum()), reg_preds, reg_targets,
         direct),
        ("MeanAbsoluteError", MeanAbsoluteError(), RunningCount(lambda p, y: (p - y).abs().sum()),
         reg_preds, reg_targets, direct),
    ]


def time_block(update: Update, reset: Callable[[], None], finish: Callable[[], None], preds: torch.Tensor,
               targets: torch.Tensor, n: int) -> float:
    reset()
    start = time.perf_counter_ns()
    for _ in range(n):
        update(preds, targets)
    finish()  # the shim: batches still waiting reach torchmetrics, so every update is paid for
    return (time.perf_counter_ns() - start) / n / 1e3  # microseconds per update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)

    print(f"torch {torch.__version__}, batch {args.batch}, {args.classes} classes, "
          f"{args.rounds} rounds x {args.updates} updates (1 warm-up round discarded), CPU, 1 thread")
    header = f"{'metric':<26} {'shim us':>8} {'tm us':>8} {'hand us':>8}   {'shim/tm (min..max)':<22} {'shim/hand (min..max)':<22}"
    print(header)
    print("-" * len(header))
    for label, metric, hand, preds, targets, route in cases(args.batch, args.classes):
        shim = copy.deepcopy(metric)
        shim.update(preds, targets)  # builds the torchmetrics object: not part of the per-update cost
        tm = copy.deepcopy(shim._tm)  # type: ignore[attr-defined]
        assert tm is not None
        tm_update, tm_preds, tm_targets = route(tm, shim, preds, targets)
        def nothing() -> None:
            return None

        variants: dict[str, tuple[Update, Callable[[], None], Callable[[], None]]] = {
            "shim": (shim.update, shim.reset, shim._flush),  # type: ignore[attr-defined]
            "tm": (tm_update, tm.reset, nothing),
            "hand": (hand.update, functools.partial(setattr, hand, "state", None), nothing),
        }
        inputs = {"shim": (preds, targets), "tm": (tm_preds, tm_targets), "hand": (preds, targets)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds + 1):
            order = list(variants)
            rng.shuffle(order)
            for name in order:
                update, reset, finish = variants[name]
                us = time_block(update, reset, finish, *inputs[name], args.updates)
                if round_:  # round 0 is the warm-up
                    times[name].append(us)
        vs_tm = [s / t for s, t in zip(times["shim"], times["tm"])]
        vs_hand = [s / h for s, h in zip(times["shim"], times["hand"])]

        def fmt(ratios: list[float]) -> str:
            return f"{statistics.median(ratios):5.2f} ({min(ratios):.2f}..{max(ratios):.2f})"

        print(f"{label:<26} {statistics.median(times['shim']):8.1f} {statistics.median(times['tm']):8.1f} "
              f"{statistics.median(times['hand']):8.1f}   {fmt(vs_tm):<22} {fmt(vs_hand):<22}")


if __name__ == "__main__":
    main()
