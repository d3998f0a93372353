"""bz_lightning.metrics: built-ins against scikit-learn / direct torch, errors, registry."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import torch
from sklearn import metrics as skm

from bz_lightning.errors import BzConfigError
from bz_lightning.metrics import (
    METRIC_REGISTRY,
    Accuracy,
    F1Score,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    Precision,
    Recall,
    TopKAccuracy,
    get_metric,
    list_available_metrics,
    register_metric,
)

SPEC_NAMES = ["accuracy", "precision", "recall", "f1_score", "mse", "mae", "top5_accuracy"]
BATCH_SIZES = (7, 16, 16, 4, 11)  # uneven on purpose: the last batch of a loader is short


def batches(kind: str, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few batches of ``(preds, targets)`` for one input kind."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in BATCH_SIZES:
        if kind == "binary_logits":
            preds = torch.randn(n, generator=gen) * 3
            preds[0] = 5.0  # every batch has values outside [0, 1]: read as logits
            targets = torch.randint(0, 2, (n,), generator=gen)
        elif kind == "binary_probs":
            preds = torch.rand(n, generator=gen)
            targets = torch.randint(0, 2, (n,), generator=gen)
        elif kind == "multiclass":
            preds = torch.randn(n, 4, generator=gen)
            targets = torch.randint(0, 4, (n,), generator=gen)
        elif kind == "multiclass_absent_class":  # class 4 is neither predicted nor a target
            preds = torch.randn(n, 5, generator=gen)
            preds[:, 4] = -100.0
            targets = torch.randint(0, 4, (n,), generator=gen)
        else:
            raise AssertionError(kind)
        out.append((preds, targets))
    return out


def labels(kind: str, preds: torch.Tensor) -> torch.Tensor:
    if kind == "binary_logits":
        return (preds > 0).long()
    if kind == "binary_probs":
        return (preds > 0.5).long()
    return preds.argmax(1)


def run(metric: Metric, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    metric.reset()
    for preds, targets in data:
        metric.update(preds, targets)
    value = metric.compute()
    assert isinstance(value, float)
    return value


def sklearn_value(fn, kind: str, data, **kwargs) -> float:
    y_true = torch.cat([t for _, t in data]).numpy()
    y_pred = torch.cat([labels(kind, p) for p, _ in data]).numpy()
    return float(fn(y_true, y_pred, **kwargs))


KINDS = ["binary_logits", "binary_probs", "multiclass", "multiclass_absent_class"]
SCORES = [(Precision, skm.precision_score), (Recall, skm.recall_score), (F1Score, skm.f1_score)]


@pytest.mark.parametrize("kind", KINDS)
def test_accuracy_matches_sklearn(kind: str) -> None:
    data = batches(kind)
    assert run(Accuracy(), data) == pytest.approx(sklearn_value(skm.accuracy_score, kind, data))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("average", ["micro", "macro", "weighted"])
@pytest.mark.parametrize(("cls", "sk_fn"), SCORES, ids=lambda v: getattr(v, "__name__", ""))
def test_averaged_scores_match_sklearn(cls, sk_fn, average: str, kind: str) -> None:
    data = batches(kind, seed=hash((cls.__name__, average)) % 1000)
    expected = sklearn_value(sk_fn, kind, data, average=average, zero_division=0)
    assert run(cls(average=average), data) == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["binary_logits", "binary_probs"])
@pytest.mark.parametrize(("cls", "sk_fn"), SCORES, ids=lambda v: getattr(v, "__name__", ""))
def test_average_binary_is_the_positive_class(cls, sk_fn, kind: str) -> None:
    data = batches(kind, seed=3)
    expected = sklearn_value(sk_fn, kind, data, average="binary", zero_division=0)
    assert run(cls(average="binary"), data) == pytest.approx(expected)


@pytest.mark.parametrize(("cls", "sk_fn"), SCORES, ids=lambda v: getattr(v, "__name__", ""))
def test_default_average_is_micro_on_multiclass_data(cls, sk_fn) -> None:
    data = batches("multiclass", seed=5)
    assert cls().average is None
    assert run(cls(), data) == pytest.approx(sklearn_value(sk_fn, "multiclass", data, average="micro"))


@pytest.mark.parametrize("kind", ["binary_logits", "binary_probs"])
@pytest.mark.parametrize(("cls", "sk_fn"), SCORES, ids=lambda v: getattr(v, "__name__", ""))
def test_default_average_on_binary_data_is_the_positive_class(cls, sk_fn, kind: str) -> None:
    """scikit-learn's default (average="binary"), not micro-averaging over both classes
    (which equals the accuracy)."""
    data = batches(kind, seed=11)
    expected = sklearn_value(sk_fn, kind, data, zero_division=0)  # sklearn's own default average
    accuracy = sklearn_value(skm.accuracy_score, kind, data)
    assert expected != pytest.approx(accuracy)  # the data tells the two apart
    assert run(cls(), data) == pytest.approx(expected)


def test_built_in_metrics_report_under_their_registry_names() -> None:
    for name in SPEC_NAMES:
        assert get_metric(name).name == name
    assert (Accuracy().name, Precision().name, Recall().name, F1Score().name) == (
        "accuracy", "precision", "recall", "f1_score")
    assert (MeanSquaredError().name, MeanAbsoluteError().name) == ("mse", "mae")
    assert TopKAccuracy(k=3).name == "top3_accuracy"
    assert Accuracy(name="acc").name == "acc"


def test_signatures_follow_the_spec() -> None:
    assert Recall("r").name == "r" and F1Score("f").name == "f"  # name first
    assert Precision("macro").average == "macro"  # average first, as documented
    with pytest.raises(TypeError):
        Recall("r", "macro")  # type: ignore[misc]  # average is keyword-only
    assert get_metric(metric_name="precision", average="weighted").average == "weighted"


def test_two_metrics_under_one_name_are_refused() -> None:
    from bz_lightning.metrics._shared import MetricSet

    with pytest.raises(ValueError, match="two metrics report under the name 'precision'.*give one of them another name"):
        MetricSet([Precision(), Precision("macro")])
    MetricSet([Precision(), Precision("macro", name="precision_macro")])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_matches_direct_topk(k: int) -> None:
    data = batches("multiclass_absent_class", seed=k)
    hits = sum(int((p.topk(k, dim=1).indices == t[:, None]).any(1).sum()) for p, t in data)
    total = sum(len(t) for _, t in data)
    assert run(TopKAccuracy(k=k), data) == pytest.approx(hits / total)


@pytest.mark.parametrize("shape", [(5,), (5, 3)])
@pytest.mark.parametrize(("cls", "error"), [(MeanSquaredError, lambda d: d**2), (MeanAbsoluteError, torch.abs)])
def test_regression_matches_direct_computation(cls, error, shape) -> None:
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(n, *shape[1:], generator=gen), torch.randn(n, *shape[1:], generator=gen)) for n in BATCH_SIZES]
    errors = torch.cat([error(p - t).flatten() for p, t in data])
    assert run(cls(), data) == pytest.approx(float(errors.mean()), rel=1e-6)


@pytest.mark.parametrize("cls", [MeanSquaredError, MeanAbsoluteError])
@pytest.mark.parametrize("flip", [False, True])
def test_regression_refuses_a_one_output_head_against_flat_targets(cls, flip) -> None:
    """MSELoss broadcasts (N, 1) against (N,) to (N, N); the metric must not hide that by
    comparing them element by element: it names both shapes and the fix."""
    preds, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 3.0, 2.0])
    if flip:
        preds, targets = targets, preds
    metric = cls()
    shapes = r"\(3,\) and targets of shape \(3, 1\)" if flip else r"\(3, 1\) and targets of shape \(3,\)"
    with pytest.raises(BzConfigError, match=rf"{cls.__name__}: preds of shape {shapes} differ: .*broadcasts them "
                                            r"to \(3, 3\).*targets of shape \(N, 1\).*squeeze the model's output"):
        metric.update(preds, targets)
    with pytest.raises(BzConfigError, match=r"preds of shape \(3, 2\) and targets of shape \(3,\) differ; they must"):
        cls().update(torch.zeros(3, 2), targets.flatten())


def test_binary_column_preds_and_float_targets_as_for_bce() -> None:
    """(N, 1) logits with (N, 1) float 0/1 targets: what BCEWithLogitsLoss trains on."""
    data = batches("binary_logits", seed=7)
    column = [(p[:, None], t[:, None].float()) for p, t in data]
    assert run(F1Score(average="binary"), column) == pytest.approx(
        sklearn_value(skm.f1_score, "binary_logits", data, average="binary")
    )
    assert run(Accuracy(), column) == pytest.approx(sklearn_value(skm.accuracy_score, "binary_logits", data))


def test_task_and_num_classes_override_inference() -> None:
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 4, (n,), generator=gen), torch.randint(0, 4, (n,), generator=gen)) for n in BATCH_SIZES]
    y_true = torch.cat([t for _, t in data]).numpy()
    y_pred = torch.cat([p for p, _ in data]).numpy()
    metric = Precision("macro", task="multiclass", num_classes=4)
    assert run(metric, data) == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    with pytest.raises(ValueError, match=r"num_classes=5 but preds of shape \(3, 4\)"):
        Accuracy(num_classes=5).update(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="task='binary' needs preds of shape"):
        Accuracy(task="binary").update(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_reset_starts_a_new_epoch_and_copies_are_independent() -> None:
    metric = Accuracy()
    metric.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 0]))
    twin = copy.deepcopy(metric)
    metric.reset()
    assert metric.compute() == 0.0  # nothing since the reset
    metric.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1]))
    assert metric.compute() == 0.0
    assert twin.compute() == 1.0


def test_state_is_created_lazily_on_the_batch_device() -> None:
    metric = Precision("macro")
    assert metric._tm is None and metric.compute() == 0.0
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert all(t.device.type == "cpu" for t in metric._tm.metric_state.values())


@pytest.mark.gpu
def test_state_stays_on_the_gpu() -> None:
    data = [(p.cuda(), t.cuda()) for p, t in batches("multiclass")]
    metric = F1Score(average="macro")
    value = run(metric, data)
    assert all(t.device.type == "cuda" for t in metric._tm.metric_state.values())
    cpu = [(p.cpu(), t.cpu()) for p, t in data]
    assert value == pytest.approx(run(F1Score(average="macro"), cpu))


@pytest.mark.parametrize("metric", [Accuracy(), Precision("macro"), F1Score(average="weighted"), TopKAccuracy(2)], ids=repr)
def test_update_after_the_first_batch_never_syncs(metric: Metric, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``.item()``, ``.tolist()``, ``bool(tensor)`` or ``.cpu()`` per batch for multiclass scores."""
    data = batches("multiclass")
    metric.update(*data[0])

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in update()")

    for attr in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    for preds, targets in data[1:]:
        metric.update(preds, targets)
    monkeypatch.undo()
    assert 0.0 <= metric.compute() <= 1.0


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [Precision, Recall, F1Score])
def test_invalid_average_names_metric_value_and_choices(cls) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}: average='samples' .*'micro', 'macro', 'weighted'"):
        cls(average="samples")


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_invalid_k(k) -> None:
    with pytest.raises(ValueError, match=rf"TopKAccuracy: k={k!r} is invalid; use an int >= 1"):
        TopKAccuracy(k=k)


