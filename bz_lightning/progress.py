"""``ConsoleProgressBar``: Lightning's progress bar for terminals and log files alike.

Lightning's ``TQDMProgressBar`` redraws its line with carriage returns, which a log file
keeps as one endless line, and reads its values (``self.log(..., prog_bar=True)``) from the
device at every step. This one draws tqdm bars on a terminal and writes plain lines
elsewhere, refreshes by time (and at most every ``update_interval`` batches), and reads the
values it shows only when it refreshes. It works for any ``LightningModule``; bz's
``console_out`` plugin is a face of it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import IO, TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from bz_lightning.context import split_stats
from bz_lightning.errors import BzConfigError

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["ConsoleProgressBar", "running_values", "epoch_metrics"]

#: Seconds between refreshes when ``refresh_seconds`` is not given: a bar redraws often, a
#: log file should not fill with progress lines.
BAR_REFRESH_S = 0.5
LINE_REFRESH_S = 10.0

Values = Callable[[], Mapping[str, float]]


@dataclass
class _Loop:
    """The display of the loop in progress."""

    split: str
    total: int | float
    values: Values
    bar: tqdm | None
    refreshed_at: float
    shown: int = 0  # batches done at the last refresh
    done: int = 0


class ConsoleProgressBar(ProgressBar):
    """Progress of ``fit`` for any ``LightningModule``: bars on a terminal, plain lines in a log.

    Written without a terminal (CI, a log file), no carriage returns::

        epoch 1/2  train 2/3  loss 1.1021  accuracy 0.4062
        epoch 1/2  train 3/3  loss 1.0874  accuracy 0.4375
        epoch 1/2  val 3/3  loss 1.0412  accuracy 0.5000
        epoch 1/2  train_loss 1.0874  train_accuracy 0.4375  val_loss 1.0412  val_accuracy 0.5000  time 0.21s
        ...
        training finished: 2 epochs in 0.43s
          final  train_loss 0.9811  train_accuracy 0.5625  val_loss 0.9920  val_accuracy 0.5500

    On a terminal the training and validation loops get tqdm bars instead of the progress
    lines. The values:

    * while a loop runs (``running_values``): for a ``BzModule``, the loop's mean loss and
      metrics so far, read from the device in one transfer per refresh; for any other
      module, what it logs with ``prog_bar=True`` (Lightning's ``get_metrics``);
    * at the end of each epoch: what the module logged for this epoch, from
      ``trainer.callback_metrics`` (``epoch_metrics``: training values first, ``*_step``
      values left out, values not logged again this epoch left out). Lightning runs
      callbacks' ``on_train_epoch_end`` before the module's, so a value a module logs in its
      own ``on_train_epoch_end`` appears in the next epoch's line; log it in
      ``training_step`` (``on_epoch=True``) instead, as ``BzModule`` does its equivalent.

    A refresh happens at most every ``update_interval`` batches and at most every
    ``refresh_seconds``, and at the end of each loop; nothing is read from the device in
    between. Only the sanity check and loops outside ``fit`` are not shown.

    Args:
        update_interval: refresh at most every this many batches.
        refresh_seconds: refresh at most this often, in seconds (checked only on batches
            ``update_interval`` allows); ``None``: 0.5 s with bars, 10 s for plain lines;
            ``0``: every ``update_interval`` batches.
        stream: where to write (default: ``sys.stdout`` at the time of writing).
        interactive: bars (``True``) or plain lines (``False``); default: bars when
            ``stream.isatty()``.

    Example:
        >>> import lightning
        >>> trainer = lightning.Trainer(callbacks=[ConsoleProgressBar()])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        update_interval: int = 1,
        refresh_seconds: float | None = None,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(update_interval, bool) or not isinstance(update_interval, int) or update_interval < 1:
            raise BzConfigError(f"update_interval must be an integer >= 1, got {update_interval!r}")
        if refresh_seconds is not None and (
            isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float)) or refresh_seconds < 0
        ):
            raise BzConfigError(f"refresh_seconds must be a number >= 0 or None, got {refresh_seconds!r}")
        self.update_interval = update_interval
        self.refresh_seconds = refresh_seconds
        self.stream = stream
        self.interactive = interactive
        self._enabled = True
        self._loop: _Loop | None = None
        self._max_epochs: int | None = None
        self._epoch = 0
        self._run_started: float | None = None
        self._epoch_started = 0.0
        self._before_epoch: dict[str, Any] = {}
        #: How many epochs ended, and the values of the last one's line.
        self.epochs_done = 0
        self.last_epoch_values: dict[str, float] = {}

    # ------------------------------------------------------------ Lightning's ProgressBar
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        self._write(sep.join(map(str, args)))

    # ------------------------------------------------------------ the display, by hand
    # The Lightning hooks below drive these; ``ConsoleOutPlugin`` drives them from bz's stages.
    def start_run(self, max_epochs: int | None) -> None:
        """Training starts; epochs are shown as ``epoch N/max_epochs`` (``None``: ``epoch N``)."""
        self._run_started = monotonic()
        self._max_epochs = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None
        self.epochs_done = 0
        self.last_epoch_values = {}

    def start_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` (counted from 0) starts."""
        self._epoch = epoch
        self._epoch_started = monotonic()

    def start_loop(self, split: str, total: int | float, values: Values) -> None:
        """A loop (``"train"``, ``"val"``) of ``total`` batches (0 or inf: unknown) starts;
        ``values()`` gives its running values when a refresh shows them."""
        self.end_loop()
        bar = self._open_bar(f"{self._epoch_label()} {split}", total) if self._is_interactive() else None
        self._loop = _Loop(split, total, values, bar, monotonic())

    def batch_done(self, done: int) -> None:
        """``done`` batches of the loop are done: refresh if it is time."""
        loop = self._loop
        if loop is None:
            return
        loop.done = done
        if done - loop.shown < self.update_interval or done == loop.total:
            return  # the loop's last batch is shown by end_loop
        seconds = self._refresh_seconds()
        if seconds:
            now = monotonic()
            if now - loop.refreshed_at < seconds:
                return
            loop.refreshed_at = now
        self._refresh(loop)

    def end_loop(self) -> None:
        """The loop in progress ended: show its final values (if not shown yet), close it."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop.done and loop.done != loop.shown:
            self._refresh(loop)
        if loop.bar is not None:
            loop.bar.close()

    def end_epoch(self, values: Mapping[str, float]) -> None:
        """The epoch ended with ``values``: write its line."""
        self.end_loop()
        self.epochs_done += 1
        self.last_epoch_values = dict(values)
        elapsed = monotonic() - self._epoch_started
        self._write(f"{self._epoch_label()}  {format_values(values)}  time {elapsed:.2f}s")

    def summary_lines(self, error: BaseException | None = None, notes: tuple[str, ...] = ()) -> list[str]:
        """The end-of-run summary: epochs and time, the last epoch's values, ``notes``, the error."""
        self.end_loop()
        total = monotonic() - self._run_started if self._run_started is not None else 0.0
        n = self.epochs_done
        lines = [f"training {'failed' if error is not None else 'finished'}: {n} epoch{'s' if n != 1 else ''} "
                 f"in {total:.2f}s"]
        if n:
            lines.append(f"  final  {format_values(self.last_epoch_values)}")
        lines.extend(notes)
        if error is not None:
            lines.append(f"  error: {type(error).__name__}: {error}")
        return lines

    def write(self, line: str) -> None:
        """Write ``line`` (and a newline) to the stream."""
        self._write(line)

    # ------------------------------------------------------------ Lightning's hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self.start_run(trainer.max_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled:
            return
        self._before_epoch = dict(trainer.callback_metrics)
        self.start_epoch(trainer.current_epoch)
        self.start_loop("train", self.total_train_batches,
                        functools.partial(running_values, trainer, pl_module, "train"))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._enabled:
            self.batch_done(batch_idx + 1)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self.start_loop("val", self.total_val_batches, functools.partial(running_values, trainer, pl_module, "val"))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._enabled and self._loop is not None and self._loop.split == "val":
            self.batch_done(batch_idx + 1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and self._loop is not None and self._loop.split == "val":
            self.end_loop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Asked on every process (the bar is disabled on all but rank 0): Lightning computes
        # sync_dist values with a collective when first asked.
        metrics = trainer.callback_metrics
        if self._enabled:
            self.end_epoch(epoch_metrics(metrics, self._before_epoch))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self._write("\n".join(self.summary_lines(notes=_stop_notes(trainer))))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._enabled and self._run_started is not None:
            self._write("\n".join(self.summary_lines(exception)))

    # ------------------------------------------------------------ output
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def _is_interactive(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _refresh_seconds(self) -> float:
        if self.refresh_seconds is not None:
            return float(self.refresh_seconds)
        return BAR_REFRESH_S if self._is_interactive() else LINE_REFRESH_S

    def _write(self, line: str) -> None:
        out = self._out()
        out.write(line + "\n")
        out.flush()

    def _epoch_label(self) -> str:
        of = f"/{self._max_epochs}" if self._max_epochs is not None else ""
        return f"epoch {self._epoch + 1}{of}"

    def _open_bar(self, description: str, total: int | float) -> tqdm:
        from tqdm.auto import tqdm

        known = total if total and total != float("inf") else None
        return tqdm(total=known, desc=description, file=self._out(), leave=False, dynamic_ncols=True, unit="batch")

    def _refresh(self, loop: _Loop) -> None:
        loop.shown = loop.done
        values = format_values(loop.values())
        if loop.bar is not None:
            loop.bar.set_postfix_str(values, refresh=False)
            loop.bar.update(loop.done - loop.bar.n)
        else:
            of = f"/{loop.total}" if loop.total and loop.total != float("inf") else ""
            self._write(f"{self._epoch_label()}  {loop.split} {loop.done}{of}  {values}")


def running_values(trainer: pl.Trainer | None, module: Any, split: str) -> dict[str, float]:
    """What a loop shows while it runs: for a ``BzModule``, ``loss`` (the mean so far) and its
    metrics, read in one transfer; for any other module, Lightning's ``prog_bar`` values.

    Under DDP (the display runs in one process) a ``BzModule``'s metrics are left out:
    computing one is a collective operation the other processes would not join."""
    stats = split_stats(module, split)
    if stats is not None:
        distributed = trainer is not None and trainer.world_size > 1
        reading = stats.read(metrics=not distributed)
        return {"loss": reading.loss_mean, **(reading.metrics or {})}
    if trainer is None:
        return {}
    return {k: float(v) for k, v in trainer.progress_bar_metrics.items() if isinstance(v, (int, float))}


def epoch_metrics(metrics: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The epoch's values in Lightning's ``callback_metrics``, as the epoch line shows them.

    Left out: values that are the same object as in ``before`` (not logged again since),
    ``*_step`` values, and ``X_epoch`` where ``X`` holds the same value. Training values
    (``train*``) come first, then validation (``val*``), then the rest.
    """
    from bz_lightning._host import read_host

    before = before or {}
    fresh = {k: v for k, v in metrics.items() if before.get(k) is not v and not k.endswith("_step")}
    fresh = {k: v for k, v in fresh.items() if not (k.endswith("_epoch") and fresh.get(k[:-6]) is v)}
    order = sorted(fresh, key=lambda k: 0 if k.startswith("train") else 1 if k.startswith("val") else 2)
    scalars = [k for k in order if getattr(fresh[k], "numel", lambda: 1)() == 1]
    host = read_host([fresh[k].reshape(()) if hasattr(fresh[k], "reshape") else fresh[k] for k in scalars])
    return {k: float(v) for k, v in zip(scalars, host)}


def format_values(values: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in values.items())


def _stop_notes(trainer: pl.Trainer) -> tuple[str, ...]:
    max_epochs = trainer.max_epochs
    if trainer.should_stop and max_epochs is not None and 0 < trainer.current_epoch < max_epochs:
        return (f"  stopped early after epoch {trainer.current_epoch}",)
    return ()
