"""EarlyStoppingPlugin: exact stop epochs on scripted values, and a real run's stop and restore."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from bz_lightning import BzModule, LifecycleCallback, PluginContext, Trainer
from bz_lightning.errors import BzConfigError, BzPluginError
from bz_lightning.plugins import EarlyStoppingConfig, EarlyStoppingPlugin, Plugin


def scripted_context(epoch: int, value: float) -> PluginContext:
    """An epoch end where every monitorable key holds ``value``."""
    return PluginContext(
        epoch=epoch,
        training_loss_total=2 * value,
        training_batch_count=2,
        validation_loss_total=value,
        validation_batch_count=1,
        training_metrics={"accuracy": value},
        validation_metrics={"accuracy": value},
    )


def run_script(plugin: EarlyStoppingPlugin, values: list[float], first_epoch: int = 0) -> int | None:
    """Feed ``values`` as consecutive epochs; the epoch after which a stop was requested."""
    for epoch, value in enumerate(values, start=first_epoch):
        ctx = scripted_context(epoch, value)
        plugin.end_epoch(ctx)
        if ctx.should_stop_training:
            return epoch
    return None


CASES = {
    # name: (config, monitored values per epoch, epoch after which training stops)
    "patience-min": (dict(patience=2, min_delta=0.0), [1.0, 0.8, 0.9, 0.85, 0.7], 3),
    "patience-max": (dict(patience=2, min_delta=0.0, mode="max"), [0.5, 0.6, 0.6, 0.55, 0.9], 3),
    "patience-never": (dict(patience=2, min_delta=0.0), [1.0, 0.9, 0.8, 0.7, 0.6], None),
    "patience-min_delta": (dict(patience=2, min_delta=0.1), [1.0, 0.95, 0.92, 0.5], 2),
    "patience-min_delta-max": (dict(patience=2, min_delta=0.1, mode="max"), [0.5, 0.55, 0.7, 0.75, 0.78], 4),
    "patience-1": (dict(patience=1, min_delta=0.0), [1.0, 0.5, 0.6], 2),
    "baseline-never-beaten": (dict(patience=3, min_delta=0.0, baseline=0.5), [0.9, 0.8, 0.7, 0.4], 2),
    "baseline-beaten": (dict(patience=2, min_delta=0.0, baseline=0.5), [0.9, 0.4, 0.3, 0.35, 0.31], 4),
    "baseline-max": (dict(patience=2, min_delta=0.0, baseline=0.8, mode="max"), [0.7, 0.85, 0.9, 0.5], None),
    "min_epochs": (dict(patience=1, min_delta=0.0, min_epochs=4), [1.0, 2.0, 3.0, 4.0, 5.0], 3),
    "min_epochs-improving-late": (dict(patience=1, min_delta=0.0, min_epochs=3), [1.0, 2.0, 0.5, 0.4, 0.6], 4),
    "plateau-min": (dict(strategy="plateau", plateau_patience=2, plateau_threshold=0.05),
                    [1.0, 0.5, 0.49, 0.48, 0.3], 3),
    "plateau-max": (dict(strategy="plateau", plateau_patience=2, plateau_threshold=0.05, mode="max"),
                    [0.1, 0.5, 0.505, 0.51, 0.9], 3),
    "plateau-worse": (dict(strategy="plateau", plateau_patience=1, plateau_threshold=0.0),
                      [1.0, 0.5, 0.7], 2),
    "plateau-never": (dict(strategy="plateau", plateau_patience=2, plateau_threshold=0.1),
                      [1.0, 0.8, 0.6, 0.4, 0.2], None),
    "custom-target-min": (dict(strategy="custom", custom_conditions={"target": 0.3}), [1.0, 0.5, 0.29, 0.1], 2),
    "custom-target-max": (dict(strategy="custom", mode="max", custom_conditions={"target": 0.9}),
                          [0.5, 0.8, 0.91], 2),
    "custom-max_value": (dict(strategy="custom", custom_conditions={"max_value": 10.0}), [1.0, 2.0, 11.0], 2),
    "custom-min_value": (dict(strategy="custom", mode="max", custom_conditions={"min_value": 0.2}),
                         [0.5, 0.6, 0.1], 2),
    "custom-min_epochs": (dict(strategy="custom", custom_conditions={"target": 0.5}, min_epochs=3),
                          [0.4, 0.3, 0.2, 0.1], 2),
}


@pytest.mark.parametrize("monitor", ["validation_loss", "training_loss", "validation_accuracy", "val_accuracy"])
@pytest.mark.parametrize("case", list(CASES))
def test_stop_epoch_on_scripted_values(case, monitor):
    config, values, expected = CASES[case]
    plugin = EarlyStoppingPlugin(EarlyStoppingConfig(monitor=monitor, verbose=False, **config))
    assert run_script(plugin, values) == expected
    assert plugin.stopped_epoch == expected
    best = (min if plugin.config.mode == "min" else max)(plugin.history)
    assert plugin.best_score == best and plugin.best_epoch == plugin.history.index(best)


def test_disabled_plugin_never_stops():
    plugin = EarlyStoppingPlugin(EarlyStoppingConfig(enabled=False, patience=1, verbose=False))
    assert run_script(plugin, [1.0, 2.0, 3.0]) is None


def test_verbose_says_why_it_stops(capsys):
    plugin = EarlyStoppingPlugin(EarlyStoppingConfig(patience=1, min_delta=0.0))
    run_script(plugin, [1.0, 0.5, 0.6])
    assert capsys.readouterr().out.strip() == (
        "early stopping after epoch 3: validation_loss did not improve on its best by more than 0 "
        "for 1 epoch (best validation_loss 0.5 at epoch 2)"
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(mode="maximum"), "mode must be 'min' or 'max', got 'maximum' (did you mean 'max'?)"),
        (dict(strategy="patiense"), "strategy must be one of patience, plateau, custom, got 'patiense'"),
        (dict(strategy="custom"), "strategy 'custom' needs custom_conditions"),
        (dict(strategy="custom", custom_conditions={"targett": 1}), "unknown custom condition 'targett'"),
        (dict(patience=-1), "patience must be an integer >= 0"),
        (dict(min_delta=-0.1), "min_delta must be a number >= 0"),
        (dict(plateau_patience=0), "plateau_patience must be an integer >= 1"),
    ],
)
def test_invalid_options_raise_value_error(options, message):
    with pytest.raises(ValueError) as info:
        EarlyStoppingConfig(**options)
    assert isinstance(info.value, BzConfigError)
    assert message in str(info.value)


def test_dict_config_is_checked():
    assert EarlyStoppingPlugin({"patience": 4}).config.patience == 4
    with pytest.raises(BzConfigError, match="no option 'monitr'.*did you mean 'monitor'"):
        EarlyStoppingPlugin({"monitr": "training_loss"})


def test_missing_monitor_fails_at_first_epoch_end_listing_keys():
    plugin = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="validation_acuracy", verbose=False))
    with pytest.raises(BzConfigError) as info:
        plugin.end_epoch(scripted_context(0, 1.0))
    message = str(info.value)
    assert "'validation_acuracy'" in message and "did you mean 'validation_accuracy'" in message
    assert "available: training_loss, training_accuracy, validation_loss, validation_accuracy" in message


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    values = [1.0, 0.5, 0.6, 0.7, 0.8]
    config = EarlyStoppingConfig(patience=3, min_delta=0.0, verbose=False)
    uninterrupted = EarlyStoppingPlugin(config)
    assert run_script(uninterrupted, values) == 4

    first = EarlyStoppingPlugin(config)
    model = nn.Linear(2, 1)
    ctx = scripted_context(0, values[0])
    ctx.extra["model"] = model
    first.end_epoch(ctx)
    assert run_script(first, values[1:3], first_epoch=1) is None
    torch.save({"plugin": first.state_dict()}, tmp_path / "state.pt")

    resumed = EarlyStoppingPlugin(config)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["plugin"])
    resumed.start_training_session(PluginContext())  # a resumed session keeps the loaded state
    assert (resumed.best_score, resumed.best_epoch, resumed.wait) == (0.5, 1, 1)
    assert run_script(resumed, values[3:], first_epoch=3) == 4
    assert resumed.history == values


class EpochRecorder(Plugin):
    """Copies the model's weights and the monitored value at every epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.losses: list[float] = []

    def start_epoch(self, context):
        self.started.append(context.epoch)

    def end_epoch(self, context):
        self.weights.append(copy.deepcopy(context.extra["model"].state_dict()))
        self.losses.append(context.validation_loss_total / context.validation_batch_count)


