"""``bz-train``: compose a run with Hydra, check it, build it, train it, record it.

    bz-train                                     # MLP on scikit-learn's digits
    bz-train experiment=mnist data.root=DIR      # small CNN on MNIST
    bz-train -m optimizer.lr=1e-3,1e-2 model=mlp,cnn

Config lives in ``bz_lightning/conf`` (shipped in the wheel), plus ``./conf`` of the
working directory and ``--config-dir``. The composed config is validated against the
schemas in ``bz_lightning.config`` before any data or model is built.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bz_lightning._atomic import atomic_write_text, write_json
from bz_lightning._config_manager import serving_bz_train_config
from bz_lightning.cli._constants import CONF_DIR, CONFIG_NAME, METRICS_FILE
from bz_lightning.cli._launch import (
    PreparedRun,
    add_project_path,
    exit_with,
    is_ddp_child,
    multirun_job,
    preflight,
    prepare_argv,
)
from bz_lightning.errors import BzCheckpointError, BzConfigError

__all__ = ["main", "train", "record_run", "CONF_DIR", "METRICS_FILE"]

log = logging.getLogger("bz_lightning.cli")


@serving_bz_train_config
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the run ``cfg`` describes; returns what is written to ``metrics.json``.

    With ``test_after_fit``, the ``test_weights`` (best or last) are then evaluated on the
    data's test split (``lightning.Trainer.test``, on rank 0), and ``test_*`` join the metrics.

    While it runs, ``bz_lightning.config.get_config_manager()`` answers from ``cfg``, so a
    bz project's code that reads its settings that way works under bz-train too.

    Raises:
        BzConfigError: the config is invalid (before anything is built) or describes
            something that cannot be built.
    """
    from bz_lightning.cli._build import (
        CONFIG_KEY,
        build_lightning_objects,
        build_metrics,
        build_plugins,
        instantiate,
        lightning_kwargs,
    )
    from bz_lightning.cli._output import in_multirun, quiet_lightning
    from bz_lightning.cli._validate import validate_config

    values = validate_config(cfg)
    output_dir = Path(values["paths"]["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    import lightning.pytorch as pl

    # Lightning gives its logger a console handler of its own; under Hydra, whose handlers
    # print and file every record, that showed each Lightning line twice.
    logging.getLogger("lightning").handlers.clear()
    quiet_lightning()

    from bz_lightning.trainer import Trainer

    # Under DDP every process runs this function; the files of the run are written once.
    if _is_rank_zero():
        if values["print_config"] and not in_multirun():  # a sweep prints its config once (SweepConfig)
            print(OmegaConf.to_yaml(values), flush=True)
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(values))
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

    loggers = build_lightning_objects("logger", values.get("logger"))
    callbacks = build_lightning_objects("callbacks", values.get("callbacks"))

    trainer = Trainer()
    for plugin in build_plugins(values["plugins"], len(train_loader), len(val_loader)):
        trainer.add_plugin(plugin)
    if values["test_after_fit"] and values["test_weights"] == "best":
        from bz_lightning.cli._evaluate import best_checkpoint_callback

        callbacks.append(best_checkpoint_callback(values["optimized_metric"]))
    pruning = next((p for p in trainer.plugins if p.name == "OptunaPruningPlugin"), None)
    if pruning is None:
        pruning = optuna_trial_plugin(values["optimized_metric"])
        if pruning is not None:
            trainer.add_plugin(pruning)
    try:
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
            on_checkpoint_error=values["trainer"]["on_checkpoint_error"],
            on_batch_error=values["on_batch_error"],
            on_nonfinite_loss=values["on_nonfinite_loss"],
            max_skipped_batches=values["max_skipped_batches"],
            # The signature of the resolved config picks <runs_dir>/<signature>/checkpoints.
            config=run_identity(values),
            runs_root=values["paths"]["runs_dir"],
            resume=values["resume"],
            ckpt_path=values.get("ckpt_path"),
            callbacks=callbacks,
            logger=loggers or False,
            **lightning_kwargs(values["trainer"]),
        )
    except BaseException:
        _finish_wandb(loggers, exit_code=1)
        raise
    status = "pruned" if getattr(pruning, "pruned", False) else "complete"
    tested = None
    if values["test_after_fit"] and status == "complete" and _is_rank_zero():
        from bz_lightning.cli._evaluate import test_after_fit

        tested = test_after_fit(values, result, datamodule, model, loss_fn, metrics)
        result.test_metrics = tested.pop("metrics")
    if loggers and _is_rank_zero():
        log_final_metrics(loggers, result, values)  # test_* too, when a test pass ran
    # A console plugin that trained this run has printed its end-of-run summary already.
    shown = not result.reused and any(p.shows_progress for p in trainer.plugins)
    return record_run(result, status=status, optimized_metric=values["optimized_metric"], output_dir=output_dir,
                      test=tested, summary_shown=shown)


