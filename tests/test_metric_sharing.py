"""Metrics that count the same per-class statistics over the same batches count them once
(``bz_lightning.metrics._shared.MetricSet``): the values stay scikit-learn's, epoch after
epoch, and only the group's leader updates after the first batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from bz_lightning.metrics import Accuracy, F1Score, Metric, Precision, Recall, TopKAccuracy
from bz_lightning.metrics._shared import MetricSet
from bz_lightning.metrics._shim import TorchmetricsShim


class ArgmaxHits(Metric):
    """A user's own metric: never grouped, always updated."""

    def __init__(self) -> None:
        super().__init__("hits")
        self.reset()

    def reset(self) -> None:
        self.hits = 0

    def update(self, preds, targets) -> None:
        self.hits += int((preds.argmax(1) == targets).sum())

    def compute(self) -> float:
        return float(self.hits)


def batches(seed: int, n: int, classes: int, binary: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    if binary:
        return [(torch.randn(32, generator=gen) * 3, torch.randint(0, 2, (32,), generator=gen)) for _ in range(n)]
    # Class 4 never appears, in preds or targets: macro averages must leave it out.
    out = []
    for _ in range(n):
        logits = torch.randn(32, classes, generator=gen)
        logits[:, 4] = -1e9
        targets = torch.randint(0, classes - 1, (32,), generator=gen)
        out.append((logits, torch.where(targets >= 4, targets + 1, targets)))
    return out


def expected_multiclass(data) -> dict[str, float]:
    y = np.concatenate([t.numpy() for _, t in data])
    p = np.concatenate([s.argmax(1).numpy() for s, _ in data])
    scores = np.concatenate([s.numpy() for s, _ in data])
    return {
        "accuracy": skm.accuracy_score(y, p),
        "f1_score": skm.f1_score(y, p, average="macro", zero_division=0),
        "precision": skm.precision_score(y, p, average="macro", zero_division=0),
        "recall_w": skm.recall_score(y, p, average="weighted", zero_division=0),
        "precision_micro": skm.precision_score(y, p, average="micro", zero_division=0),
        "top3": skm.top_k_accuracy_score(y, scores, k=3, labels=range(scores.shape[1])),
        "hits": float((p == y).sum()),
    }


def multiclass_metrics() -> list[Metric]:
    return [Accuracy(), F1Score(average="macro"), Precision("macro"), Recall(average="weighted", name="recall_w"),
            Precision("micro", name="precision_micro"), TopKAccuracy(3, name="top3"), ArgmaxHits()]


def test_shared_counts_give_scikit_learns_values_every_epoch() -> None:
    metrics = MetricSet(multiclass_metrics())
    for epoch in range(2):
        metrics.reset()
        data = batches(epoch, 5, classes=6)
        for preds, targets in data:
            metrics.update(preds, targets)
        assert metrics.compute() == pytest.approx(expected_multiclass(data), abs=1e-6)


def test_values_read_mid_epoch_do_not_change_what_is_counted_after() -> None:
    """The console computes the running values every few batches; the epoch's final values,
    after more updates, are still scikit-learn's over every batch, for every epoch."""
    metrics = MetricSet(multiclass_metrics())
    for epoch in range(2):
        metrics.reset()
        data = batches(10 + epoch, 2 * TorchmetricsShim.BATCHES_PER_UPDATE + 3, classes=6)
        for seen, (preds, targets) in enumerate(data, start=1):
            metrics.update(preds, targets)
            if seen in (1, 2, 7, TorchmetricsShim.BATCHES_PER_UPDATE + 1):
                assert metrics.compute() == pytest.approx(expected_multiclass(data[:seen]), abs=1e-6), seen
        assert metrics.compute() == pytest.approx(expected_multiclass(data), abs=1e-6)


def test_saved_mid_epoch_and_restored_in_a_new_set_counts_on_exactly() -> None:
    """What a mid-epoch checkpoint carries: the states, in each metric's own shape (a micro
    accuracy that followed a per-class leader sums its counts), regrouped after the restore."""
    data = batches(20, 9, classes=6)
    before = MetricSet(multiclass_metrics())
    for preds, targets in data[:5]:
        before.update(preds, targets)
    before.compute()  # followers now hold their leader's per-class counts
    saved = before.state_dict()
    after = MetricSet(multiclass_metrics())
    after.load_state_dict(saved)
    for preds, targets in data[5:]:
        after.update(preds, targets)
    assert after.compute() == pytest.approx(expected_multiclass(data), abs=1e-6)
    assert [type(m).__name__ for m in after._updating] == ["F1Score", "TopKAccuracy", "ArgmaxHits"]


def test_only_one_metric_per_group_updates_after_the_first_batch() -> None:
    accuracy, f1, precision, recall, micro, top3, hits = members = multiclass_metrics()
    metrics = MetricSet(members)
    for preds, targets in batches(0, 3, classes=6):
        metrics.update(preds, targets)
    # Accuracy and micro precision sum the counts over classes; the per-class F1 leads.
    assert metrics._updating == [f1, top3, hits]
    assert {i: m for i, m in metrics._leader_of.items()} == {0: f1, 2: f1, 3: f1, 4: f1}


def test_binary_scores_averaged_over_both_classes_share_and_match_scikit_learn() -> None:
    members = [Precision("macro"), Recall(average="macro"), F1Score(average="weighted"), F1Score(average="binary", name="f1_pos"),
               Accuracy()]
    metrics = MetricSet(members)
    data = batches(1, 4, classes=2, binary=True)
    for preds, targets in data:
        metrics.update(preds, targets)
    y = np.concatenate([t.numpy() for _, t in data])
    p = np.concatenate([(s > 0).long().numpy() for s, _ in data])
    assert metrics.compute() == pytest.approx({
        "precision": skm.precision_score(y, p, average="macro"),
        "recall": skm.recall_score(y, p, average="macro"),
        "f1_score": skm.f1_score(y, p, average="weighted"),
        "f1_pos": skm.f1_score(y, p),
        "accuracy": skm.accuracy_score(y, p),
    }, abs=1e-6)
    # The 2-class averages share one count; the binary ones are other torchmetrics classes.
    assert metrics._updating == [members[0], members[3], members[4]]


def test_metrics_that_count_differently_are_not_grouped() -> None:
    """Top-k counts differ with k and from the top-1 counts; they update on their own."""
    members = [F1Score(average="macro"), TopKAccuracy(2), TopKAccuracy(3, name="top3"), ArgmaxHits()]
    metrics = MetricSet(members)
    data = batches(2, 3, classes=6)
    for preds, targets in data:
        metrics.update(preds, targets)
    assert metrics._updating == members
    expected = expected_multiclass(data)
    assert metrics.compute()["top3"] == pytest.approx(expected["top3"])


# ----------------------------------------------------------------- batches counted together
def test_batches_reach_torchmetrics_together_with_the_same_result() -> None:
    """Later batches are handed to torchmetrics several at a time: over more batches than
    one such update holds, every value equals torchmetrics updated batch by batch."""
    import torchmetrics.classification as tmc
    import torchmetrics.regression as tmr

    from bz_lightning.metrics import MeanAbsoluteError, MeanSquaredError
    from bz_lightning.metrics._shim import TorchmetricsShim

    n = TorchmetricsShim.BATCHES_PER_UPDATE * 2 + 5
    gen = torch.Generator().manual_seed(3)
    multiclass = [(torch.randn(16, 5, generator=gen), torch.randint(0, 5, (16,), generator=gen)) for _ in range(n)]
    cases = [
        (F1Score(average="macro"), tmc.MulticlassF1Score(5, average="macro"), multiclass),
        (TopKAccuracy(2), tmc.MulticlassAccuracy(5, top_k=2, average="micro"), multiclass),
    ]
    # Binary batches alternate between probabilities and logits: torchmetrics decides which
    # per update, so batches counted together must keep the per-batch decision.
    binary = [((torch.rand(16, generator=gen) if i % 2 else torch.randn(16, generator=gen) * 2),
               torch.randint(0, 2, (16,), generator=gen)) for i in range(n)]
    cases += [(Accuracy(), tmc.BinaryAccuracy(), binary),
              (F1Score(average="binary"), tmc.BinaryF1Score(), binary)]
    regression = [(torch.randn(16, 1, generator=gen), torch.randn(16, generator=gen)) for _ in range(n)]
    cases += [(MeanSquaredError(), tmr.MeanSquaredError(), [(p[:, 0], t) for p, t in regression]),
              (MeanAbsoluteError(), tmr.MeanAbsoluteError(), [(p[:, 0], t) for p, t in regression])]
    for ours, reference, data in cases:
        for preds, targets in data:
            reference.update(preds, targets)
        feed = regression if isinstance(ours, (MeanSquaredError, MeanAbsoluteError)) else data
        for preds, targets in feed:  # regression: (N, 1) preds against (N,) targets
            ours.update(preds, targets)
        assert ours.compute() == pytest.approx(float(reference.compute()), abs=1e-6), ours
        assert ours._tm._update_count < n // 4, "batches were not counted together"