def test_k_larger_than_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match=r"TopKAccuracy: k=5 is larger than the number of classes \(3\)"):
        TopKAccuracy(k=5).update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


def test_top_k_needs_class_scores() -> None:
    with pytest.raises(ValueError, match=r"TopKAccuracy: needs multiclass scores of shape \(N, C\)"):
        TopKAccuracy(k=1).update(torch.randn(4), torch.tensor([0, 1, 1, 0]))


def test_bad_task_arguments() -> None:
    with pytest.raises(ValueError, match=r"Accuracy: task='multilabel' is not supported; use one of \['binary', 'multiclass'\]"):
        Accuracy(task="multilabel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Recall: num_classes=1 is invalid; use an int >= 2"):
        Recall(num_classes=1)


@pytest.mark.parametrize(
    ("preds", "targets", "match"),
    [
        (torch.randn(8, 3), torch.randint(0, 3, (7,)), r"preds of shape \(8, 3\) and targets of shape \(7,\)"),
        (torch.randn(8, 3), torch.randint(0, 3, (8, 3)), r"and targets of shape \(8, 3\) do not fit"),
        (torch.randn(8), torch.randint(0, 2, (6,)), r"preds of shape \(8,\) and targets of shape \(6,\)"),
        (torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4)), r"preds of shape \(2, 3, 4\) are not supported"),
    ],
    ids=["n-mismatch", "one-hot-targets", "binary-n-mismatch", "3d-preds"],
)
def test_mismatched_shapes(preds, targets, match: str) -> None:
    with pytest.raises(ValueError, match="Accuracy 'acc': .*" + match):
        Accuracy(name="acc").update(preds, targets)


