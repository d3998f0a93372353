"""``TensorBoardPlugin``: losses, metrics and hyperparameters as TensorBoard event files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from bz_lightning.context import PluginContext, epoch_values, running_stats
from bz_lightning.errors import BzConfigError
from bz_lightning.plugins.base import Plugin

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardPlugin"]


class TensorBoardPlugin(Plugin):
    """Writes a run's losses, metrics and hyperparameters for TensorBoard.

    Tags written to ``log_dir``:

    ==============================  =======================================  ==============
    tag                             value                                    step
    ==============================  =======================================  ==============
    ``loss/train_batch``            loss of every ``batch_log_interval``-th   ``epoch * training_loader_len + batch``
                                    training batch
    ``loss/train``                  mean training loss of the epoch          ``epoch``
    ``loss/validation``             mean validation loss (if validated)      ``epoch``
    ``metrics/train_<name>``        each metric on the training batches      ``epoch``
    ``metrics/validation_<name>``   each metric on the validation batches    ``epoch``
    ==============================  =======================================  ==============

    ``epoch`` and ``batch`` count from 0 (``context.epoch``, the batch index in the epoch).
    At the end of the session the hyperparameters (``context.hyperparameters``, nested
    mappings flattened to ``a.b`` keys, non-scalar values as strings) are written for the
    HParams view with the epoch tags above as its metrics, so it shows their final values.
    The writer is flushed at every epoch end and closed when the session ends, also when
    training fails. It is opened at the start of the session, so building the plugin
    writes nothing.

    Args:
        training_loader_len: training batches per epoch (for the batch step numbers).
        log_dir: the run's directory; view with ``tensorboard --logdir <parent>``.
        batch_log_interval: write ``loss/train_batch`` for batches 0, N, 2N, ... of each
            epoch (1: every batch, as bz did). An event costs far more than a training step
            of a small model, so ``bz-train`` writes every 10th.

    Example:
        >>> plugin = TensorBoardPlugin(training_loader_len=100, log_dir="runs/exp1")  # doctest: +SKIP
        >>> Trainer().add_plugin(plugin)  # doctest: +SKIP
    """

    # Writes: under DDP only the global-rank-0 process prints / logs.
    rank_zero_only: ClassVar[bool] = True

    def __init__(self, training_loader_len: int, log_dir: str = "runs/experiment", batch_log_interval: int = 1) -> None:
        super().__init__()
        if isinstance(batch_log_interval, bool) or not isinstance(batch_log_interval, int) or batch_log_interval < 1:
            raise BzConfigError(f"TensorBoardPlugin: batch_log_interval must be an int >= 1, got {batch_log_interval!r}")
        self.training_loader_len = int(training_loader_len)
        self.log_dir = str(log_dir)
        self.batch_log_interval = batch_log_interval
        self._writer: SummaryWriter | None = None
        self._final: dict[str, float] = {}
        self._previous_total = 0.0
        self._previous_count = 0

    def run_signature(self) -> None:
        """``None``: it only writes what the run reports, so it is not part of the run's signature."""
        return None

    @classmethod
    def init(cls, spec: Any, log_dir: str = "runs/experiment") -> TensorBoardPlugin:
        """Build the plugin from a ``TrainingSpecification`` (uses ``len(spec.training_loader)``)."""
        return cls(len(spec.training_loader), log_dir=log_dir)

    @property
    def writer(self) -> SummaryWriter:
        """The ``SummaryWriter``, opened on first use; assign another ``SummaryWriter`` (or an
        object with its methods, such as a mock) to replace it."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    @writer.setter
    def writer(self, writer: SummaryWriter) -> None:
        self._writer = writer

    # --------------------------------------------------------------------------- stages
    def start_training_session(self, context: PluginContext) -> None:
        self._final = {}
        _ = self.writer  # open the event file now, not at the first batch

    def start_epoch(self, context: PluginContext) -> None:
        self._previous_total = 0.0
        self._previous_count = 0

    def end_training_batch(self, context: PluginContext) -> None:
        batch = int(context.extra.get("batch_index", context.training_batch_count - 1))
        if batch % self.batch_log_interval:
            return
        step = context.epoch * self.training_loader_len + batch
        self.writer.add_scalar("loss/train_batch", self._batch_loss(context), step)

    def _batch_loss(self, context: PluginContext) -> float:
        # The module's last loss is exact (read from the device here, at the log interval,
        # with the non-finite check); for modules that keep no stats, the mean since the
        # previous written batch, from the running totals.
        stats = running_stats(context, "train")
        last = stats.read(metrics=False).last_loss if stats is not None else None
        if last is not None:
            return last
        total, count = context.training_loss_total, context.training_batch_count
        loss = (total - self._previous_total) / max(count - self._previous_count, 1)
        self._previous_total, self._previous_count = total, count
        return loss

    def end_epoch(self, context: PluginContext) -> None:
        scalars = _epoch_scalars(context)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, context.epoch)
        self._final = scalars
        self.writer.flush()

    def end_training_session(self, context: PluginContext) -> None:
        if self._writer is None:
            return
        try:
            self._write_hparams(context.hyperparameters)
        finally:
            self._writer.close()
            self._writer = None

    def _write_hparams(self, hyperparameters: Mapping[str, Any]) -> None:
        hparams = _flat_hparams(hyperparameters)
        if not hparams:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # Written into the run's own event file (not the sub-run ``add_hparams`` creates),
        # with the epoch tags as metrics, so the HParams view links to the run's scalars.
        metrics = {tag: value for tag, value in self._final.items() if math.isfinite(value)}
        file_writer = self.writer._get_file_writer()
        for summary in hparams_summary(hparams, metrics):
            file_writer.add_summary(summary)


def _epoch_scalars(context: PluginContext) -> dict[str, float]:
    """``epoch_values`` under the plugin's tags: ``loss/train``, ``metrics/validation_<m>``..."""
    tags = {"training_loss": "loss/train", "validation_loss": "loss/validation"}
    return {
        tags.get(key, "metrics/" + key.replace("training_", "train_", 1)): value
        for key, value in epoch_values(context).items()
    }


def _flat_hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become ``a.b`` keys; values TensorBoard cannot show become strings."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
