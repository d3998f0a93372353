"""``ConsoleOutPlugin``: bz's face of ``ConsoleProgressBar``: progress, a line per epoch, a summary."""

from __future__ import annotations

import functools
from typing import IO, TYPE_CHECKING, Any, ClassVar

from bz_lightning.context import PluginContext, epoch_values
from bz_lightning.errors import BzConfigError
from bz_lightning.plugins.base import Plugin

if TYPE_CHECKING:
    from bz_lightning.progress import ConsoleProgressBar

__all__ = ["ConsoleOutPlugin"]


class ConsoleOutPlugin(Plugin):
    """Shows training progress on the console, through a ``ConsoleProgressBar``.

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

    The display is Lightning's kind of progress bar (``bz_lightning.progress.ConsoleProgressBar``,
    usable on its own as a Lightning callback); this plugin drives it from bz's stages, so
    it works for any ``LightningModule`` under a ``LifecycleCallback``. The values while a
    loop runs are a ``BzModule``'s running loss and metrics (or another module's
    ``prog_bar`` values), read from the device only when the display refreshes: at most
    every ``update_interval`` batches and every ``refresh_seconds``, and at each loop's
    end. The epoch line shows what the module logged for the epoch
    (``trainer.callback_metrics``). Epoch numbers are counted from 1 for humans
    (``context.epoch`` counts from 0), out of the trainer's ``max_epochs``.

    Lightning's own progress bar is switched off while it runs (``shows_progress``), also
    under a plain ``lightning.Trainer``, so nothing is shown twice.

    Args:
        training_data_len: training batches per epoch (shown when Lightning does not know
            the number; Lightning's count includes ``limit_train_batches``).
        validation_data_len: validation batches per epoch (0: unknown); likewise.
        update_interval: refresh the bar, or print a line, at most every this many batches.
        refresh_seconds: and at most this often (seconds); ``None``: 0.5 s with bars, 10 s
            for plain lines; ``0``: every ``update_interval`` batches.
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
        refresh_seconds: float | None = None,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        super().__init__()
        from bz_lightning.progress import ConsoleProgressBar

        self.training_data_len = int(training_data_len)
        self.validation_data_len = int(validation_data_len)
        self.update_interval = update_interval
        try:
            self.bar: ConsoleProgressBar = ConsoleProgressBar(
                update_interval=update_interval, refresh_seconds=refresh_seconds, stream=stream,
                interactive=interactive)
        except BzConfigError as err:
            raise BzConfigError(f"ConsoleOutPlugin: {err}") from None
        self._before_epoch: dict[str, Any] = {}

    def run_signature(self) -> None:
        """``None``: it only shows progress, so it is not part of the run's signature."""
        return None

    @classmethod
    def init(cls, spec: Any, update_interval: int = 1) -> ConsoleOutPlugin:
        """Build the plugin from a ``TrainingSpecification`` (uses the loaders' lengths)."""
        validation = getattr(spec, "validation_loader", None)
        return cls(len(spec.training_loader), len(validation) if validation is not None else 0, update_interval)

    # The spec's attribute names, kept on the display.
    @property
    def stream(self) -> IO[str] | None:
        return self.bar.stream

    @property
    def interactive(self) -> bool | None:
        return self.bar.interactive

    @property
    def training_start_time(self) -> float | None:
        return self.bar._run_started

    # --------------------------------------------------------------------------- stages
    def start_training_session(self, context: PluginContext) -> None:
        self.bar.start_run(getattr(context.extra.get("trainer"), "max_epochs", None))

    def start_epoch(self, context: PluginContext) -> None:
        trainer = context.extra.get("trainer")
        self._before_epoch = dict(trainer.callback_metrics) if trainer is not None else {}
        self.bar.start_epoch(context.epoch)

    def start_training_loop(self, context: PluginContext) -> None:
        self._start_loop(context, "train", self.training_data_len)

    def end_training_batch(self, context: PluginContext) -> None:
        self.bar.batch_done(int(context.extra.get("batch_index", context.training_batch_count - 1)) + 1)

    def end_training_loop(self, context: PluginContext) -> None:
        self.bar.end_loop()

    def start_validation_loop(self, context: PluginContext) -> None:
        self._start_loop(context, "val", self.validation_data_len)

    def end_validation_batch(self, context: PluginContext) -> None:
        self.bar.batch_done(int(context.extra.get("batch_index", context.validation_batch_count - 1)) + 1)

    def end_validation_loop(self, context: PluginContext) -> None:
        self.bar.end_loop()

    def end_epoch(self, context: PluginContext) -> None:
        self.bar.end_epoch(self._epoch_values(context))

    def end_training_session(self, context: PluginContext) -> None:
        notes = []
        if context.should_stop_training:
            notes.append(f"  stopped early by a plugin after epoch {context.epoch + 1}")
        lines = self.bar.summary_lines(context.extra.get("exception"), tuple(notes))
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
            lines.extend(f"    {f.path} (epoch {f.epoch + 1}): {f.reason}" for f in checkpoint_failures)
        skipped = context.extra.get("skipped_batches", 0)
        if skipped:
            lines.append(f"  skipped batches: {skipped}")
        for warning in context.extra.get("warnings", []):
            lines.append(f"  warning: {warning}")
        self.bar.write("\n".join(lines))

    # --------------------------------------------------------------------------- helpers
    def _start_loop(self, context: PluginContext, split: str, length: int) -> None:
        from bz_lightning.progress import running_values

        trainer = context.extra.get("trainer")
        total: int | float = length
        if trainer is not None:  # Lightning's count knows limit_*_batches
            known = trainer.num_training_batches if split == "train" else _val_batches(trainer)
            total = known if known and known != float("inf") else length
        self.bar.start_loop(split, total,
                            functools.partial(running_values, trainer, context.extra.get("lightning_module"), split))

    def _epoch_values(self, context: PluginContext) -> dict[str, float]:
        """What the module logged for this epoch (Lightning's ``callback_metrics``); without a
        Lightning trainer (the plugin called directly), the context's epoch values."""
        trainer = context.extra.get("trainer")
        if trainer is None:
            return epoch_values(context, train="train_", val="val_")
        from bz_lightning.progress import epoch_metrics

        return epoch_metrics(trainer.callback_metrics, self._before_epoch)


def _val_batches(trainer: Any) -> int | float:
    batches = trainer.num_val_batches
    return sum(batches) if isinstance(batches, list) else batches
