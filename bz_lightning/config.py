"""Dataclass schemas of bz-train's config groups.

Every option of every group in ``bz_lightning/conf`` has a schema here.
``bz_lightning.cli._validate`` checks each composed config against them (key names, value
types, ``???`` required values) before anything is built: Hydra itself accepts
``+optimizer.lrr=0.1`` silently, even with a schema. Only those are read: the values
come from the YAML in ``conf``, and the defaults here follow it where it sets plain values.

Nodes with a ``_target_`` are checked against the schema registered for that target;
a user's own target (no schema here) is checked when it is instantiated.

A field's allowed values, beyond its type, are a ``Rule`` in the field's metadata
(``optimizer.lr`` is a finite number >= 0, ``trainer.precision`` one of Lightning's
precisions...), so ``optimizer.lr=nan`` fails before anything is built, not at the first
optimizer step.

It also holds bz's configuration API for ``train.py`` (``get_config_manager``,
``load_config``, ``BzConfig``...; see ``bz_lightning._config_manager``).

Importing this module does not import torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from bz_lightning.plugins.early_stopping import EarlyStoppingConfig

__all__ = [
    "TrainConfig",
    "TrainerConfig",
    "PathsConfig",
    "MLPConfig",
    "CNNConfig",
    "AdamConfig",
    "AdamWConfig",
    "SGDConfig",
    "CosineConfig",
    "StepConfig",
    "DigitsConfig",
    "MNISTConfig",
    "LossConfig",
    "ConsoleOutOptions",
    "TensorBoardOptions",
    "OptunaPruningOptions",
    "TARGET_SCHEMAS",
    "GROUP_SCHEMAS",
    "PLUGIN_SCHEMAS",
    "TrainingSpecification",
    "Rule",
    "PRECISIONS",
    "BZ_OWNED_TRAINER_KEYS",
]


# ------------------------------------------------------------------------ value rules
@dataclass(frozen=True)
class Rule:
    """What a config value may be, beyond its type: ``fits(value)`` and the phrase that
    says what is allowed (``"a number >= 0"``), for the error naming the key and the value."""

    fits: Callable[[Any], bool]
    allowed: str


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _between(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, integer: bool = False) -> Rule:
    def fits(value: Any) -> bool:
        if not _number(value) or (integer and not isinstance(value, int)):
            return False
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    kind = "an integer" if integer else "a number"
    if high is None:
        allowed = f"{kind} {'>' if low_open else '>='} {_show(low)}" if low is not None else "a finite number"
    else:
        allowed = f"{kind} in {'(' if low_open else '['}{_show(low)}, {_show(high)}{')' if high_open else ']'}"
    return Rule(fits, allowed)


def _show(bound: float | None) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _items(rule: Rule, length: int | None = None) -> Rule:
    def fits(value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and bool(value) and (length is None or len(value) == length)
                and all(rule.fits(v) for v in value))

    count = f"{length} values" if length is not None else "a non-empty list"
    return Rule(fits, f"{count}, each {rule.allowed}")


def _any_of(*rules: Rule) -> Rule:
    return Rule(lambda value: any(r.fits(value) for r in rules), " or ".join(r.allowed for r in rules))


def _optional(rule: Rule) -> Rule:
    return Rule(lambda value: value is None or rule.fits(value), f"{rule.allowed} or null")


def _one_of(choices: tuple[Any, ...]) -> Rule:
    shown = dict.fromkeys(str(c) for c in choices)  # 16 and "16" read the same
    # By type too: 16.0 == 16 and True == 1, yet Lightning takes neither for precision 16.
    return Rule(lambda value: any(type(value) is type(c) and value == c for c in choices), "one of " + ", ".join(shown))


def _rule(default: Any, rule: Rule) -> Any:
    """A dataclass field with ``default`` whose values must fit ``rule``."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


# An output directory's name: one path component, so `task_name=../..` cannot climb out of
# outputs/; 100 characters leave room below the filesystem's 255 for Hydra's subdirectories.
_NAME = re.compile(r"[^/\\\x00-\x1f]{1,100}")
_DIRECTORY_NAME = Rule(lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None and v not in (".", ".."),
                       "a directory name: 1 to 100 characters, no '/', not '.' or '..'")
