"""``bz-train``: compose a run with Hydra, check it, build it, train it, record it.

    bz-train                                     # MLP on scikit-learn's digits
    bz-train experiment=mnist data.root=DIR      # small CNN on MNIST
    bz-train -m optimizer.lr=1e-3,1e-2 model=mlp,cnn

Config lives in ``bz_lightning/conf`` (shipped in the wheel), plus ``./conf`` of the
working directory and ``--config-dir``. The composed config is validated against the
schemas in ``bz_lightning.config`` before any data or model is built.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bz_lightning.cli._launch import exit_with, prepare_argv, preflight
from bz_lightning.errors import BzConfigError

__all__ = ["main", "train", "METRICS_FILE"]

log = logging.getLogger("bz_lightning.cli")

METRICS_FILE = "metrics.json"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the run ``cfg`` describes; returns what is written to ``metrics.json``.

    Raises:
        BzConfigError: the config is invalid (before anything is built) or describes
            something that cannot be built.
    """
    from bz_lightning.cli._build import CONFIG_KEY, build_metrics, build_plugins, instantiate, lightning_kwargs
    from bz_lightning.cli._validate import validate_config

    values = validate_config(cfg)
    output_dir = Path(values["paths"]["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    if values["print_config"]:
        print(OmegaConf.to_yaml(values), flush=True)
    OmegaConf.save(values, output_dir / "config.yaml")
    metrics = build_metrics(values["metrics"])

    import lightning.pytorch as pl

    from bz_lightning.trainer import Trainer

    if values["seed"] is not None:
        pl.seed_everything(values["seed"], workers=True)
    datamodule = instantiate("data", values["data"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    model = instantiate("model", values["model"])
    optimizer = instantiate("optimizer", values["optimizer"])
    scheduler = instantiate("scheduler", values["scheduler"]) if values.get("scheduler") else None
    loss_fn = instantiate("loss", values["loss"])

    trainer = Trainer()
    for plugin in build_plugins(values["plugins"], len(train_loader), len(val_loader)):
        trainer.add_plugin(plugin)
    result = trainer.train(
        model, optimizer, loss_fn, train_loader, val_loader,
        device=values["device"],
        epochs=values["epochs"],
        compile=values["compile"],
        checkpoint_interval=values["checkpoint_interval"],
        metrics=metrics,
        # The resolved config rides along in checkpoints, so `bz validate` can rebuild the run.
        hyperparameters={**values["hyperparameters"], CONFIG_KEY: values},
        scheduler=scheduler,
        plugin_errors=values["trainer"]["plugin_errors"],
        checkpoint_dir=str(output_dir / "checkpoints"),
        **lightning_kwargs(values["trainer"]),
    )
    record = {
        "metrics": {k: _finite(v) for k, v in result.metrics.items()},
        "optimized_metric": values["optimized_metric"],
        "epochs": result.epochs_completed,
        "duration_s": round(result.duration_s, 3),
        "stopped_early": result.stopped_early,
        "plugin_failures": len(result.plugin_failures),
        "overrides": _overrides(),
        "output_dir": str(output_dir),
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(_final_line(record), flush=True)
    return record


# An absolute path: the configs ship inside the package, wherever it is installed.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task: one job. Returns ``optimized_metric`` for sweepers such as Optuna."""
    try:
        record = train(cfg)
    except BzConfigError as err:
        exit_with(err)
    wanted = record["optimized_metric"]
    return record["metrics"].get(wanted) if wanted else None


def main() -> None:
    """The ``bz-train`` console script."""
    # Lets a project's own `_target_: mypackage.Model` import from the directory bz-train
    # runs in, as it would with `python train.py`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.argv[1:] = prepare_argv(sys.argv[1:], cwd=os.getcwd())
    try:
        preflight(sys.argv[1:])
    except BzConfigError as err:
        exit_with(err)
    _hydra_main()


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under Hydra (tests composing in-process)
        return []


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _final_line(record: dict[str, Any]) -> str:
    shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record["metrics"].items())
    return f"final ({record['epochs']} epochs, {record['duration_s']:.1f} s): {shown}\nsaved {record['output_dir']}/{METRICS_FILE}"


if __name__ == "__main__":
    main()
