"""Non-finite training losses found without a host read per step (issue 18).

``on_nonfinite_loss="raise"`` reads the losses only where values are read anyway; these tests
pin where that is (the window), that the error still names the exact batch and the last
finite loss, that the weights are put back to those of the last read that found the losses
finite, and that no checkpoint is written after a non-finite loss, whoever writes it.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from bz_lightning import BzModule, LifecycleCallback, NonFiniteLossError, Trainer
from bz_lightning._nonfinite import NonFiniteGuard
from bz_lightning.plugins import ConsoleOutPlugin, Plugin
from conftest import make_dataset, make_model


class NanAt(nn.Module):
    """Cross-entropy that returns NaN (or ``bad``) on its ``k``-th call (counting from 0),
    and records every finite loss it returned."""

    def __init__(self, k: int | set[int], bad: float = float("nan")) -> None:
        super().__init__()
        self.k, self.bad, self.calls, self.finite = k if isinstance(k, set) else {k}, bad, 0, []

    def forward(self, preds, targets):
        loss = nn.functional.cross_entropy(preds, targets)
        call, self.calls = self.calls, self.calls + 1
        if call in self.k:
            return loss * self.bad
        self.finite.append(float(loss))
        return loss


class SeenBatches(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def end_training_batch(self, context):
        self.seen.append(context.extra["batch_index"])


def loader(batches: int) -> DataLoader:
    return DataLoader(make_dataset(8 * batches), batch_size=8)


def sgd_reference(steps: int) -> nn.Module:
    """The model after ``steps`` SGD steps of a hand-written loop over ``loader``'s batches."""
    reference = make_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for i, (x, y) in enumerate(loader(40)):
        if i == steps:
            break
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        optimizer.step()
    return reference


def assert_same_weights(model: nn.Module, reference: nn.Module) -> None:
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_raise_names_the_batch_and_puts_back_the_weights_of_the_last_read(caplog) -> None:
    model, seen, loss_fn = make_model(), SeenBatches(), NanAt(k=5)
    trainer = Trainer()
    trainer.add_plugin(seen)
    with caplog.at_level(logging.WARNING, logger="bz_lightning"), pytest.raises(NonFiniteLossError) as info:
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, loader(40), device="cpu",
                      compile=False)
    err = info.value
    assert (err.epoch, err.batch) == (0, 5) and math.isnan(err.value)
    assert err.last_finite_loss == pytest.approx(loss_fn.finite[4], rel=1e-6)  # the loss of batch 4
    assert "loss is nan at epoch 1, batch 6 (last finite loss: " in str(err)
    # Nothing read the losses before the loop's end (the module's last-batch hook, which
    # Lightning calls after the callbacks'): training went on until then ...
    assert seen.seen == list(range(40))
    # ... and the weights are put back to the last read's: training start, here.
    assert_same_weights(model, make_model())
    assert any("put back to those of optimizer step 0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_adam_weights_stay_finite(bad: float) -> None:
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(NonFiniteLossError, match=f"loss is {bad} at epoch 1, batch 4"):
        Trainer().train(model, optimizer, NanAt(k=3, bad=bad), loader(12), device="cpu", compile=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_raise_comes_at_the_next_logged_step_with_a_logger(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    seen = SeenBatches()
    trainer = Trainer()
    trainer.add_plugin(seen)
    model = make_model()
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 6"):
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), NanAt(k=5), loader(40), device="cpu",
                      compile=False, logger=CSVLogger(tmp_path), log_every_n_steps=4)
    # Steps 4 and 8 log; the check before step 8's log (batch 7) found batch 5.
    assert seen.seen == list(range(7))


def test_a_plugin_reading_values_raises_the_run_error_not_a_plugin_failure(caplog) -> None:
    import io

    out = io.StringIO()
    console = ConsoleOutPlugin(40, update_interval=1, refresh_seconds=0, stream=out)
    seen = SeenBatches()
    trainer = Trainer()
    trainer.add_plugin(console)
    trainer.add_plugin(seen)
    model = make_model()
    with caplog.at_level(logging.ERROR, logger="bz_lightning"), pytest.raises(NonFiniteLossError, match="batch 6"):
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), NanAt(k=5), loader(40), device="cpu",
                      compile=False)
    assert not [r for r in caplog.records if "failed in stage" in r.getMessage()]
    assert seen.seen == list(range(5))  # the console's refresh at batch 5 found it
    # Its refresh at batch 4 found the losses finite: the weights after batches 0..4 are back.
    assert_same_weights(model, sgd_reference(5))
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines if "  train " in line] == [f"train {b}/40" for b in range(1, 6)]
    assert "nan" not in out.getvalue().replace("NonFiniteLossError: loss is nan", "")
    assert "training failed" in out.getvalue()


def test_no_checkpoint_is_written_after_a_non_finite_loss(tmp_path) -> None:
    model = make_model()
    module = BzModule(model, NanAt(k=3), lambda p: torch.optim.Adam(p, lr=0.01))
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoints, LifecycleCallback()])
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 4"):
        trainer.fit(module, loader(12))
    # Written after batches 0, 1 and 2; the write after batch 3 found the flag first.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch=0-step={s}.ckpt" for s in (1, 2, 3)]
    for path in tmp_path.iterdir():
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_second_fit_of_the_same_module_is_checked_again() -> None:
    module = BzModule(make_model(), NanAt(k={2, 10}), lambda p: torch.optim.SGD(p, lr=0.1))

    def fit() -> None:
        pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False).fit(module, loader(4))

    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 3"):
        fit()  # calls 0-3
    with pytest.raises(NonFiniteLossError, match="epoch 2, batch 3"):
        fit()  # calls 4-7 (epoch 0), 8-10 (epoch 1)


def test_guard_reports_the_first_bad_loss_and_the_last_finite_one_across_reads() -> None:
    guard = NonFiniteGuard(check_every=3)
    weights = torch.zeros(2)
    guard.watch([weights], step=lambda: 7)
    for batch, loss in enumerate([0.5, 0.25, 0.125]):
        guard.observe(torch.tensor(loss), 0, batch)
    assert guard.due
    weights += 1.0
    guard.check()  # all finite: the weights as they are now are kept
    assert not guard.due and guard.unread() is None and guard.copied_at == 7
    weights += float("nan")
    guard.observe(torch.tensor(float("-inf")), 1, 0)
    guard.observe(torch.tensor(float("nan")), 1, 1)
    with pytest.raises(NonFiniteLossError) as info:
        guard.check()
    assert (info.value.epoch, info.value.batch, info.value.value) == (1, 0, float("-inf"))
    assert info.value.last_finite_loss == 0.125  # from the previous read
    assert torch.equal(weights, torch.ones(2))  # put back
    guard.observe(torch.tensor(float("nan")), 1, 2)
    guard.check()  # reported once: reading again raises nothing more