def test_shape_change_after_the_first_batch() -> None:
    metric = F1Score(average="macro")
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"F1Score: preds of shape \(4, 5\) .* inferred from the first batch: multiclass scores of shape \(N, 3\)"):
        metric.update(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize(
    ("preds", "targets", "match"),
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 3, 0]), r"class indices in \[0, 3\) .*got values \[0, 1, 3\]"),
        (torch.randn(4, 3), torch.tensor([0, -1, 2, 0]), r"class indices in \[0, 3\) .*got values \[-1, 0, 2\]"),
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), r"integer class indices .*got torch.float32"),
        (torch.randn(4), torch.tensor([0, 1, 2, 0]), r"targets must be 0 or 1 .*got values \[0, 1, 2\]"),
        (torch.randn(4), torch.tensor([0.0, 0.5, 1.0, 0.0]), r"targets must be 0 or 1 .*got values \[0.0, 0.5, 1.0\]"),
    ],
    ids=["too-large", "negative", "float-multiclass", "binary-2", "binary-soft"],
)
def test_targets_that_do_not_fit_the_task(preds, targets, match: str) -> None:
    with pytest.raises(ValueError, match="Precision: .*" + match):
        Precision().update(preds, targets)


def test_bad_targets_in_a_later_batch_are_reported_at_compute() -> None:
    metric = Accuracy()  # micro counts: torchmetrics would count class 7 as a plain miss
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    metric.update(torch.randn(4, 3), torch.tensor([0, 7, 2, 0]))  # no host sync here
    with pytest.raises(ValueError, match=r"Accuracy: targets must be class indices in \[0, 3\).* from 0 to 7"):
        metric.compute()