_AT_LEAST_0 = _between(0)
_AT_LEAST_1 = _between(1, integer=True)
_COUNT = _between(0, integer=True)
_FRACTION = _between(0, 1)
_BELOW_ONE = _between(0, 1, high_open=True)
_SIZES = _items(_AT_LEAST_1)
#: ``trainer.precision`` values ``lightning.Trainer`` accepts (its ``_PRECISION_INPUT``; a test
#: keeps the two equal).
PRECISIONS: tuple[Any, ...] = (
    "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
    "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16",
)


# ----------------------------------------------------------------------------- model
class ResumeMode(str, Enum):
    """``resume``: see ``Trainer.train``."""

    auto = "auto"
    never = "never"
    must = "must"


# Policies spelled "raise" are strings with a rule: an Enum member cannot be named `raise`,
# and OmegaConf matches Enum values by member name (`trainer.plugin_errors=raise` failed).
#: ``trainer.plugin_errors`` (see ``LifecycleCallback``), ``trainer.on_checkpoint_error``.
_LOG_OR_RAISE = _one_of(("log", "raise"))
#: ``on_batch_error`` and ``on_nonfinite_loss``: see ``Trainer.train``.
_SKIP_OR_RAISE = _one_of(("skip", "raise"))


class MatmulPrecision(str, Enum):
    """``trainer.float32_matmul_precision``: ``torch.set_float32_matmul_precision``'s values."""

    highest = "highest"
    high = "high"
    medium = "medium"


@dataclass
class MLPConfig:
    _target_: str = "bz_lightning.models.MLP"
    input_shape: List[int] = _rule(MISSING, _SIZES)
    num_classes: int = _rule(MISSING, _AT_LEAST_1)
    hidden_sizes: List[int] = _rule([128, 64], _SIZES)
    dropout: float = _rule(0.0, _BELOW_ONE)


@dataclass
class CNNConfig:
    _target_: str = "bz_lightning.models.CNN"
    input_shape: List[int] = _rule(MISSING, _SIZES)
    num_classes: int = _rule(MISSING, _AT_LEAST_1)
    channels: List[int] = _rule([32, 64], _SIZES)
    hidden: int = _rule(128, _AT_LEAST_1)
    dropout: float = _rule(0.1, _BELOW_ONE)


# ------------------------------------------------------------------------- optimizer
@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = _rule(1e-3, _AT_LEAST_0)
    betas: List[float] = _rule([0.9, 0.999], _items(_BELOW_ONE, length=2))
    eps: float = _rule(1e-8, _AT_LEAST_0)
    weight_decay: float = _rule(0.0, _AT_LEAST_0)
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = _rule(0.01, _AT_LEAST_0)


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = _rule(1e-2, _AT_LEAST_0)
    momentum: float = _rule(0.9, _AT_LEAST_0)
    dampening: float = _rule(0.0, _between())
    weight_decay: float = _rule(0.0, _AT_LEAST_0)
    nesterov: bool = False


# ------------------------------------------------------------------------- scheduler
@dataclass
class CosineConfig:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = _rule(MISSING, _AT_LEAST_1)
    eta_min: float = _rule(0.0, _AT_LEAST_0)


@dataclass
class StepConfig:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = _rule(MISSING, _AT_LEAST_1)
    gamma: float = _rule(0.5, _between(0, low_open=True))


# ------------------------------------------------------------------------------ data
@dataclass
class DigitsConfig:
    _target_: str = "bz_lightning.data.DigitsDataModule"
    batch_size: int = _rule(64, _AT_LEAST_1)
    val_fraction: float = _rule(0.2, _between(0, 1, low_open=True, high_open=True))
    seed: int = 0
    num_workers: int = _rule(0, _COUNT)
    input_shape: List[int] = _rule([1, 8, 8], _SIZES)
    num_classes: int = _rule(10, _AT_LEAST_1)
    pin_memory: Optional[bool] = None


