"""Failures are visible, bounded and explained: bad arguments, failed batches, NaN losses."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bz_lightning import BzConfigError, BzError, NonFiniteLossError, Trainer
from conftest import make_dataset, make_model


class FlakyDataset(Dataset):
    """``make_dataset`` whose samples at ``bad`` indices raise, as a corrupt file would."""

    def __init__(self, n: int, bad: set[int]) -> None:
        self.base, self.bad = make_dataset(n), bad

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if i in self.bad:
            raise OSError(f"corrupt sample {i}")
        return self.base[i]


def train(loader, epochs=1, model=None, **kwargs):
    model = model if model is not None else make_model()
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("compile", False)
    optimizer = kwargs.pop("optimizer", None) or torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = kwargs.pop("loss_fn", None) or nn.CrossEntropyLoss()
    return model, Trainer().train(model, optimizer, loss_fn, loader, epochs=epochs, **kwargs)


# ------------------------------------------------------------------------- bad arguments
def _args(**overrides):
    model = make_model()
    args = dict(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        training_loader=DataLoader(make_dataset(16), batch_size=8),
        device="cpu",
        compile=False,
    )
    args.update(overrides)
    return args


def _metric_class():
    from bz_lightning.metrics import Accuracy

    return Accuracy


BAD_ARGUMENTS = [
    ("model", dict(model="resnet"), "model must be a torch.nn.Module, got str 'resnet'"),
    ("optimizer of another model", dict(optimizer=torch.optim.SGD(make_model(1).parameters(), lr=0.1)),
     "optimizer SGD holds none of the model's parameters"),
    ("optimizer type", dict(optimizer=0.1), "optimizer must be a torch.optim.Optimizer or a factory"),
    ("loss_fn", dict(loss_fn="cross_entropy"), "loss_fn must be callable"),
    ("loader type", dict(training_loader=torch.zeros(3)), "training_loader must be an iterable"),
    ("empty loader", dict(training_loader=DataLoader(TensorDataset(torch.zeros(0, 6), torch.zeros(0)))),
     "training_loader is empty"),
    ("validation loader", dict(validation_loader=5), "validation_loader must be an iterable"),
    ("epochs", dict(epochs=0), "epochs must be an integer >= 1, got 0"),
    ("checkpoint_interval", dict(checkpoint_interval=-1), "checkpoint_interval must be an integer >= 0"),
    ("device name", dict(device="tpu"), "device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got 'tpu'"),
    ("metric object", dict(metrics=[object()]), "metrics[0] must be a bz_lightning.metrics.Metric"),
    ("metric class", "metric-class", "metrics[0] must be a bz_lightning.metrics.Metric (an instance, not the class)"),
    ("on_batch_error", dict(on_batch_error="ignore"), "on_batch_error must be 'skip' or 'raise', got 'ignore'"),
    ("on_nonfinite_loss", dict(on_nonfinite_loss="warn"), "on_nonfinite_loss must be 'raise' or 'skip'"),
    ("max_skipped_batches", dict(max_skipped_batches=-1), "max_skipped_batches must be an int >= 0"),
    ("plugin_errors", dict(plugin_errors="ignore"), "plugin_errors must be 'log' or 'raise'"),
]
if not torch.cuda.is_available():
    BAD_ARGUMENTS.append(("cuda missing", dict(device="cuda"), "CUDA is not available on this machine"))


@pytest.mark.parametrize("overrides, message", [b[1:] for b in BAD_ARGUMENTS], ids=[b[0] for b in BAD_ARGUMENTS])
def test_bad_argument_fails_before_training_and_names_it(overrides, message) -> None:
    if overrides == "metric-class":
        overrides = dict(metrics=[_metric_class()])
    args = _args(**overrides)
    model = args["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else {}
    with pytest.raises(BzConfigError) as info:
        Trainer().train(**args)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    for key, value in before.items():  # nothing trained
        assert torch.equal(model.state_dict()[key], value)


def test_batches_that_are_not_pairs_are_refused_with_a_hint() -> None:
    loader = DataLoader(torch.randn(16, 6), batch_size=8)
    with pytest.raises(BzConfigError, match=r"a batch must be an \(inputs, targets\) pair, got a Tensor.*override unpack_batch"):
        train(loader)


# ------------------------------------------------------------------------- failed batches
def hand_written_skipping(loader_data, batch_size, bad_batches):
    """The same training, by hand, leaving out the batches that fail."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(loader_data, batch_size=batch_size)
    for i, (x, y) in enumerate(loader):
        if i in bad_batches:
            continue
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_loader_raising_on_two_batches_skips_exactly_those(caplog: pytest.LogCaptureFixture) -> None:
    # samples 20 and 50 sit in batches 2 and 6 of 8
    loader = DataLoader(FlakyDataset(64, {20, 50}), batch_size=8)
    with caplog.at_level(logging.WARNING, logger="bz_lightning"):
        model, result = train(loader)
    assert [(s.epoch, s.batch) for s in result.skipped_batches] == [(0, 2), (0, 6)]
    assert result.skipped_batches[0].reason == "OSError: corrupt sample 20"
    assert result.context.training_batch_count == 6
    assert result.context.extra["skipped_batches"] == 2
    assert result.lightning_trainer.callback_metrics["skipped_batches"] == 2
    logged = [r for r in caplog.records if "skipped batch" in r.getMessage()]
    assert len(logged) == 2 and "corrupt sample 50" in logged[1].getMessage()  # traceback included

    clean = [make_dataset(64)[i] for i in range(64)]
    expected = hand_written_skipping(clean, 8, {2, 6})
    for (name, got), want in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.allclose(got, want, atol=1e-6), name