def test_bad_targets_that_break_torchmetrics_are_explained_when_counted() -> None:
    """Later batches reach torchmetrics several at a time (at compute() at the latest); the
    error then names the values, not torchmetrics' internals."""
    metric = Precision("macro")
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    metric.update(torch.randn(4, 3), torch.tensor([0, 5, 2, 0]))  # waits: no host sync here
    with pytest.raises(ValueError, match=r"Precision: targets must be class indices in \[0, 3\).*got values \[0, 2, 5\]"):
        metric.compute()


def test_average_binary_on_multiclass_data() -> None:
    with pytest.raises(ValueError, match=r"Recall: average='binary' .*use one of \['micro', 'macro', 'weighted'\]"):
        Recall(average="binary").update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


def test_regression_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"MeanSquaredError: preds of shape \(4,\) and targets of shape \(5,\) differ"):
        MeanSquaredError().update(torch.randn(4), torch.randn(5))


# --------------------------------------------------------------------------- registry
@pytest.fixture
def registry() -> Iterator[dict]:
    saved = dict(METRIC_REGISTRY)
    yield METRIC_REGISTRY
    METRIC_REGISTRY.clear()
    METRIC_REGISTRY.update(saved)


def test_list_available_metrics_is_the_spec_list() -> None:
    assert list_available_metrics() == SPEC_NAMES