@dataclass
class MNISTConfig:
    _target_: str = "bz_lightning.data.MNISTDataModule"
    root: str = MISSING
    download: bool = True
    batch_size: int = _rule(128, _AT_LEAST_1)
    num_workers: int = _rule(0, _COUNT)
    mirrors: List[str] = field(
        default_factory=lambda: ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    )
    input_shape: List[int] = _rule([1, 28, 28], _SIZES)
    num_classes: int = _rule(10, _AT_LEAST_1)
    pin_memory: Optional[bool] = None


# ------------------------------------------------------------------------------ loss
@dataclass
class LossConfig:
    _target_: str = "torch.nn.CrossEntropyLoss"
    label_smoothing: float = _rule(0.0, _FRACTION)


# --------------------------------------------------------------------------- plugins
@dataclass
class ConsoleOutOptions:
    update_interval: int = _rule(10, _AT_LEAST_1)
    # None: 0.5 s with bars, 10 s for plain lines (see ConsoleProgressBar).
    refresh_seconds: Optional[float] = _rule(None, _optional(_AT_LEAST_0))


@dataclass
class TensorBoardOptions:
    log_dir: str = "runs/experiment"
    batch_log_interval: int = _rule(1, _AT_LEAST_1)


@dataclass
class OptunaPruningOptions:
    # None: from BZ_OPTUNA_STUDY / BZ_OPTUNA_TRIAL, which bz's Optuna sweeper sets.
    study_file: Optional[str] = None
    trial_number: Optional[int] = None
    monitor: str = "val_loss"


# --------------------------------------------------------------------- trainer, paths
#: ``lightning.Trainer`` arguments bz-train sets itself: ``trainer.<key>`` is refused with
#: ``(the bz key that sets it, the fix)`` rather than silently overridden. Any other
#: ``lightning.Trainer`` argument may be set as ``trainer.<key>`` and is passed on.
BZ_OWNED_TRAINER_KEYS: dict[str, tuple[str, str]] = {
    "max_epochs": ("epochs", "epochs={value}"),
    "accelerator": ("trainer.device", "trainer.device=cpu|cuda|cuda:N|mps|auto"),
    "logger": ("the logger group", "logger=csv, logger=[csv,mlflow] or logger=many"),
    "callbacks": ("the callbacks group", "callbacks=[model_checkpoint,lr_monitor] or +callbacks.NAME._target_=CLASS"),
    "enable_checkpointing": ("checkpoint_interval (bz checkpoints every run)",
                             "checkpoint_interval=N, or callbacks=[model_checkpoint] for top-k checkpoints"),
    "enable_progress_bar": ("the console_out plugin", "plugins=[console_out,...] or callbacks=[rich_progress_bar]"),
    "default_root_dir": ("paths.output_dir", "paths.output_dir=DIR or hydra.run.dir=DIR"),
}


@dataclass
class TrainerConfig:
    """Options passed to ``bz_lightning.Trainer.train`` and on to ``lightning.Trainer``.

    ``None`` means "Lightning's default" and is not passed on.
    """

    device: str = "auto"
    precision: Any = _rule("32-true", _one_of(PRECISIONS))
    gradient_clip_val: Optional[float] = _rule(None, _optional(_AT_LEAST_0))
    accumulate_grad_batches: int = _rule(1, _AT_LEAST_1)
    deterministic: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    log_every_n_steps: int = _rule(50, _AT_LEAST_1)
    plugin_errors: str = _rule("log", _LOG_OR_RAISE)
    on_checkpoint_error: str = _rule("log", _LOG_OR_RAISE)
    # bz-train calls torch.set_float32_matmul_precision with it before training; None: leave
    # torch's setting ("highest" unless changed). trainer=gpu sets "high" (TF32 matmuls).
    float32_matmul_precision: Optional[MatmulPrecision] = None
    strategy: Optional[str] = None
    devices: Any = None
    num_nodes: Optional[int] = _rule(None, _optional(_AT_LEAST_1))
    sync_batchnorm: Optional[bool] = None
    max_time: Optional[str] = None