def test_forward_errors_are_skipped_too() -> None:
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("shape trouble")
            return self.net(x)

    _, result = train(DataLoader(make_dataset(32), batch_size=8), model=Picky())
    assert [(s.batch, s.reason) for s in result.skipped_batches] == [(1, "RuntimeError: shape trouble")]


def test_budget_exceeded_names_the_count_and_first_cause() -> None:
    loader = DataLoader(FlakyDataset(64, {3, 20, 50}), batch_size=8)
    with pytest.raises(BzError, match=r"3 batches failed, more than max_skipped_batches=2 allows; "
                                      r"the first \(epoch 1, batch 1\) failed with OSError: corrupt sample 3"):
        train(loader, max_skipped_batches=2)


def test_budget_as_a_fraction_of_an_epoch() -> None:
    loader = DataLoader(FlakyDataset(64, {3, 20}), batch_size=8)  # 8 batches, 25% -> 2 allowed
    _, result = train(loader, max_skipped_batches=0.25)
    assert len(result.skipped_batches) == 2
    with pytest.raises(BzError, match="more than max_skipped_batches=0.2"):
        train(loader, max_skipped_batches=0.2)  # 1 allowed


def test_raise_policy_lets_the_original_error_through() -> None:
    loader = DataLoader(FlakyDataset(64, {20}), batch_size=8)
    with pytest.raises(OSError, match="corrupt sample 20"):
        train(loader, on_batch_error="raise")


# ------------------------------------------------------------------------- non-finite losses
class NanAtCall(nn.Module):
    """Cross-entropy that returns NaN on its ``k``-th call (counting from 1)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, preds, targets):
        self.calls += 1
        loss = nn.functional.cross_entropy(preds, targets)
        return loss * float("nan") if self.calls == self.k else loss


def test_nan_loss_stops_with_epoch_batch_and_last_finite_loss(tmp_path) -> None:
    loader = DataLoader(make_dataset(32), batch_size=8)  # 4 batches per epoch
    model = make_model()
    with pytest.raises(NonFiniteLossError) as info:
        train(loader, epochs=3, model=model, loss_fn=NanAtCall(k=6), checkpoint_interval=1,
              checkpoint_dir=str(tmp_path))
    err = info.value
    assert (err.epoch, err.batch) == (1, 1)
    assert err.last_finite_loss is not None and math.isfinite(err.last_finite_loss)
    assert "epoch 2, batch 2" in str(err)  # the message counts from 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # only the finished, finite epoch was checkpointed (epoch-1 and last), and it is finite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1.ckpt", "last.ckpt"]
    state = torch.load(tmp_path / "epoch-1.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_nan_loss_can_be_skipped_under_the_budget() -> None:
    loader = DataLoader(make_dataset(32), batch_size=8)
    model, result = train(loader, epochs=2, loss_fn=NanAtCall(k=6), on_nonfinite_loss="skip")
    assert [(s.epoch, s.batch) for s in result.skipped_batches] == [(1, 1)]
    assert result.skipped_batches[0].reason.startswith("NonFiniteLossError: loss is nan at epoch 2, batch 2")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------- fallbacks
def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    inductor_config = pytest.importorskip("torch._inductor.config")
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    torch._dynamo.reset()
    loader = DataLoader(make_dataset(32), batch_size=8)
    with pytest.warns(UserWarning, match="torch.compile failed, training in eager mode instead") as record:
        _, result = train(loader, epochs=2, compile=True)
    assert len([w for w in record if "torch.compile failed" in str(w.message)]) == 1
    assert result.epochs_completed == 2
    assert result.warnings and "torch.compile fell back to eager" in result.warnings[0]
    assert result.context.extra["warnings"] == result.warnings
    torch._dynamo.reset()