def test_real_run_stops_at_once_and_restores_best_weights(model, train_loader, val_loader):
    # Mode "max" on a falling loss: epoch 0 is best, epochs 1 and 2 exhaust patience=2.
    stopper = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="validation_loss", mode="max", patience=2,
                                                      min_delta=0.0, verbose=False))
    recorder = EpochRecorder()
    trainer = Trainer()
    trainer.add_plugin(stopper)
    trainer.add_plugin(recorder)
    result = trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(),
                           train_loader, val_loader, device="cpu", compile=False, epochs=10)

    assert recorder.losses[1] < recorder.losses[0] and recorder.losses[2] < recorder.losses[0]
    assert stopper.stopped_epoch == 2 and stopper.best_epoch == 0
    # No extra epoch: the epoch after the stop request never started.
    assert recorder.started == [0, 1, 2]
    assert result.epochs_completed == 3 and result.stopped_early
    # What the module logged (float32) against the context's float64 totals.
    assert stopper.history == pytest.approx(recorder.losses, rel=1e-6)
    final = model.state_dict()
    assert all(torch.equal(final[k], recorder.weights[0][k]) for k in final)
    assert not all(torch.equal(final[k], recorder.weights[2][k]) for k in final)


def test_missing_monitor_in_a_real_run_names_the_keys(model, train_loader):
    trainer = Trainer()
    trainer.add_plugin(EarlyStoppingPlugin(EarlyStoppingConfig(monitor="validation_loss", verbose=False)))
    with pytest.raises(BzPluginError) as info:
        trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), train_loader,
                      device="cpu", compile=False, epochs=3, plugin_errors="raise")
    message = str(info.value)
    assert "'EarlyStoppingPlugin' failed in stage 'end_epoch'" in message
    assert "'validation_loss', which does not exist after epoch 1" in message
    assert "available: train_loss" in message  # what the module logged


