"""Weights on a split: the test pass after training (``test_after_fit``), and the split
loaders and evaluation ``bz validate --split`` and ``bz predict`` share.

torch and Lightning are imported inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bz_lightning.data import SPLITS
from bz_lightning.errors import BzCheckpointError, BzConfigError

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["EVALUATED_SPLITS", "BEST_CHECKPOINT", "split_loader", "evaluate", "best_checkpoint_callback",
           "test_after_fit"]

log = logging.getLogger("bz_lightning.cli")

#: Splits ``bz validate`` evaluates: ``val`` with ``Trainer.validate``, ``test`` with ``Trainer.test``.
EVALUATED_SPLITS = ("val", "test")
#: The file ``test_weights=best`` keeps beside the run's ``last.ckpt``.
BEST_CHECKPOINT = "best.ckpt"
# The DataModule stage that prepares each split.
_STAGES = {"train": "fit", "val": "validate", "test": "test"}


def split_loader(datamodule: Any, split: str) -> Any:
    """The DataLoader of ``split`` (``train``, ``val`` or ``test``) of a built DataModule,
    after ``prepare_data`` and ``setup``, never shuffled. Bundled DataModules give every
    split unshuffled (``split_dataloader``); another DataModule gives its
    ``<split>_dataloader()``, rebuilt without shuffling if it shuffles.

    Raises:
        BzConfigError: an unknown split, or a DataModule without that split.
    """
    if split not in SPLITS:
        raise BzConfigError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    datamodule.prepare_data()
    datamodule.setup(_STAGES[split])
    if hasattr(datamodule, "split_dataloader"):
        return datamodule.split_dataloader(split)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        loader = getattr(datamodule, f"{split}_dataloader")()
    except (MisconfigurationException, NotImplementedError, AttributeError):
        raise BzConfigError(f"data ({type(datamodule).__name__}) has no {split} split: it does not implement "
                            f"{split}_dataloader()") from None
    from torch.utils.data import DataLoader, RandomSampler

    if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
        # A shuffled training loader: rows would not be samples 0..N-1 in order.
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False,
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn)
    return loader


def _evaluation_trainer(device: str) -> pl.Trainer:
    import lightning.pytorch as pl

    from bz_lightning.trainer import lightning_device_args

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **lightning_device_args(device))


def evaluate(module: pl.LightningModule, loader: Any, split: str, device: str) -> dict[str, float]:
    """``module`` on ``loader`` with a fresh ``lightning.Trainer``: ``validate`` for ``val``
    (``val_*`` values), ``test`` for ``test`` (``test_*``)."""
    trainer = _evaluation_trainer(device)
    run = trainer.test if split == "test" else trainer.validate
    (results,) = run(module, dataloaders=loader, verbose=False)
    return {name: float(value) for name, value in results.items()}


def best_checkpoint_callback(monitor: str) -> pl.Callback:
    """A ``ModelCheckpoint`` keeping the weights of the epoch with the best ``monitor`` as
    ``best.ckpt`` in the run's checkpoint directory (beside ``last.ckpt``); max for
    accuracy-like names, min for losses and errors, as sweeps rank them."""
    import warnings

    from lightning.pytorch.callbacks import ModelCheckpoint

    from bz_lightning.checkpointing.callbacks import ResumeCheckpoint
    from bz_lightning.cli.summary import higher_is_better

    class BestCheckpoint(ModelCheckpoint):
        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            # The run's directory is known once bz's checkpoint callbacks are in place.
            resume = next((c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)  # type: ignore[attr-defined]
            if resume is not None:
                self.dirpath = resume.dirpath
            with warnings.catch_warnings():  # last.ckpt lives there: of course it is not empty
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
                super().setup(trainer, pl_module, stage)

    return BestCheckpoint(monitor=monitor, mode="max" if higher_is_better(monitor) else "min",
                          filename=BEST_CHECKPOINT[: -len(".ckpt")], save_top_k=1, enable_version_counter=False,
                          auto_insert_metric_name=False)


def test_after_fit(values: Mapping[str, Any], result: Any, datamodule: Any, model: Any, loss_fn: Any,
                   metrics: list[Any]) -> dict[str, Any]:
    """Evaluate the run's ``test_weights`` on the data's test split with
    ``lightning.Trainer.test``; returns ``{"metrics": {test_*: value}, "weights": ...,
    "checkpoint": path or None, "epoch": n or None}``.

    ``best``: the weights in ``<checkpoint_dir>/best.ckpt`` (read as tensors only);
    ``last``: the weights training ended with (from ``last.ckpt`` when the run had already
    finished and nothing was trained now).

    Raises:
        BzCheckpointError: the checkpoint to test is missing or does not fit the model.
        BzConfigError: the data has no test split.
    """
    from bz_lightning.cli._build import instantiate
    from bz_lightning.cli._checkpoint import load_model_weights, read_checkpoint
    from bz_lightning.module import BzModule

    weights = values["test_weights"]
    module = result.module
    path: str | None = None
    epoch: int | None = None
    if weights == "best" or module is None:
        if result.checkpoint_dir is None:
            raise BzCheckpointError(f"test_weights={weights}: this run kept no checkpoints to test "
                                    "(a debug run keeps none); use test_weights=last")
        path = str(Path(result.checkpoint_dir) / (BEST_CHECKPOINT if weights == "best" else "last.ckpt"))
        if not Path(path).is_file():
            raise BzCheckpointError(
                f"test_weights={weights}: {path} does not exist (no epoch logged {values['optimized_metric']}?); "
                "use test_weights=last to test the weights training ended with")
        checkpoint = read_checkpoint(path)
        if weights == "best":
            _check_monitor(path, checkpoint, values["optimized_metric"])
        if module is None:
            module = BzModule(model, loss_fn, instantiate("optimizer", values["optimizer"]), metrics=metrics)
        load_model_weights(path, checkpoint, module.model, values["model"]["_target_"])
        # Lightning stores the epoch the checkpoint was saved in (0-based); bz counts from 1.
        epoch = int(checkpoint["epoch"]) + 1 if isinstance(checkpoint.get("epoch"), int) else None
    loader = split_loader(datamodule, "test")
    tested = evaluate(module, loader, "test", values["device"])
    which = f"{weights} weights" + (f" (epoch {epoch}, {path})" if path else "")
    log.info("test pass on %s: %s", which, "  ".join(f"{k} {v:.4f}" for k, v in tested.items()))
    return {"metrics": tested, "weights": weights, "checkpoint": path, "epoch": epoch}


def _check_monitor(path: str, checkpoint: Mapping[str, Any], optimized_metric: str) -> None:
    """``best.ckpt`` is best by the metric its ``ModelCheckpoint`` monitored, which the run
    signature does not cover (``optimized_metric`` is not part of it): a finished run asked
    again with another ``optimized_metric`` must not present the old best as the new one."""
    states = checkpoint.get("callbacks")
    monitors = [state.get("monitor") for state in (states.values() if isinstance(states, Mapping) else [])
                if isinstance(state, Mapping) and "best_model_path" in state]
    if optimized_metric not in monitors:
        kept = ", ".join(str(m) for m in monitors) or "no metric it names"
        raise BzCheckpointError(
            f"test_weights=best: {path} is the best epoch by {kept}, not by optimized_metric={optimized_metric}; "
            "use test_weights=last, or resume=never to train again keeping the best by it")
