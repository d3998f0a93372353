"""``ConsoleOutPlugin``: progress bars, a line per epoch and an end-of-run summary."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any, ClassVar

from bz_lightning.context import PluginContext, epoch_values, mean, running_stats
from bz_lightning.errors import BzConfigError
from bz_lightning.plugins.base import Plugin

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["ConsoleOutPlugin"]


class ConsoleOutPlugin(Plugin):
    """Shows training progress on the console.

    On an interactive terminal the training and validation loops get tqdm progress bars
    showing the running mean loss and metrics of the loop so far. When the output is
    not a terminal (CI, a log file) the bars are replaced by plain lines, so the log holds
    no carriage returns::

        epoch 1/2  train 2/3  loss 1.1021  accuracy 0.4062
        epoch 1/2  train 3/3  loss 1.0874  accuracy 0.4375
        epoch 1/2  val 3/3  loss 1.0412  accuracy 0.5000
        epoch 1/2  train_loss 1.0874  train_accuracy 0.4375  val_loss 1.0412  val_accuracy 0.5000  time 0.21s

    Every epoch ends with one summary line like the last one, and the run with a summary:
    epochs trained, total time, final values, whether a plugin stopped the run, and every
    plugin failure, checkpoint write failure, skipped batch and warning recorded in
    ``context.extra``.

    Epoch numbers are counted from 1 for humans (``context.epoch`` counts from 0), out of
    the trainer's ``max_epochs``.

    Lightning's own progress bar is switched off while it runs (``shows_progress``), also
    under a plain ``lightning.Trainer``, so nothing is shown twice.

    Args:
        training_data_len: training batches per epoch (the bar's length).
        validation_data_len: validation batches per epoch (0: unknown).
        update_interval: refresh the bar, or print a line, every this many batches (and at
            a loop's last batch). The running loss and metrics are read only on those
            batches, so a larger interval costs less.
        stream: where to write (default: ``sys.stdout`` at the time of writing).
        interactive: bars (``True``) or plain lines (``False``); default: bars when
            ``stream.isatty()``.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> plugin = ConsoleOutPlugin(training_data_len=4, stream=out)
        >>> ctx = PluginContext(epoch=0, training_loss_total=2.0, training_batch_count=4)
        >>> for stage in ("start_training_session", "start_epoch", "end_epoch"):
        ...     plugin.run_stage(stage, ctx)
        >>> out.getvalue().splitlines()[-1].split("  ")[:2]
        ['epoch 1', 'train_loss 0.5000']
    """

    # Writes: under DDP only the global-rank-0 process prints / logs.
    rank_zero_only: ClassVar[bool] = True
    shows_progress: ClassVar[bool] = True

    def __init__(
        self,
        training_data_len: int,
        validation_data_len: int = 0,
        update_interval: int = 1,
        *,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(update_interval, int) or update_interval < 1:
            raise BzConfigError(f"ConsoleOutPlugin: update_interval must be an integer >= 1, got {update_interval!r}")
        self.training_data_len = int(training_data_len)
        self.validation_data_len = int(validation_data_len)
        self.update_interval = update_interval
        self.stream = stream
        self.interactive = interactive
        self._training_bar: tqdm | None = None
        self._validation_bar: tqdm | None = None
        self.training_start_time: float | None = None
        self._epoch_start_time = 0.0
        self._max_epochs: int | None = None
        self._epochs_run = 0

    def run_signature(self) -> None:
        """``None``: it only shows progress, so it is not part of the run's signature."""
        return None

    @classmethod
    def init(cls, spec: Any, update_interval: int = 1) -> ConsoleOutPlugin:
        """Build the plugin from a ``TrainingSpecification`` (uses the loaders' lengths)."""
        validation = getattr(spec, "validation_loader", None)
        return cls(len(spec.training_loader), len(validation) if validation is not None else 0, update_interval)

    # --------------------------------------------------------------------------- output
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def _is_interactive(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _print(self, line: str) -> None:
        out = self._out()
        out.write(line + "\n")
        out.flush()

    def _epoch_label(self, context: PluginContext) -> str:
        if self._max_epochs is not None:
            return f"epoch {context.epoch + 1}/{self._max_epochs}"
        return f"epoch {context.epoch + 1}"

    # --------------------------------------------------------------------------- stages
    def start_training_session(self, context: PluginContext) -> None:
        self.training_start_time = time.perf_counter()
        self._epochs_run = 0
        trainer = context.extra.get("trainer")
        max_epochs = getattr(trainer, "max_epochs", None)
        self._max_epochs = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None

    def start_epoch(self, context: PluginContext) -> None:
        self._epoch_start_time = time.perf_counter()

    def start_training_loop(self, context: PluginContext) -> None:
        self._training_bar = self._open_bar(f"{self._epoch_label(context)} train", self.training_data_len)

    def end_training_batch(self, context: PluginContext) -> None:
        self._batch_progress(context, "train", self._training_bar, self.training_data_len,
                             context.training_loss_total, context.training_batch_count)

    def end_training_loop(self, context: PluginContext) -> None:
        self._training_bar = self._close_bar(self._training_bar)

    def start_validation_loop(self, context: PluginContext) -> None:
        self._validation_bar = self._open_bar(f"{self._epoch_label(context)} val", self.validation_data_len)

    def end_validation_batch(self, context: PluginContext) -> None:
        self._batch_progress(context, "val", self._validation_bar, self.validation_data_len,
                             context.validation_loss_total, context.validation_batch_count)

    def end_validation_loop(self, context: PluginContext) -> None:
        self._validation_bar = self._close_bar(self._validation_bar)

    def _batch_progress(self, context: PluginContext, split: str, bar: tqdm | None, total: int,
                        loss_total: float, count: int) -> None:
        """Refresh ``split``'s bar (or print its line) every ``update_interval`` batches."""
        done = int(context.extra.get("batch_index", count - 1)) + 1
        if done % self.update_interval and done != total:
            return
        # No loss yet (a LightningModule whose steps return none): nothing to show, not "nan".
        values = {"loss": mean(loss_total, count)} if count else {}
        values.update(_running_metrics(context, split))
        self._progress(bar, context, split, done, total, values)

    def end_epoch(self, context: PluginContext) -> None:
        self._epochs_run += 1
        elapsed = time.perf_counter() - self._epoch_start_time
        self._print(f"{self._epoch_label(context)}  {_format_values(_logged_values(context))}  time {elapsed:.2f}s")

    def end_training_session(self, context: PluginContext) -> None:
        self._training_bar = self._close_bar(self._training_bar)
        self._validation_bar = self._close_bar(self._validation_bar)
        started = self.training_start_time
        total = time.perf_counter() - started if started is not None else 0.0
        lines = [f"training {'failed' if 'exception' in context.extra else 'finished'}: "
                 f"{self._epochs_run} epoch{'s' if self._epochs_run != 1 else ''} in {total:.2f}s"]
        if self._epochs_run:
            lines.append(f"  final  {_format_values(_logged_values(context))}")
        if context.should_stop_training:
            lines.append(f"  stopped early by a plugin after epoch {context.epoch + 1}")
        if "exception" in context.extra:
            err = context.extra["exception"]
            lines.append(f"  error: {type(err).__name__}: {err}")
        failures = context.extra.get("plugin_failures") or []
        if failures:
            lines.append(f"  plugin failures: {len(failures)}")
            lines.extend(
                f"    {f.plugin} in {getattr(f.stage, 'value', f.stage)} (epoch {f.epoch + 1}): "
                f"{type(f.error).__name__}: {f.error}"
                for f in failures
            )
        checkpoint_failures = context.extra.get("checkpoint_failures") or []
        if checkpoint_failures:
            lines.append(f"  checkpoint failures: {len(checkpoint_failures)} (training went on)")
            lines.extend(
                f"    {f.path} (epoch {f.epoch + 1}): {f.reason}" for f in checkpoint_failures
            )
        skipped = context.extra.get("skipped_batches", 0)
        if skipped:
            lines.append(f"  skipped batches: {skipped}")
        for warning in context.extra.get("warnings", []):
            lines.append(f"  warning: {warning}")
        self._print("\n".join(lines))

    # ----------------------------------------------------------------------------- bars
    def _open_bar(self, description: str, total: int) -> tqdm | None:
        if not self._is_interactive():
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total or None, desc=description, file=self._out(), leave=False,
                    dynamic_ncols=True, unit="batch")

    @staticmethod
    def _close_bar(bar: tqdm | None) -> None:
        if bar is not None:
            bar.close()
        return None

    def _progress(self, bar: tqdm | None, context: PluginContext, split: str, done: int, total: int,
                  values: dict[str, float]) -> None:
        if bar is not None:
            bar.set_postfix_str(_format_values(values), refresh=False)
            bar.update(done - bar.n)
        else:
            of = f"/{total}" if total else ""
            self._print(f"{self._epoch_label(context)}  {split} {done}{of}  {_format_values(values)}")


def _running_metrics(context: PluginContext, split: str) -> dict[str, float]:
    """The metrics over the loop's batches so far, computed only when shown.

    None under DDP: computing a metric there is a collective operation, which the other
    processes (where this plugin does not run) would never join."""
    if getattr(context.extra.get("trainer"), "world_size", 1) > 1:
        return {}
    stats = running_stats(context, split)
    return dict(stats.metric_values()) if stats is not None and stats.count else {}


def _logged_values(context: PluginContext) -> dict[str, float]:
    """``train_loss``, ``train_<metric>``, ``val_loss``, ``val_<metric>``: Lightning's log names."""
    return epoch_values(context, train="train_", val="val_")


def _format_values(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in values.items())