def test_state_is_saved_in_checkpoints_and_restored_on_resume(model, train_loader, val_loader, tmp_path):
    config = EarlyStoppingConfig(monitor="validation_loss", mode="max", patience=3, min_delta=0.0, verbose=False)
    first = EarlyStoppingPlugin(config)
    trainer = Trainer()
    trainer.add_plugin(first)
    trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(), train_loader,
                  val_loader, device="cpu", compile=False, epochs=2, checkpoint_interval=2,
                  checkpoint_dir=str(tmp_path))
    checkpoint = torch.load(tmp_path / "epoch-2.ckpt", weights_only=True)
    (saved,) = [state for key, state in checkpoint["callbacks"]["LifecycleCallback"]["plugins"].items()
                if key.endswith("EarlyStoppingPlugin")]
    assert saved["history"] == first.history and saved["wait"] == 1 and saved["best_epoch"] == 0
    assert all(torch.equal(saved["best_weights"][k], first.best_weights[k]) for k in saved["best_weights"])

    # Resume with a fresh plugin: epoch 2 (the 3rd) continues the count and exhausts patience.
    resumed = EarlyStoppingPlugin(config)
    lightning_trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                                   enable_progress_bar=False, enable_model_summary=False,
                                   callbacks=[LifecycleCallback([resumed])])
    module = BzModule(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.5))
    lightning_trainer.fit(module, train_loader, val_loader, ckpt_path=str(tmp_path / "epoch-2.ckpt"))
    assert resumed.history[:2] == first.history
    assert resumed.stopped_epoch == 3 and lightning_trainer.current_epoch == 4
    assert resumed.best_epoch == 0
    final = model.state_dict()
    assert all(torch.equal(final[k], first.best_weights[k]) for k in final)



