"""``EarlyStoppingPlugin``: stop training when a monitored value stops improving."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from bz_lightning.context import PluginContext, epoch_values
from bz_lightning.errors import BzConfigError, did_you_mean
from bz_lightning.plugins.base import Plugin

__all__ = ["EarlyStoppingConfig", "EarlyStoppingPlugin", "CUSTOM_CONDITIONS"]

MODES = ("min", "max")
STRATEGIES = ("patience", "plateau", "custom")

#: The keys ``custom_conditions`` accepts, and when each stops training.
CUSTOM_CONDITIONS: Mapping[str, str] = {
    "target": "the monitored value reaches the target (<= in mode 'min', >= in mode 'max')",
    "min_value": "the monitored value falls to or below this value (in either mode)",
    "max_value": "the monitored value rises to or above this value (in either mode)",
}


@dataclass
class EarlyStoppingConfig:
    """Options of ``EarlyStoppingPlugin``; invalid values raise ``BzConfigError`` (a ``ValueError``).

    Attributes:
        enabled: ``False`` turns the plugin into a no-op.
        patience: ``strategy="patience"``: stop after this many epochs in a row without an
            improvement greater than ``min_delta`` (0 behaves like 1).
        min_delta: the smallest change that counts as an improvement (``patience`` only).
        monitor: ``"validation_loss"``, ``"training_loss"``, ``"validation_<metric>"`` or
            ``"training_<metric>"`` with a metric's ``name`` (e.g. ``"validation_accuracy"``);
            the Lightning-style spellings ``val_loss``, ``train_<metric>`` are accepted too.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is better.
        restore_best_weights: at the end of training, load the weights of the epoch with
            the best monitored value (the earliest one on ties).
        verbose: print when training is stopped and when weights are restored.
        baseline: ``patience`` only: the value to beat; epochs that do not beat it by more
            than ``min_delta`` count towards ``patience``.
        min_epochs: never stop before this many epochs have completed.
        strategy: ``"patience"``, ``"plateau"`` or ``"custom"``.
        plateau_factor: accepted for compatibility with bz and ignored: in bz's plateau
            settings it is the learning-rate factor of ``ReduceLROnPlateau``; use that
            scheduler to lower the learning rate.
        plateau_patience: ``plateau``: the window, in epochs.
        plateau_threshold: ``plateau``: stop when the best value of the last
            ``plateau_patience`` epochs improves on the best value before them by less than
            this fraction of the latter: ``(old_best - recent_best) / |old_best| <
            plateau_threshold`` in mode ``"min"`` (signs swapped for ``"max"``).
        custom_conditions: ``custom``: a dict with one or more of ``target``, ``min_value``,
            ``max_value`` (see ``CUSTOM_CONDITIONS``); training stops at the first epoch
            end where any of them holds.
    """

    enabled: bool = True
    patience: int = 10
    min_delta: float = 0.001
    monitor: str = "validation_loss"
    # str, not Literal[...]: this class is also bz-train's schema of plugins.early_stopping
    # (bz_lightning.config.PLUGIN_SCHEMAS), and OmegaConf rejects Literal annotations.
    # __post_init__ checks both values.
    mode: str = "min"
    restore_best_weights: bool = True
    verbose: bool = True
    baseline: Optional[float] = None
    min_epochs: int = 0
    strategy: str = "patience"
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    plateau_threshold: float = 0.0001
    custom_conditions: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BzConfigError(
                f"early stopping: mode must be 'min' or 'max', got {self.mode!r}{did_you_mean(str(self.mode), MODES)}"
            )
        if self.strategy not in STRATEGIES:
            raise BzConfigError(
                f"early stopping: strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
                f"{did_you_mean(str(self.strategy), STRATEGIES)}"
            )
        if not isinstance(self.monitor, str) or not self.monitor:
            raise BzConfigError(f"early stopping: monitor must be a non-empty string, got {self.monitor!r}")
        for name, low in (("patience", 0), ("min_epochs", 0), ("plateau_patience", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise BzConfigError(f"early stopping: {name} must be an integer >= {low}, got {value!r}")
        for name in ("min_delta", "plateau_threshold"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise BzConfigError(f"early stopping: {name} must be a number >= 0, got {value!r}")
        if self.baseline is not None and not _is_number(self.baseline):
            raise BzConfigError(f"early stopping: baseline must be a number or None, got {self.baseline!r}")
        conditions = self.custom_conditions
        if not isinstance(conditions, Mapping):
            raise BzConfigError(f"early stopping: custom_conditions must be a dict, got {conditions!r}")
        for key, value in conditions.items():
            if key not in CUSTOM_CONDITIONS:
                raise BzConfigError(
                    f"early stopping: unknown custom condition {key!r}{did_you_mean(str(key), CUSTOM_CONDITIONS)}; "
                    f"allowed: {', '.join(CUSTOM_CONDITIONS)}"
                )
            if not _is_number(value):
                raise BzConfigError(f"early stopping: custom condition {key!r} must be a number, got {value!r}")
        if self.strategy == "custom" and not conditions:
            raise BzConfigError(
                "early stopping: strategy 'custom' needs custom_conditions with at least one of "
                f"{', '.join(CUSTOM_CONDITIONS)}, e.g. {{'target': 0.95}}"
            )


class EarlyStoppingPlugin(Plugin):
    """Stops training when the monitored value stops improving (see ``EarlyStoppingConfig``).

    Once per epoch it reads the monitored value from what the module logged to Lightning
    (``trainer.callback_metrics``), so it works for any ``LightningModule`` that logs the
    value (``self.log("val_acc", ...)``) under a ``LifecycleCallback``, ``BzModule``
    included. It reads the value as soon as it is logged for the epoch: at
    ``end_validation_loop`` for values logged during validation, else at ``end_epoch``; a
    value not logged again in an epoch (no validation that epoch) is not judged. When a
    stop condition holds (and ``min_epochs`` epochs have completed) it sets
    ``context.should_stop_training``: the epoch in progress is the last one. Called
    without a Lightning trainer in ``context.extra`` (directly, as in the example), it
    reads the context's epoch values instead. Strategies:

    * ``patience``: stop when ``patience`` epochs in a row did not improve by more than
      ``min_delta`` on the last improvement (or on ``baseline``, until it is beaten);
    * ``plateau``: stop when the best value of the last ``plateau_patience`` epochs is less
      than ``plateau_threshold`` (relative) better than the best value before them;
    * ``custom``: stop when one of ``custom_conditions`` holds.

    The best epoch is the one with the best monitored value (ignoring ``min_delta``; the
    earliest on ties). With ``restore_best_weights`` its weights are kept as a copy and
    loaded into the model when the session ends. Best value, counters, history and best
    weights are saved in checkpoints and restored on resume.

    Attributes (epochs count from 0, like ``context.epoch``):
        best_score / best_epoch: the best monitored value so far and its epoch.
        wait: ``patience`` strategy: epochs since the last improvement.
        stopped_epoch: the epoch after which a stop was requested, or ``None``.
        history: the monitored value of every epoch seen.

    Raises:
        BzConfigError: the monitored key does not exist at the end of the first epoch; the
            message lists the keys that do.

    Example:
        >>> plugin = EarlyStoppingPlugin(EarlyStoppingConfig(patience=1, monitor="training_loss",
        ...                                                  verbose=False))
        >>> for epoch, loss in enumerate([1.0, 0.5, 0.6]):
        ...     ctx = PluginContext(epoch=epoch, training_loss_total=loss, training_batch_count=1)
        ...     plugin.end_epoch(ctx)
        >>> ctx.should_stop_training, plugin.best_epoch, plugin.stopped_epoch
        (True, 1, 2)
    """

    config_class = EarlyStoppingConfig
    config: EarlyStoppingConfig

    def __init__(self, config: EarlyStoppingConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = EarlyStoppingConfig()
        elif isinstance(config, Mapping):
            allowed = [f.name for f in fields(EarlyStoppingConfig)]
            for key in config:
                if key not in allowed:
                    raise BzConfigError(
                        f"early stopping has no option {key!r}{did_you_mean(str(key), allowed)}; "
                        f"allowed: {', '.join(allowed)}"
                    )
            config = EarlyStoppingConfig(**config)
        elif not isinstance(config, EarlyStoppingConfig):
            raise BzConfigError(f"EarlyStoppingPlugin expects an EarlyStoppingConfig or a dict, got {config!r}")
        super().__init__(config=config)
        if config.plateau_factor != EarlyStoppingConfig.plateau_factor:
            self.logger.warning("plateau_factor=%r has no effect on early stopping; lower the learning rate "
                                "with a ReduceLROnPlateau scheduler instead", config.plateau_factor)
        if config.baseline is not None and config.strategy != "patience":
            self.logger.warning("baseline is used by the 'patience' strategy only; strategy %r ignores it",
                                config.strategy)
        self._reset()
        self._state_loaded = False

    def _reset(self) -> None:
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None
        self.wait = 0
        self.reference: float | None = self.config.baseline
        self.stopped_epoch: int | None = None
        self.history: list[float] = []
        self._seen_monitor = False
        self._judged_epoch: int | None = None
        # Lightning's callback_metrics as the epoch started: a value still the same object
        # was not logged again this epoch.
        self._before_epoch: dict[str, Any] = {}

    # ------------------------------------------------------------------------ stages
    def start_training_session(self, context: PluginContext) -> None:
        # A checkpoint's state arrives before the session starts; keep it when resuming.
        if not self._state_loaded:
            self._reset()
        self._state_loaded = False
        self._judged_epoch = None

    def start_epoch(self, context: PluginContext) -> None:
        trainer = context.extra.get("trainer")
        self._before_epoch = dict(trainer.callback_metrics) if trainer is not None else {}

    # A validation value is judged as soon as validation ends rather than at end_epoch: bz
    # writes epoch-N.ckpt before end_epoch, and the state saved in it should include this
    # epoch. (Lightning makes training values logged for the epoch visible only at the
    # epoch's end.) end_epoch judges what validation did not, and reports a monitor that
    # does not exist.
    def end_validation_loop(self, context: PluginContext) -> None:
        self._judge(context, final=False)

    def end_epoch(self, context: PluginContext) -> None:
        self._judge(context, final=True)

    def _judge(self, context: PluginContext, final: bool) -> None:
        cfg = self.config
        epoch = context.epoch
        if not cfg.enabled or self._judged_epoch == epoch:
            return
        value = self._monitored_value(context, final)
        if value is None:
            return
        self._judged_epoch = epoch
        self.history.append(value)
        if self.best_score is None or self._better(value, self.best_score, 0.0):
            self.best_score, self.best_epoch = value, epoch
            if cfg.restore_best_weights:
                self._keep_weights(context)
        reason = {"patience": self._patience, "plateau": self._plateau, "custom": self._custom}[cfg.strategy](value)
        if reason is None:
            return
        if epoch + 1 < cfg.min_epochs:
            self.logger.debug("early stopping condition holds after epoch %d, but min_epochs=%d", epoch + 1,
                              cfg.min_epochs)
            return
        context.should_stop_training = True
        self.stopped_epoch = epoch
        self._say(f"early stopping after epoch {epoch + 1}: {reason} "
                  f"(best {cfg.monitor} {self.best_score:.6g} at epoch {_human(self.best_epoch)})")

    def end_training_session(self, context: PluginContext) -> None:
        cfg = self.config
        model = context.extra.get("model")
        if not (cfg.enabled and cfg.restore_best_weights and self.best_weights is not None and model is not None):
            return
        model.load_state_dict(self.best_weights)
        self._say(f"restored the weights of epoch {_human(self.best_epoch)} "
                  f"({cfg.monitor} {self.best_score:.6g})")

    # -------------------------------------------------------------------- strategies
    def _better(self, value: float, than: float, delta: float) -> bool:
        return value < than - delta if self.config.mode == "min" else value > than + delta

    def _patience(self, value: float) -> str | None:
        cfg = self.config
        if self.reference is None or self._better(value, self.reference, cfg.min_delta):
            self.reference, self.wait = value, 0
            return None
        self.wait += 1
        if self.wait < max(cfg.patience, 1):
            return None
        beaten = cfg.baseline is None or self.reference != cfg.baseline
        target = "its best" if beaten else f"the baseline {cfg.baseline:g}"
        return (f"{cfg.monitor} did not improve on {target} by more than {cfg.min_delta:g} "
                f"for {self.wait} epoch{'s' if self.wait != 1 else ''}")

    def _plateau(self, value: float) -> str | None:
        cfg = self.config
        window = cfg.plateau_patience
        if len(self.history) <= window:
            return None
        pick = min if cfg.mode == "min" else max
        old, recent = pick(self.history[:-window]), pick(self.history[-window:])
        gain = (old - recent) if cfg.mode == "min" else (recent - old)
        relative = gain / max(abs(old), 1e-12)
        if not relative < cfg.plateau_threshold:
            return None
        return (f"{cfg.monitor} improved by {relative:.3g} (relative) over the last {window} epochs, "
                f"less than plateau_threshold={cfg.plateau_threshold:g}")

    def _custom(self, value: float) -> str | None:
        cfg = self.config
        conditions = cfg.custom_conditions
        if "target" in conditions:
            target = conditions["target"]
            if value <= target if cfg.mode == "min" else value >= target:
                return f"{cfg.monitor} {value:.6g} reached the target {target:g}"
        if "min_value" in conditions and value <= conditions["min_value"]:
            return f"{cfg.monitor} {value:.6g} fell to min_value {conditions['min_value']:g}"
        if "max_value" in conditions and value >= conditions["max_value"]:
            return f"{cfg.monitor} {value:.6g} rose to max_value {conditions['max_value']:g}"
        return None

    # ---------------------------------------------------------------------- helpers
    def _monitored_value(self, context: PluginContext, final: bool) -> float | None:
        """The monitored value logged this epoch, or ``None`` (not logged this epoch, or not
        yet). ``final``: the epoch's end, where a monitor never seen is an error."""
        trainer = context.extra.get("trainer")
        if trainer is None:
            available: dict[str, Any] = epoch_values(context)
            fresh = available
        else:
            available = dict(trainer.callback_metrics)
            fresh = {k: v for k, v in available.items() if self._before_epoch.get(k) is not v}
        for key in _spellings(self.config.monitor):
            if f"{key}_epoch" in fresh:  # logged on_step and on_epoch: the epoch's value
                self._seen_monitor = True
                return float(fresh[f"{key}_epoch"])
            if f"{key}_step" in available:
                continue  # until the epoch ends, the plain key holds the last step's value
            if key in fresh:
                self._seen_monitor = True
                return float(fresh[key])
        if not final:
            return None
        if self._seen_monitor or any(key in available for key in _spellings(self.config.monitor)):
            # E.g. an epoch without validation (check_val_every_n_epoch > 1): nothing to judge.
            self.logger.debug("%r not logged in epoch %d; skipping it", self.config.monitor, context.epoch + 1)
            return None
        names = [k for k in available if not k.endswith("_step")]
        raise BzConfigError(
            f"early stopping monitors {self.config.monitor!r}, which does not exist after epoch "
            f"{context.epoch + 1}{did_you_mean(self.config.monitor, names)}; "
            f"available: {', '.join(names) or 'none'}"
        )

    def _keep_weights(self, context: PluginContext) -> None:
        model = context.extra.get("model")
        if model is not None:
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _say(self, message: str) -> None:
        if self.config.verbose:
            print(message, flush=True)
        else:
            self.logger.info(message)

    # ------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "reference": self.reference,
            "stopped_epoch": self.stopped_epoch,
            "history": list(self.history),
            "seen_monitor": self._seen_monitor,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = state.get("best_score")
        self.best_epoch = state.get("best_epoch")
        self.wait = int(state.get("wait", 0))
        self.reference = state.get("reference", self.config.baseline)
        self.stopped_epoch = state.get("stopped_epoch")
        self.history = [float(v) for v in state.get("history", [])]
        self._seen_monitor = bool(state.get("seen_monitor", False))
        self.best_weights = state.get("best_weights")
        self._state_loaded = True


def _spellings(monitor: str) -> tuple[str, ...]:
    """``monitor`` as given, then in the other spelling: bz's ``validation_<x>`` /
    ``training_<x>`` (the context's epoch values) or Lightning's ``val_<x>`` / ``train_<x>``
    (what ``BzModule`` logs)."""
    for long, short in (("validation_", "val_"), ("training_", "train_")):
        if monitor.startswith(long):
            return monitor, short + monitor[len(long):]
        if monitor.startswith(short):
            return monitor, long + monitor[len(short):]
    return (monitor,)


def _human(epoch: int | None) -> str:
    return "?" if epoch is None else str(epoch + 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