@dataclass
class PathsConfig:
    data_dir: str = "data"
    output_dir: str = MISSING
    runs_dir: str = "runs"


# ----------------------------------------------------------------------------- root
@dataclass
class TrainConfig:
    """The top level of bz-train's config. Group nodes (``model``, ``data``, ...) are
    checked against the schema of their ``_target_`` (``TARGET_SCHEMAS``)."""

    task_name: str = _rule("train", _DIRECTORY_NAME)
    # What lightning.seed_everything accepts.
    seed: Optional[int] = _rule(42, _optional(_between(0, 2**32 - 1, integer=True)))
    epochs: int = _rule(10, _AT_LEAST_1)
    device: str = "auto"
    compile: bool = False
    checkpoint_interval: int = _rule(0, _COUNT)
    resume: ResumeMode = ResumeMode.auto
    on_batch_error: str = _rule("skip", _SKIP_OR_RAISE)
    on_nonfinite_loss: str = _rule("raise", _SKIP_OR_RAISE)
    # Batches per run (an integer), or a fraction of one epoch's batches.
    max_skipped_batches: Any = _rule(10, _any_of(_COUNT, _between(0, 1, low_open=True, high_open=True)))
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    optimized_metric: Optional[str] = "val_loss"
    print_config: bool = True
    paths: PathsConfig = field(default_factory=PathsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    loss: Any = field(default_factory=LossConfig)
    metrics: Dict[str, Any] = field(default_factory=dict)
    plugins: Dict[str, Any] = field(default_factory=dict)
    # Lightning loggers and callbacks by name, each a node with a _target_ (the logger and
    # callbacks groups, or +logger.NAME._target_=...).
    logger: Dict[str, Any] = field(default_factory=dict)
    callbacks: Dict[str, Any] = field(default_factory=dict)
    # Start from this checkpoint (Lightning's fit(ckpt_path=...)); its file is read as data only.
    ckpt_path: Optional[str] = None
    # A project's own values, free-form: ${extras.num_features}.
    extras: Dict[str, Any] = field(default_factory=dict)
    # A project's own top-level keys (num_features: 8, read as ${num_features}); every other
    # unknown top-level key is still a typo. Checked by bz_lightning.cli._validate.
    extra_keys: Any = field(default_factory=list)


TARGET_SCHEMAS: dict[str, type] = {
    schema._target_: schema  # type: ignore[attr-defined]
    for schema in (
        MLPConfig, CNNConfig, AdamConfig, AdamWConfig, SGDConfig, CosineConfig, StepConfig,
        DigitsConfig, MNISTConfig, LossConfig,
    )
}
# Schemas of the nodes that have no ``_target_``.
GROUP_SCHEMAS: dict[str, type] = {"trainer": TrainerConfig, "paths": PathsConfig}
PLUGIN_SCHEMAS: dict[str, type] = {
    "console_out": ConsoleOutOptions,
    "tensorboard": TensorBoardOptions,
    # The plugin's own options class (its defaults are the plugin's, e.g. patience 10).
    "early_stopping": EarlyStoppingConfig,
    "optuna_pruning": OptunaPruningOptions,
}


@dataclass
class TrainingSpecification:
    """Everything a training run is made of, built from a config (see ``bz_lightning.cli.train``).

    ``training_loader`` / ``validation_loader`` are DataLoaders; ``hyperparameters`` holds
    the resolved config as plain values (what checkpoints store).
    """

    model: Any
    loss_fn: Any
    optimizer: Any
    training_loader: Any
    validation_loader: Any
    hyperparameters: Dict[str, Any]


# bz's configuration API (get_config_manager, load_config, BzConfig...): its own module,
# public here as the spec's bz.config.
from bz_lightning._config_manager import (  # noqa: E402
    BzConfig,
    ConfigManager,
    MetricsConfig,
    PluginConfig,
    TrainingConfig,
    get_config_manager,
    load_config,
)

__all__ += ["BzConfig", "ConfigManager", "MetricsConfig", "PluginConfig", "TrainingConfig", "get_config_manager",
            "load_config"]