# ------------------------------------------------- any LightningModule, by its logged values
class ScriptedModule(pl.LightningModule):
    """A user's own LightningModule (no BzModule): trains a small net and logs scripted
    scores, ``val_score`` during validation and ``train_score`` from ``training_step``."""

    def __init__(self, val_scores=None, train_scores=None) -> None:
        super().__init__()
        from conftest import make_model

        self.net = make_model()
        self.val_scores, self.train_scores = val_scores, train_scores

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        if self.train_scores is not None:
            self.log("train_score", float(self.train_scores[self.current_epoch]), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.val_scores is not None:
            self.log("val_score", float(self.val_scores[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Epochs(pl.Callback):
    """Epochs started, and the module's weights at each epoch end."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append(trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append(copy.deepcopy(pl_module.state_dict()))


def fit_plain(module, stopper, train_loader, val_loader=None, **options):
    epochs = Epochs()
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[LifecycleCallback([stopper]), epochs], **options)
    trainer.fit(module, train_loader, val_loader)
    return trainer, epochs


def test_a_users_module_stops_at_once_and_gets_its_best_weights_back(train_loader, val_loader):
    # mode max, patience 2: best 0.6 at epoch 1; epochs 2 and 3 do not beat it.
    module = ScriptedModule(val_scores=[0.5, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    stopper = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="val_score", mode="max", patience=2, min_delta=0.0,
                                                      verbose=False))
    trainer, epochs = fit_plain(module, stopper, train_loader, val_loader)
    assert stopper.history == pytest.approx([0.5, 0.6, 0.55, 0.58])
    assert (stopper.stopped_epoch, stopper.best_epoch) == (3, 1)
    assert epochs.started == [0, 1, 2, 3] and trainer.current_epoch == 4  # epoch 4 never started
    final = module.state_dict()
    assert all(torch.equal(final[k], epochs.weights[1][k]) for k in final)
    assert not all(torch.equal(final[k], epochs.weights[3][k]) for k in final)


def test_plateau_on_a_value_logged_in_training_step(train_loader):
    # CASES["plateau-min"]: stops after epoch 3.
    module = ScriptedModule(train_scores=[1.0, 0.5, 0.49, 0.48, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1])
    stopper = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="train_score", strategy="plateau", plateau_patience=2,
                                                      plateau_threshold=0.05, verbose=False))
    trainer, epochs = fit_plain(module, stopper, train_loader)
    assert stopper.history == pytest.approx([1.0, 0.5, 0.49, 0.48])
    assert stopper.stopped_epoch == 3 and epochs.started == [0, 1, 2, 3]


def test_epochs_without_validation_are_not_judged(train_loader, val_loader):
    # Validation every 2nd epoch: only epochs 1, 3, 5... log val_score; the value Lightning
    # still holds from the epoch before is not judged again.
    module = ScriptedModule(val_scores=[9.0, 1.0, 9.0, 2.0, 9.0, 3.0, 9.0, 4.0, 9.0, 5.0])
    stopper = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="val_score", patience=2, min_delta=0.0, verbose=False))
    trainer, epochs = fit_plain(module, stopper, train_loader, val_loader, check_val_every_n_epoch=2)
    assert stopper.history == pytest.approx([1.0, 2.0, 3.0])
    assert stopper.stopped_epoch == 5 and epochs.started == [0, 1, 2, 3, 4, 5]


class LossLogger(ScriptedModule):
    """Logs its own validation loss, as a user's module would; records it per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.val_losses: dict[int, list[float]] = {}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.val_losses.setdefault(self.current_epoch, []).append(float(loss))
        self.log("val_loss", loss)


def test_a_users_own_logged_loss_is_monitored(train_loader, val_loader):
    # val_loader has batches of 8, 8 and 4: Lightning's epoch value is the batch-size-weighted mean.
    module = LossLogger()
    stopper = EarlyStoppingPlugin(EarlyStoppingConfig(monitor="validation_loss", mode="max", patience=2,
                                                      min_delta=0.0, verbose=False))
    trainer, epochs = fit_plain(module, stopper, train_loader, val_loader)
    sizes = [8, 8, 4]
    expected = [sum(v * n for v, n in zip(module.val_losses[e], sizes)) / 20 for e in sorted(module.val_losses)]
    assert stopper.history == pytest.approx(expected, rel=1e-5)
    assert expected[1] < expected[0] and expected[2] < expected[0]  # falling: epoch 0 is the best "max"
    assert stopper.best_epoch == 0 and stopper.stopped_epoch == 2 and epochs.started == [0, 1, 2]
    final = module.state_dict()
    assert all(torch.equal(final[k], epochs.weights[0][k]) for k in final)
