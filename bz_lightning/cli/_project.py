"""``bz train``: a bz project (``train.py`` + a JSON config) trained on Lightning.

A bz project's ``train.py`` defines the objects to train (``model``, ``loss_fn``,
``optimizer``, ``training_loader``, optionally ``validation_loader``, ``metrics`` and
``hyperparameters``) and reads its settings with ``bz_lightning.config.get_config_manager()``.
``bz train`` runs it with the JSON config active and hands the objects to
``bz_lightning.Trainer`` with the same machinery ``bz-train`` uses: plugins and metrics by
registry name (entry-point plugins included), checkpoints under
``runs/<signature>/checkpoints`` with automatic resume, the console plugin, and the run's
record in ``outputs/train/runs/<date>_<time>_<pid>/metrics.json``.

Everything that can be checked before ``train.py`` runs is checked first (the config file,
its values, plugin and metric names), so a typo costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import logging
import logging.config
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bz_lightning._config_manager import ConfigManager, _is_device, use_config_manager
from bz_lightning.config import ConsoleOutOptions, TrainingSpecification
from bz_lightning.errors import BzConfigError, did_you_mean

__all__ = ["load_metrics_from_config", "load_plugins_from_config", "load_training_specification", "prepare_training",
           "run_training", "PROJECT_SCRIPT"]

log = logging.getLogger("bz_lightning.cli")

#: The script ``bz train`` runs, in the working directory.
PROJECT_SCRIPT = "train.py"
#: What ``train.py`` must define, and what it may.
REQUIRED_NAMES = ("model", "loss_fn", "optimizer", "training_loader")
OPTIONAL_NAMES = ("validation_loader", "metrics", "hyperparameters")
# bz-train's places and names: outputs/<task_name>/runs/<date>_<time>_<pid>, runs/<signature>.
TASK_NAME = "train"
RUNS_DIR = "runs"


def load_plugins_from_config(config_manager: ConfigManager, training_spec: TrainingSpecification, *,
                             output_dir: str | Path | None = None) -> list[Any]:
    """The enabled plugins of the config, built by registry name with their ``config``.

    The built-ins get what bz's ``init(spec)`` gave them (the loaders' lengths) and
    bz-train's defaults where the config says nothing: ``console_out`` refreshes every
    10 batches, ``tensorboard`` writes to ``<output_dir>/tensorboard``.

    Raises:
        BzConfigError: an unknown plugin name, or options the plugin does not take.
    """
    from bz_lightning.cli._build import build_plugins

    check_plugin_names(config_manager)
    defaults: dict[str, dict[str, Any]] = {"console_out": {"update_interval": ConsoleOutOptions.update_interval}}
    if output_dir is not None:
        defaults["tensorboard"] = {"log_dir": str(Path(output_dir) / "tensorboard")}
    options = {}
    for name in config_manager.get_enabled_plugins():
        entry = config_manager.get_plugin_config(name) or {}
        options[name] = {**defaults.get(name, {}), **entry.get("config", {})}
    validation = training_spec.validation_loader
    return build_plugins(options, len(training_spec.training_loader), len(validation) if validation is not None else 0)


def load_metrics_from_config(config_manager: ConfigManager, module: Any) -> list[Any]:
    """``module.metrics`` when ``train.py`` defines it (bz's rule), else the config's metrics by
    registry name (each reported under that name).

    Raises:
        BzConfigError: an unknown metric name or an option the metric does not take.
    """
    from bz_lightning.cli._build import build_metrics

    configured = build_metrics(_metric_options(config_manager))
    own = getattr(module, "metrics", None)
    if own is None:
        return configured
    if configured:
        log.info("train.py defines metrics; the config's metrics (%s) are not used",
                 ", ".join(m.name for m in configured))
    return list(own)


def check_plugin_names(config_manager: ConfigManager) -> None:
    """Raise ``BzConfigError`` for an enabled plugin no registry knows, naming it."""
    from bz_lightning.plugins import list_plugins

    available = list_plugins()
    for name in config_manager.get_enabled_plugins():
        if name not in available:
            raise BzConfigError(
                f"{config_manager.source}: plugins.{name}: unknown plugin {name!r}{did_you_mean(name, available)}; "
                f"available: {', '.join(available)}"
            )


def check_metrics(config_manager: ConfigManager) -> None:
    """Raise ``BzConfigError`` for a metric of the config that cannot be built (an unknown
    name, an option it does not take), naming the file and the metric."""
    from bz_lightning.metrics import get_metric

    for name, options in _metric_options(config_manager).items():
        try:
            get_metric(name, **options)
        except (BzConfigError, TypeError) as err:
            raise BzConfigError(f"{config_manager.source}: metrics.{name}: {err}") from None


def _metric_options(config_manager: ConfigManager) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for entry in config_manager.get_metrics_config().get("metrics", []):
        name, values = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        if name in options:
            raise BzConfigError(f"{config_manager.source}: metrics: {name!r} is listed twice")
        options[name] = values
    return options


def load_training_specification(script: str | Path) -> tuple[TrainingSpecification, ModuleType]:
    """Run ``script`` (a project's ``train.py``) as the module ``train`` and collect what it defines.

    Its directory comes first on ``sys.path``, so its own modules (``from model import ...``)
    import as they did under bz.

    Raises:
        BzConfigError: the script imports ``bz`` (not yet migrated), or lacks a required name.
    """
    path = Path(script).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:
        if err.name == "bz" or (err.name or "").startswith("bz."):
            raise BzConfigError(f"{path.name} imports {err.name!r}: bz is bz_lightning here; replace 'bz.' with "
                                "'bz_lightning.' in its imports (e.g. from bz_lightning.config import "
                                "get_config_manager)") from err
        raise
    missing = [name for name in REQUIRED_NAMES if getattr(module, name, None) is None]
    if missing:
        raise BzConfigError(f"{path.name} defines no {', '.join(missing)}; a bz project's train.py defines "
                            f"{', '.join(REQUIRED_NAMES)} (and optionally {', '.join(OPTIONAL_NAMES)})")
    hyperparameters = getattr(module, "hyperparameters", None)
    training = TrainingSpecification(
        model=module.model, loss_fn=module.loss_fn, optimizer=module.optimizer,
        training_loader=module.training_loader, validation_loader=getattr(module, "validation_loader", None),
        hyperparameters=dict(hyperparameters) if hyperparameters is not None else {},
    )
    return training, module


def run_training(args: argparse.Namespace) -> int:
    """``bz train``: train the project in the working directory (see the module docstring).

    ``args``: ``config`` (a path or ``None``), ``epochs`` and ``device`` (``None``: the
    config's), ``resume`` (``auto``, ``never``, ``must``).

    Raises:
        BzConfigError: a missing or malformed config file, a bad value, an unknown plugin or
            metric, a ``train.py`` that does not define what bz trains (``bz`` exits 2).
    """
    manager, config, overrides = prepare_training(args)
    output_dir = _new_output_dir()
    _configure_logging(output_dir)
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, default=repr) + "\n")
    for key in ("model", "loss_fn", "optimizer"):
        if key in config:
            log.warning("%s: %r in the config is not used; train.py defines the %s", manager.source, key, key)
    with use_config_manager(manager):  # train.py, its plugins and its model read this config
        spec, module = load_training_specification(PROJECT_SCRIPT)
        metrics = load_metrics_from_config(manager, module)
        plugins = load_plugins_from_config(manager, spec, output_dir=output_dir)
        own = getattr(module, "hyperparameters", None) is not None
        hyperparameters = spec.hyperparameters if own else manager.get_hyperparameters()
        result = _train(spec, plugins, metrics, hyperparameters, config, args.resume)
    from bz_lightning.cli.train import record_run

    optimized = "val_loss" if spec.validation_loader is not None else "train_loss"
    shown = not result.reused and any(p.shows_progress for p in plugins)  # the console's summary
    record_run(result, status="complete", optimized_metric=optimized, output_dir=output_dir, overrides=overrides,
               summary_shown=shown)
    return 0


def prepare_training(args: argparse.Namespace) -> tuple[ConfigManager, dict[str, Any], list[str]]:
    """What ``bz train`` checks before ``train.py`` runs: the config file and its values (with
    ``--epochs`` / ``--device`` applied), plugin and metric names, and that ``train.py``
    exists. Returns the manager ``train.py`` will read, the config and the overrides (as
    ``key=value``). Writes nothing.

    Raises:
        BzConfigError: as ``run_training``.
    """
    manager = ConfigManager(args.config)
    try:
        config: dict[str, Any] = dict(manager.load())
    except FileNotFoundError as err:
        raise BzConfigError(f"{err.filename}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise BzConfigError(str(err)) from None
    overrides = _apply_overrides(config, args)
    if overrides:
        manager = ConfigManager.from_mapping(config, manager.source or "the config")
    check_plugin_names(manager)
    check_metrics(manager)
    if not Path(PROJECT_SCRIPT).is_file():
        raise BzConfigError(f"no {PROJECT_SCRIPT} in {Path.cwd()}: run bz train in a bz project's directory "
                            "(bz init --layout bz writes one)")
    return manager, config, overrides


def _train(spec: TrainingSpecification, plugins: list[Any], metrics: list[Any], hyperparameters: dict[str, Any],
           config: dict[str, Any], resume: str) -> Any:
    import lightning.pytorch  # noqa: F401  (it gives its logger a handler of its own when imported)

    from bz_lightning.trainer import Trainer

    # As bz-train does: the root's handlers print and file Lightning's records already.
    logging.getLogger("lightning").handlers.clear()
    trainer = Trainer()
    for plugin in plugins:
        trainer.add_plugin(plugin)
    training = config["training"]
    return trainer.train(
        spec.model, spec.optimizer, spec.loss_fn, spec.training_loader, spec.validation_loader,
        device=training["device"], epochs=training["epochs"], compile=training["compile"],
        checkpoint_interval=training["checkpoint_interval"], metrics=metrics, hyperparameters=hyperparameters,
        # What defines the run: the config (epochs, intervals and output places aside, see
        # IGNORED_CONFIG_KEYS) and the project's own code, which builds the data and model.
        config={"bz_config": config, "project_code": _project_code(Path.cwd())},
        runs_root=RUNS_DIR, resume=resume,  # type: ignore[arg-type]
    )


def _apply_overrides(config: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """``--epochs`` / ``--device`` into the config's training values; returns them as
    ``key=value`` for the record."""
    overrides = []
    if args.config is not None:
        overrides.append(f"config={args.config}")
    if args.epochs is not None:
        if args.epochs < 1:
            raise BzConfigError(f"--epochs {args.epochs}: expected an integer >= 1")
        config["training"]["epochs"] = args.epochs
        overrides.append(f"epochs={args.epochs}")
    if args.device is not None:
        if not _is_device(args.device):
            raise BzConfigError(f"--device {args.device}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        config["training"]["device"] = args.device
        overrides.append(f"device={args.device}")
    return overrides


def _new_output_dir() -> Path:
    """``outputs/train/runs/<date>_<time>_<pid>``, where bz-train puts a run's record (the
    process id keeps two runs started in the same second apart, as bz-train's own does)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path("outputs") / TASK_NAME / "runs" / f"{stamp}_{os.getpid()}"
    path.mkdir(parents=True)
    return path


def _configure_logging(output_dir: Path) -> None:
    """Hydra's job logging, as bz-train has it: records to stdout and to ``train.log``."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    conf = OmegaConf.load(str(files("hydra.conf").joinpath("hydra/job_logging/default.yaml")))
    conf.handlers.file.filename = str(output_dir / "train.log")
    logging.config.dictConfig(OmegaConf.to_container(conf, resolve=True))  # type: ignore[arg-type]


def _project_code(root: Path) -> dict[str, str]:
    """SHA-256 of every module imported from the project directory (``train.py``, its
    ``model.py``...), by path: a change to the project's code is another run."""
    root = root.resolve()
    digests = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not os.path.isabs(file):  # some generated modules name no real file
            continue
        path = Path(file).resolve()
        if path.suffix != ".py" or root not in path.parents or not path.is_file():
            continue
        folders = path.relative_to(root).parent.parts  # a virtualenv kept in the project is not its code
        if not any(part.startswith(".") or part == "site-packages" for part in folders):
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(digests.items()))
