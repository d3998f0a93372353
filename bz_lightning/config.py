"""Dataclass schemas of bz-train's config groups.

Every option of every group in ``bz_lightning/conf`` has a schema here.
``bz_lightning.cli._validate`` checks each composed config against them (key names, value
types, ``???`` required values) before anything is built: Hydra itself accepts
``+optimizer.lrr=0.1`` silently, even with a schema. Only those are read: the values
come from the YAML in ``conf``, and the defaults here follow it where it sets plain values.

Nodes with a ``_target_`` are checked against the schema registered for that target;
a user's own target (no schema here) is checked when it is instantiated.

Importing this module does not import torch.
"""

from __future__ import annotations

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
]


# ----------------------------------------------------------------------------- model
class ResumeMode(str, Enum):
    """``resume``: see ``Trainer.train``."""

    auto = "auto"
    never = "never"
    must = "must"


class PluginErrors(str, Enum):
    """``trainer.plugin_errors``: see ``LifecycleCallback``."""

    log = "log"
    raise_ = "raise"


class MatmulPrecision(str, Enum):
    """``trainer.float32_matmul_precision``: ``torch.set_float32_matmul_precision``'s values."""

    highest = "highest"
    high = "high"
    medium = "medium"


@dataclass
class MLPConfig:
    _target_: str = "bz_lightning.models.MLP"
    input_shape: List[int] = MISSING
    num_classes: int = MISSING
    hidden_sizes: List[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0


@dataclass
class CNNConfig:
    _target_: str = "bz_lightning.models.CNN"
    input_shape: List[int] = MISSING
    num_classes: int = MISSING
    channels: List[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 128
    dropout: float = 0.1


# ------------------------------------------------------------------------- optimizer
@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 1e-2
    momentum: float = 0.9
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


# ------------------------------------------------------------------------- scheduler
@dataclass
class CosineConfig:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = MISSING
    eta_min: float = 0.0


@dataclass
class StepConfig:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = MISSING
    gamma: float = 0.5


# ------------------------------------------------------------------------------ data
@dataclass
class DigitsConfig:
    _target_: str = "bz_lightning.data.DigitsDataModule"
    batch_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    num_workers: int = 0
    input_shape: List[int] = field(default_factory=lambda: [1, 8, 8])
    num_classes: int = 10
    pin_memory: Optional[bool] = None


@dataclass
class MNISTConfig:
    _target_: str = "bz_lightning.data.MNISTDataModule"
    root: str = MISSING
    download: bool = True
    batch_size: int = 128
    num_workers: int = 0
    mirrors: List[str] = field(
        default_factory=lambda: ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    )
    input_shape: List[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    pin_memory: Optional[bool] = None


# ------------------------------------------------------------------------------ loss
@dataclass
class LossConfig:
    _target_: str = "torch.nn.CrossEntropyLoss"
    label_smoothing: float = 0.0


# --------------------------------------------------------------------------- plugins
@dataclass
class ConsoleOutOptions:
    update_interval: int = 10
    # None: 0.5 s with bars, 10 s for plain lines (see ConsoleProgressBar).
    refresh_seconds: Optional[float] = None


@dataclass
class TensorBoardOptions:
    log_dir: str = "runs/experiment"
    batch_log_interval: int = 1


@dataclass
class OptunaPruningOptions:
    # None: from BZ_OPTUNA_STUDY / BZ_OPTUNA_TRIAL, which bz's Optuna sweeper sets.
    study_file: Optional[str] = None
    trial_number: Optional[int] = None
    monitor: str = "val_loss"


# --------------------------------------------------------------------- trainer, paths
@dataclass
class TrainerConfig:
    """Options passed to ``bz_lightning.Trainer.train`` and on to ``lightning.Trainer``.

    ``None`` means "Lightning's default" and is not passed on.
    """

    device: str = "auto"
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    deterministic: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    log_every_n_steps: int = 50
    plugin_errors: PluginErrors = PluginErrors.log
    # bz-train calls torch.set_float32_matmul_precision with it before training; None: leave
    # torch's setting ("highest" unless changed). trainer=gpu sets "high" (TF32 matmuls).
    float32_matmul_precision: Optional[MatmulPrecision] = None
    strategy: Optional[str] = None
    devices: Any = None
    num_nodes: Optional[int] = None
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

    task_name: str = "train"
    seed: Optional[int] = 42
    epochs: int = 10
    device: str = "auto"
    compile: bool = False
    checkpoint_interval: int = 0
    resume: ResumeMode = ResumeMode.auto
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

