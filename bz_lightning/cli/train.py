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
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bz_lightning.cli._launch import exit_with, is_ddp_child, multirun_job, preflight, prepare_argv
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
    import lightning.pytorch as pl

    # Lightning gives its logger a console handler of its own; under Hydra, whose handlers
    # print and file every record, that showed each Lightning line twice.
    logging.getLogger("lightning").handlers.clear()

    from bz_lightning.trainer import Trainer

    # Under DDP every process runs this function; the files of the run are written once.
    if _is_rank_zero():
        if values["print_config"]:
            print(OmegaConf.to_yaml(values), flush=True)
        OmegaConf.save(values, output_dir / "config.yaml")
    metrics = build_metrics(values["metrics"])
    matmul_precision = values["trainer"].get("float32_matmul_precision")
    if matmul_precision is not None:  # trainer=gpu: TF32 matmuls on Ampere and later
        import torch

        torch.set_float32_matmul_precision(matmul_precision)

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
    pruning = next((p for p in trainer.plugins if p.name == "OptunaPruningPlugin"), None)
    if pruning is None:
        pruning = optuna_trial_plugin(values["optimized_metric"])
        if pruning is not None:
            trainer.add_plugin(pruning)
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
        # The signature of the resolved config picks <runs_dir>/<signature>/checkpoints.
        config=values,
        runs_root=values["paths"]["runs_dir"],
        resume=values["resume"],
        **lightning_kwargs(values["trainer"]),
    )
    record = {
        "status": "pruned" if getattr(pruning, "pruned", False) else "complete",
        "metrics": {k: _finite(v) for k, v in result.metrics.items()},
        "optimized_metric": values["optimized_metric"],
        "epochs": result.epochs_completed,
        "duration_s": round(result.duration_s, 3),
        "stopped_early": result.stopped_early,
        "plugin_failures": len(result.plugin_failures),
        "signature": result.signature,
        "checkpoint_dir": result.checkpoint_dir,
        "resumed_from": result.resumed_from,
        "reused": result.reused,
        "overrides": _overrides(),
        "output_dir": str(output_dir),
    }
    if _is_rank_zero():
        (output_dir / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        print(_final_line(record), flush=True)
    return record


def optuna_trial_plugin(optimized_metric: str | None) -> Any:
    """The ``optuna_pruning`` plugin when this job is a trial of bz's Optuna sweeper (which
    names the study and trial in ``BZ_OPTUNA_STUDY`` / ``BZ_OPTUNA_TRIAL``), else ``None``."""
    from bz_lightning.plugins.optuna_pruning import STUDY_ENV, TRIAL_ENV

    if TRIAL_ENV not in os.environ or STUDY_ENV not in os.environ:
        return None
    if not optimized_metric:
        log.warning("an Optuna trial without optimized_metric: nothing to report, no pruning")
        return None
    from bz_lightning.plugins import create_plugin

    return create_plugin("optuna_pruning", {"monitor": optimized_metric})


# An absolute path: the configs ship inside the package, wherever it is installed.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _job(cfg: DictConfig) -> float | None:
    """The Hydra task: one job. Returns ``optimized_metric`` for sweepers such as Optuna."""
    try:
        with multirun_job():
            record = train(cfg)
    except BzConfigError as err:
        exit_with(err)
    wanted = record["optimized_metric"]
    return record["metrics"].get(wanted) if wanted else None


_hydra_main = hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")(_job)


def main() -> None:
    """The ``bz-train`` console script."""
    # Lets a project's own `_target_: mypackage.Model` import from the directory bz-train
    # runs in, as it would with `python train.py`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if sys.argv[1:] in (["--help"], ["-h"]):
        from bz_lightning.cli._help import help_text

        print(help_text(CONF_DIR, os.getcwd()), end="")
        return
    sys.argv[1:] = prepare_argv(sys.argv[1:], cwd=os.getcwd())
    prepared = None
    if not is_ddp_child(sys.argv[1:]):  # the process that started it checked the command line
        try:
            prepared = preflight(sys.argv[1:])
        except BzConfigError as err:
            exit_with(err)
    if prepared is not None:  # a single run, already composed: no need to compose it again
        prepared.run(_job)
    else:
        _hydra_main()


def _is_rank_zero() -> bool:
    """Whether this is the global-rank-0 process (from RANK / LOCAL_RANK / SLURM_PROCID
    until Lightning sets the rank when training starts)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


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