@pytest.mark.parametrize(
    ("name", "cls"),
    [("accuracy", Accuracy), ("precision", Precision), ("recall", Recall), ("f1_score", F1Score),
     ("mse", MeanSquaredError), ("mae", MeanAbsoluteError), ("top5_accuracy", TopKAccuracy)],
)
def test_get_metric_builds_each_builtin(name: str, cls) -> None:
    metric = get_metric(name)
    assert type(metric) is cls
    assert metric.name == name


def test_get_metric_passes_kwargs() -> None:
    precision = get_metric("precision", average="macro", name="p")
    assert (precision.average, precision.name) == ("macro", "p")
    assert get_metric("top5_accuracy").k == 5
    with pytest.raises(ValueError, match=r"metric 'accuracy' does not accept \{'averge': 'macro'\}"):
        get_metric("accuracy", averge="macro")


def test_unknown_metric_lists_names_and_closest_match() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'acuracy' \(did you mean 'accuracy'\?\); available metrics: accuracy, precision, recall, f1_score, mse, mae, top5_accuracy"):
        get_metric("acuracy")


def test_register_metric(registry) -> None:
    register_metric("val_acc", lambda **kw: Accuracy(name="val_acc", **kw))
    assert "val_acc" in list_available_metrics()
    assert get_metric("val_acc").name == "val_acc"
    with pytest.raises(ValueError, match="'val_acc' is already registered"):
        register_metric("val_acc", Accuracy)
    register_metric("val_acc", Recall, overwrite=True)
    assert isinstance(get_metric("val_acc"), Recall)
    with pytest.raises(ValueError, match="must be callable"):
        register_metric("x", 3)  # type: ignore[arg-type]
    register_metric("not_a_metric", dict)
    with pytest.raises(ValueError, match="returned dict, expected a bz_lightning.metrics.Metric"):
        get_metric("not_a_metric")


def _install_entry_point(root, dist: str, line: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[bz.metrics]\n{line}\n")


def test_entry_point_metrics_are_listed_without_loading_and_built_on_demand(
    tmp_path, monkeypatch: pytest.MonkeyPatch, registry
) -> None:
    (tmp_path / "bz_demo_metrics.py").write_text(textwrap.dedent("""
        from bz_lightning.metrics import Metric

        class CountBatches(Metric):
            def __init__(self, name=None):
                super().__init__(name)
                self.count = 0
            def reset(self):
                self.count = 0
            def update(self, preds, targets):
                self.count += 1
            def compute(self):
                return float(self.count)
    """))
    _install_entry_point(tmp_path, "bz_demo_metrics", "batch_count = bz_demo_metrics:CountBatches")
    _install_entry_point(tmp_path, "bz_broken_metrics", "broken = bz_no_such_module:Thing")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bz_demo_metrics", raising=False)

    assert list_available_metrics()[:7] == SPEC_NAMES
    assert set(list_available_metrics()[7:]) == {"batch_count", "broken"}
    assert "bz_demo_metrics" not in sys.modules  # listed, not imported

    metric = get_metric("batch_count", name="batches")
    assert type(metric).__module__ == "bz_demo_metrics"
    assert metric.name == "batches"
    with pytest.raises(ValueError, match=r"metric 'broken': entry point broken = bz_no_such_module:Thing .*failed to load: ModuleNotFoundError"):
        get_metric("broken")


def test_importing_the_package_and_listing_metrics_do_not_import_torch() -> None:
    code = (
        "import sys, bz_lightning.metrics as m; m.list_available_metrics(); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torchmetrics', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