def record_run(result: Any, *, status: str, optimized_metric: str | None, output_dir: Path,
               overrides: list[str] | None = None, test: dict[str, Any] | None = None,
               summary_shown: bool = False) -> dict[str, Any]:
    """Write ``<output_dir>/metrics.json`` for a finished run (from rank 0), print where, and
    return the record. ``overrides``: the command line's (default: Hydra's).
    ``test``: which weights the test pass evaluated (``weights``, ``checkpoint``, ``epoch``);
    its values are in ``result.metrics`` as ``test_*``. ``summary_shown``: the final metrics
    were printed already (by the console plugin's end-of-run summary); otherwise a
    ``final (...)`` line prints them."""
    record = {
        "status": status,
        "metrics": {k: _finite(v) for k, v in result.metrics.items()},
        "optimized_metric": optimized_metric,
        "epochs": result.epochs_completed,
        "duration_s": round(result.duration_s, 3),
        "stopped_early": result.stopped_early,
        "plugin_failures": len(result.plugin_failures),
        "skipped_batches": len(result.skipped_batches),
        "signature": result.signature,
        "checkpoint_dir": result.checkpoint_dir,
        "resumed_from": result.resumed_from,
        "reused": result.reused,
        "overrides": _overrides() if overrides is None else overrides,
        "output_dir": str(output_dir),
    }
    if test is not None:
        record["test"] = test
    if _is_rank_zero():
        write_json(output_dir / METRICS_FILE, record)
        saved = f"saved {record['output_dir']}/{METRICS_FILE}"
        lines = [saved] if summary_shown else [_final_line(record), saved]
        if test is not None and summary_shown:  # the console's summary came before the test pass
            lines.insert(0, _test_line(record))
        print(*lines, sep="\n", flush=True)
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


def log_final_metrics(loggers: list[Any], result: Any, values: dict[str, Any]) -> None:
    """Log the run's final metrics to each Lightning logger as ``final_<name>`` (what
    ``metrics.json`` holds), and the config as hyperparameters where no fit ran to log them
    (a finished run's result reused)."""
    from bz_lightning.cli._build import CONFIG_KEY

    step = result.lightning_trainer.global_step if result.lightning_trainer is not None else 0
    final = {f"final_{k}": v for k, v in result.metrics.items() if math.isfinite(v)}
    for logger in loggers:
        if result.reused:  # what BzModule's hparams would have been
            logger.log_hyperparams({**values["hyperparameters"], CONFIG_KEY: values})
        logger.log_metrics(final, step=step)
        logger.save()
        logger.finalize("success")
    _finish_wandb(loggers, exit_code=0)


def _finish_wandb(loggers: list[Any], exit_code: int) -> None:
    """wandb keeps its run open until it is finished: its files would be written only at
    exit, and the next job of a sweep in this process would log into the same run."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish(exit_code=exit_code)


def run_identity(values: dict[str, Any]) -> dict[str, Any]:
    """What the run's signature is computed from: the resolved config, plus the study and
    trial number when this job is a trial of bz's Optuna sweeper.

    Pruning makes a trial's outcome depend on the other trials, which the config does not
    say: keyed by its config alone, a trial could reuse another trial's stopped-early result
    (and report it as complete) or a later plain run could reuse a pruned one. Keyed by the
    trial too, a trial only ever continues itself (a requeued SLURM job, a re-run sweep).
    """
    from bz_lightning.plugins.optuna_pruning import STUDY_ENV, TRIAL_ENV

    if TRIAL_ENV not in os.environ or STUDY_ENV not in os.environ:
        return values
    return {**values, "optuna_trial": {"study": os.environ[STUDY_ENV], "trial": int(os.environ[TRIAL_ENV])}}


def _job(cfg: DictConfig) -> float | None:
    """The Hydra task: one job. Returns ``optimized_metric`` for sweepers such as Optuna."""
    try:
        with multirun_job():
            record = train(cfg)
    except (BzConfigError, BzCheckpointError) as err:
        exit_with(err)
    except SystemExit as stop:
        if stop.code == 143 and _is_rank_zero():  # Preempted: say so in the job's record
            from hydra.core.hydra_config import HydraConfig

            from bz_lightning.cli.summary import record_job_end

            record_job_end(HydraConfig.get().runtime.output_dir, "preempted", stop)
        raise
    wanted = record["optimized_metric"]
    return record["metrics"].get(wanted) if wanted else None


_hydra_main = hydra.main(config_path=CONF_DIR, config_name=CONFIG_NAME, version_base="1.3")(_job)


def main() -> None:
    """The ``bz-train`` console script."""
    add_project_path()
    if sys.argv[1:] in (["--help"], ["-h"]):
        from bz_lightning.cli._help import help_text

        print(help_text(CONF_DIR, os.getcwd()), end="")
        return
    sys.argv[1:] = prepare_argv(sys.argv[1:])
    if not is_ddp_child(sys.argv[1:]):  # the process that started it checked the command line
        try:
            prepared = preflight(sys.argv[1:])
        except BzConfigError as err:
            exit_with(err)
        if isinstance(prepared, PreparedRun):  # a single run, already composed: not composed again
            prepared.run(_job)
            return
        sys.argv[1:] = prepared
    try:
        _hydra_main()
    finally:
        # A sweep that a failed job ended never reached on_multirun_end: summarize it now.
        from bz_lightning.cli.summary import finish_pending

        finish_pending()


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


def _test_line(record: dict[str, Any]) -> str:
    test = record["test"]
    which = f"{test['weights']} weights" + (f", epoch {test['epoch']}" if test.get("epoch") else "")
    shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in record["metrics"].items() if k.startswith("test_"))
    return f"test ({which}): {shown}"


def _final_line(record: dict[str, Any]) -> str:
    shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record["metrics"].items())
    epochs = f"{record['epochs']} epoch{'s' if record['epochs'] != 1 else ''}"
    if record["reused"]:
        return (f"reused the finished run {record['signature']} ({record['checkpoint_dir']}): nothing was trained; "
                f"resume=never trains it again\nfinal ({epochs}, reused): {shown}")
    return f"final ({epochs}, {record['duration_s']:.1f} s): {shown}"


if __name__ == "__main__":
    main()
