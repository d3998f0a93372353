"""``BzModule``: a ``LightningModule`` around a plain model, a loss, an optimizer and metrics.

Importable on its own and usable under any ``lightning.Trainer``::

    module = BzModule(model, nn.CrossEntropyLoss(), lambda p: torch.optim.Adam(p, lr=1e-3),
                      metrics=[Accuracy()])
    lightning.Trainer(max_epochs=3, callbacks=[ModelCheckpoint(monitor="val_loss")]).fit(
        module, train_loader, val_loader)
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from bz_lightning._batch_guard import BatchErrorPolicy, FailedBatch, NonFinitePolicy, SkipBudget, SkippedBatch
from bz_lightning._nonfinite import NonFiniteGuard
from bz_lightning._split_stats import SplitReading, SplitStats
from bz_lightning.errors import BzConfigError, BzError, NonFiniteLossError

if TYPE_CHECKING:
    from bz_lightning.metrics.base import Metric

__all__ = ["BzModule", "SplitStats", "SplitReading", "OptimizerLike", "SchedulerLike"]

log = logging.getLogger("bz_lightning")

OptimizerLike = Union[torch.optim.Optimizer, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]]
SchedulerLike = Union[
    torch.optim.lr_scheduler.LRScheduler,
    torch.optim.lr_scheduler.ReduceLROnPlateau,
    Callable[[torch.optim.Optimizer], Any],
    Mapping[str, Any],
]


class BzModule(pl.LightningModule):
    """Trains ``model`` with ``loss_fn`` under Lightning.

    Args:
        model: the network; ``forward(inputs)`` returns predictions.
        loss_fn: ``loss_fn(preds, targets) -> scalar tensor``.
        optimizer: an optimizer over ``model``'s parameters, or a factory called with the
            parameters (e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``).
        scheduler: optional LR scheduler: an instance, a factory called with the optimizer,
            or a Lightning scheduler dict (``{"scheduler": ..., "interval": "step"}``).
        metrics: ``bz_lightning.metrics.Metric`` objects; each split gets its own copy.
        compile: run the forward pass through ``torch.compile``; if compiling fails, it
            falls back to eager with one warning.
        hyperparameters: plain values recorded in ``hparams`` and shown to loggers.
        on_batch_error: ``"skip"`` a training batch whose loading, forward pass or loss
            raises (no optimizer step; logged with its traceback and counted), or
            ``"raise"``.
        on_nonfinite_loss: ``"raise"``: ``NonFiniteLossError`` (epoch, batch, last finite
            loss) for a NaN/Inf training loss. No step reads its loss on the host for this:
            the losses are read where values are read anyway (every ``log_every_n_steps``
            steps with a logger, a console refresh, a TensorBoard batch scalar, the end of
            the training loop), before any checkpoint is written and at least every 1,000
            steps. Each read that finds them finite keeps a copy of the weights (in host
            memory); the read that finds a non-finite loss puts that copy back (the
            optimizer's state is not) and raises, so the weights stay finite and no
            checkpoint holds NaN. ``"skip"``: skip such a batch, under the same budget as
            failed batches; deciding that before its backward pass costs one host read per
            step (so does DDP, where the processes agree on every skip).
        max_skipped_batches: the budget: an int per run, or a float in (0, 1) as a fraction
            of one epoch's batches. One more skip raises ``BzError`` naming the first cause.

    Batches are ``(inputs, targets)`` pairs; override ``unpack_batch`` for other layouts.
    Logged per epoch: ``train_loss``, ``val_loss``, ``test_loss`` and ``<split>_<metric>``;
    ``train_loss_step`` every ``log_every_n_steps`` steps.
    """

    _forward: Callable[[Any], Any]

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], Tensor],
        optimizer: OptimizerLike,
        scheduler: SchedulerLike | None = None,
        metrics: Sequence[Metric] = (),
        *,
        compile: bool = False,
        hyperparameters: Mapping[str, Any] | None = None,
        on_batch_error: BatchErrorPolicy = "skip",
        on_nonfinite_loss: NonFinitePolicy = "raise",
        max_skipped_batches: int | float = 10,
    ) -> None:
        super().__init__()
        if on_batch_error not in ("skip", "raise"):
            raise BzConfigError(f"on_batch_error must be 'skip' or 'raise', got {on_batch_error!r}")
        if on_nonfinite_loss not in ("raise", "skip"):
            raise BzConfigError(f"on_nonfinite_loss must be 'raise' or 'skip', got {on_nonfinite_loss!r}")
        self.on_batch_error = on_batch_error
        self.on_nonfinite_loss = on_nonfinite_loss
        self.skip_budget = SkipBudget(max_skipped_batches)
        # Finds non-finite training losses without a host read per step (see training_step).
        self._guard = NonFiniteGuard()
        # The last finite training loss of earlier epochs, where each step reads its loss
        # (this epoch's is stats["train"].last_loss).
        self._last_finite_loss: Tensor | float | None = None
        # (world size, train_loss_step interval or 0, whether each step reads its loss):
        # read from the trainer in on_train_start rather than at every step; None (live
        # reads) until then.
        self._step_settings: tuple[int, int, bool] | None = None
        # Set by a training step that every DDP process skips; see optimizer_step.
        self._skip_update = False
        # What went wrong without stopping the run (NaN validation losses, batches that
        # never came), for the summary and TrainingResult.warnings.
        self._warnings: list[str] = []
        # Per epoch: its index, its number of batches, whether its values were logged.
        self._epoch = 0
        self._epoch_batches: int | float = 0
        self._train_logged = False
        if not isinstance(model, nn.Module):
            raise BzConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise BzConfigError(f"loss_fn must be callable (e.g. torch.nn.CrossEntropyLoss()), got {loss_fn!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.stats = {
            split: SplitStats(split, [copy.deepcopy(m) for m in metrics], self._guard if split == "train" else None)
            for split in ("train", "val", "test")
        }
        if hyperparameters:
            self.save_hyperparameters(dict(hyperparameters))
        self.compile_fallback: str | None = None
        # Kept out of nn.Module's registry so state_dict keys stay "model.<name>" whether or
        # not the forward pass is compiled.
        self.__dict__["_forward"] = torch.compile(model) if compile else model
        self._compiled = compile

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> BzModule:
        """A ``BzModule`` with the weights of ``checkpoint_path`` (bz's checkpoints, the
        ``ModelCheckpoint`` files of ``bz-train callbacks=[model_checkpoint]``, any
        Lightning checkpoint of a ``BzModule``).

        A checkpoint is data: it is read with ``torch.load(weights_only=True)`` and what its
        stored config names is never imported or built. So the code is yours: pass
        ``model=``, ``loss_fn=`` and ``optimizer=`` (and ``metrics=`` etc.) as to
        ``BzModule(...)``; the checkpoint's tensors are loaded into ``model`` and its
        ``hyper_parameters`` become ``hparams`` (unless ``hyperparameters=`` is given).

        Example:
            >>> module = BzModule.load_from_checkpoint(  # doctest: +SKIP
            ...     "outputs/train/runs/.../checkpoints/epoch=2-val_loss=0.1234.ckpt",
            ...     model=MLP([1, 8, 8], 10), loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam)

        Raises:
            BzConfigError: ``model``, ``loss_fn`` or ``optimizer`` missing, ``hparams_file``
                given, or ``weights_only=False`` asked for.
            BzCheckpointError: the file is missing, not a checkpoint, holds pickled code, or
                its weights do not fit ``model``.
        """
        from bz_lightning.checkpointing.io import describe_load_error, read_lightning_checkpoint
        from bz_lightning.errors import BzCheckpointError

        missing = [name for name in ("model", "loss_fn", "optimizer") if name not in kwargs]
        if missing:
            raise BzConfigError(
                f"BzModule.load_from_checkpoint needs {', '.join(f'{m}=...' for m in missing)}: a checkpoint holds "
                "weights, not the code that builds the network (what it names is never imported)"
            )
        if hparams_file is not None:
            raise BzConfigError("BzModule.load_from_checkpoint: hparams_file is not supported; pass hyperparameters=")
        if weights_only is False:
            raise BzConfigError("BzModule.load_from_checkpoint reads checkpoints with weights_only=True only")
        checkpoint = read_lightning_checkpoint(checkpoint_path, map_location=map_location)
        kwargs.setdefault("hyperparameters", checkpoint.get("hyper_parameters") or None)
        module = cls(**kwargs)
        module.on_load_checkpoint(checkpoint)
        try:
            module.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        except RuntimeError as err:
            raise BzCheckpointError(
                f"{checkpoint_path}: its weights do not fit the model given: {describe_load_error(err)}"
            ) from None
        return module

    # ----------------------------------------------------------------------------- steps
    def forward(self, inputs: Any) -> Any:
        if not self._compiled:
            return self._forward(inputs)
        try:
            return self._forward(inputs)
        except Exception as err:  # only compiler failures fall back; everything else raises
            if not _is_compiler_error(err):
                raise
            self.compile_fallback = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"torch.compile failed, training in eager mode instead ({self.compile_fallback})", stacklevel=2)
            self.__dict__["_forward"] = self.model
            self._compiled = False
            return self.model(inputs)

    def unpack_batch(self, batch: Any) -> tuple[Any, Any]:
        """Split a batch into ``(inputs, targets)``. Override for other batch layouts."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        if isinstance(batch, Mapping) and len(batch) == 2:
            return tuple(batch.values())  # type: ignore[return-value]
        raise BzConfigError(
            f"a batch must be an (inputs, targets) pair, got {_describe(batch)}; "
            "subclass BzModule and override unpack_batch(batch) for other layouts"
        )

    def _loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        """``(loss, preds, targets)`` of one batch."""
        inputs, targets = self.unpack_batch(batch)
        preds = self(inputs)
        return self.loss_fn(preds, targets), preds, targets

    def _step(self, split: str, batch: Any) -> Tensor:
        loss, preds, targets = self._loss(batch)
        self.stats[split].update(loss.detach(), preds, targets)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        error: BaseException | None = None
        loss: Tensor | None = None
        if isinstance(batch, FailedBatch):
            error = batch.error
        else:
            try:
                loss, preds, targets = self._loss(batch)
            except BzConfigError:
                raise
            except Exception as err:
                error = err
        if error is not None and self.on_batch_error == "raise":
            raise error
        world_size, log_every, each_step = self._step_settings or self._read_step_settings()
        value: Tensor | float | None = None
        if loss is not None:
            value = loss.detach()
            if each_step:
                # on_nonfinite_loss="skip" decides before backward, and DDP processes agree
                # on every skip: one host read per step. The float is what the epoch sums.
                value = value.item()
                if not math.isfinite(value):
                    error = NonFiniteLossError(self.current_epoch, batch_idx, value, self._last_finite_value())
                    if self.on_nonfinite_loss == "raise":
                        raise error
            else:
                # No host read: the guard reads the losses where values are read anyway
                # (and puts back finite weights if one was not finite).
                self._guard.observe(value, self._epoch, batch_idx)
        skip = error is not None
        if world_size > 1:  # every process skips together (one all-reduce)
            skip = self.trainer.strategy.reduce_boolean_decision(skip, all=False)
        if skip:
            self.skip_budget.record(self.current_epoch, batch_idx, error or RuntimeError("skipped on another process"))
            if world_size == 1:
                return None  # Lightning skips backward and the optimizer step
            # Under DDP every process skips together, and each must still run backward: the
            # gradient all-reduce is collective, and Lightning refuses a None step there. A
            # zero loss over every parameter gives zero gradients; optimizer_step then skips
            # the update itself.
            self._skip_update = True
            return sum((p.sum() for p in self.model.parameters() if p.requires_grad), torch.zeros((), device=self.device)) * 0.0
        assert loss is not None and value is not None
        self.stats["train"].update(value, preds, targets)
        if log_every and (self._trainer.global_step + 1) % log_every == 0:  # type: ignore[union-attr]
            # Lightning reads the logged value at this step anyway: check the losses first.
            self._guard.check()
            # One self.log per log interval instead of per step: it costs ~1,900 Python calls.
            self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False)
        elif self._guard.due:
            self._guard.check()
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        world_size = (self._step_settings or self._read_step_settings())[0]
        if world_size == 1 or optimizer_closure is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return

        def closure() -> Any:
            loss = optimizer_closure()  # the training step and backward, on every process
            if self._skip_update:
                raise _SkipUpdate  # leaves optimizer.step before it changes anything
            return loss

        try:
            super().optimizer_step(epoch, batch_idx, optimizer, closure)
        except _SkipUpdate:
            self._skip_update = False

    def _read_step_settings(self) -> tuple[int, int, bool]:
        """(world size, interval of ``train_loss_step`` or 0 when nothing would record it,
        whether each step reads its loss on the host: under ``on_nonfinite_loss="skip"``
        and DDP)."""
        trainer = self._trainer
        each_step = self.on_nonfinite_loss == "skip"
        if trainer is None:
            return 1, 0, each_step
        every = getattr(trainer, "log_every_n_steps", 0)  # set by Lightning's logger connector
        return trainer.world_size, every if every and trainer.loggers else 0, each_step or trainer.world_size > 1

    def _last_finite_value(self) -> float | None:
        # Only finite losses reach stats["train"]; before this epoch's first, the last of earlier epochs.
        last = self.stats["train"].last_loss
        if last is None:
            last = self._last_finite_loss
        return None if last is None else float(last)

    @property
    def skipped_batches(self) -> int:
        """How many training batches were skipped in this run."""
        return len(self.skip_budget.skipped)

    @property
    def run_warnings(self) -> list[str]:
        """Fallbacks and problems that did not stop this run, for its summary and ``TrainingResult``."""
        fallback = [f"torch.compile fell back to eager: {self.compile_fallback}"] if self.compile_fallback else []
        return fallback + self._warnings

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self._warnings.append(message)

    def loader_ended_early(self, produced: int, expected: int | None) -> None:
        """The training loader stopped after an error, before the end of the epoch: a
        generator or an ``IterableDataset`` cannot go on once it raised. Say how many
        batches never came and charge them to the skip budget."""
        epoch = self.current_epoch + 1
        if expected is None:
            self._warn(f"epoch {epoch}: the training loader stopped after {produced} batches because it raised "
                       "(a generator or an IterableDataset cannot go on after an error); the rest of the epoch never "
                       "came, how many batches is unknown (the loader has no len())")
            return
        missing = expected - produced
        self._warn(f"epoch {epoch}: the training loader stopped after {produced} of {expected} batches because it "
                   f"raised (a generator or an IterableDataset cannot go on after an error); {missing} batches never "
                   "came")
        self.skip_budget.record_missing(missing)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Whoever writes a checkpoint (bz, ModelCheckpoint, SIGTERM): never one after a
        # non-finite loss.
        self._guard.check()
        # The skip budget is per run: batches skipped before an interruption still count.
        checkpoint["bz_skipped_batches"] = [[s.epoch, s.batch, s.reason, s.traceback] for s in self.skip_budget.skipped]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("bz_skipped_batches") or []
        self.skip_budget.skipped = [SkippedBatch(int(e), int(b), str(r), str(t)) for e, b, r, t in saved]

    def on_train_start(self) -> None:
        num_batches = self.trainer.num_training_batches
        self.skip_budget.resolve(num_batches)
        self._step_settings = self._read_step_settings()
        self._guard.reset()  # a new fit: nothing unread, nothing reported
        # A run resumed mid-epoch continues that epoch without on_train_epoch_start.
        self._epoch, self._epoch_batches, self._train_logged = self.current_epoch, num_batches, False
        if not self._step_settings[2]:  # the guard, not a read per step, finds non-finite losses
            self._guard.watch([*self.parameters(), *self.buffers()], lambda: self.trainer.global_step)

    def on_train_end(self) -> None:
        self._step_settings = None

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        inputs = self.unpack_batch(batch)[0] if isinstance(batch, (tuple, list, Mapping)) else batch
        return self(inputs)

    # ------------------------------------------------------------------- epoch bookkeeping
    def on_train_epoch_start(self) -> None:
        train = self.stats["train"]
        if train.last_loss is not None:
            self._last_finite_loss = train.last_loss
        train.reset()
        self._epoch = self.current_epoch
        self._epoch_batches = self.trainer.num_training_batches
        self._train_logged = False

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The training loop's values are final after its last batch. Logged now rather than in
        # on_train_epoch_end, which Lightning calls after the callbacks' on_train_epoch_end,
        # every callback (and bz's end_epoch stage) finds them in trainer.callback_metrics.
        progress = self._trainer.fit_loop.epoch_loop.batch_progress  # type: ignore[union-attr]
        if progress.is_last_batch or progress.current.ready == self._epoch_batches:
            self._log_train()


    def on_validation_epoch_start(self) -> None:
        trainer = self.trainer
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._check_trained()  # before validating a model that trained on nothing
        self.stats["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.stats["test"].reset()

    def _check_trained(self) -> None:
        """An epoch whose training loop ended without one trained batch is an error, not a
        success: every batch failed, or the loader had nothing (a spent one-shot iterator)."""
        if self.stats["train"].count:
            return
        failed = [s for s in self.skip_budget.skipped if s.epoch == self.current_epoch]
        why = (f"all {len(failed)} of its batches failed (the first with {failed[0].reason})" if failed else
               "the training loader yielded no batch (a one-shot iterator is empty after the first epoch)")
        raise BzError(f"epoch {self.current_epoch + 1} trained no batch: {why}")

    def on_train_epoch_end(self) -> None:
        self._check_trained()
        self._log_train()  # when the loop ended early (max_steps), or its last batch was not seen

    def _log_train(self) -> None:
        if self._train_logged:
            return
        self._train_logged = True
        self._log_split("train")  # reads the values and the non-finite flag in one transfer
        self._guard.check()  # a no-op unless no batch was counted (all skipped)
        if self.skip_budget.skipped:
            # Every process skips the same steps (a batch failing on one is skipped by all):
            # each counts them all, so the processes' maximum is that count.
            self.log("skipped_batches", float(self.skipped_batches), sync_dist=True, reduce_fx="max",
                     on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        val = self.stats["val"]
        if val.count and val.nonfinite_batches:
            self._warn(f"epoch {self.current_epoch + 1}: {val.nonfinite_batches} of {val.count} validation batches "
                       "gave a NaN or infinite loss (non-finite validation data, or a model that overflows on it); "
                       "val_loss is not finite")
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def _log_split(self, split: str) -> None:
        stats = self.stats[split]
        if not stats.count:
            return
        # The loss is a local mean, averaged over the processes by Lightning (each process has
        # as many batches: the distributed sampler pads). Built-in metrics are all-process
        # values already (torchmetrics' compute() reduces their states): averaging equal
        # values keeps them, and without sync_dist Lightning warns on every epoch-level value
        # under DDP; a metric of the user's own that computes a local value is averaged too.
        values = stats.logged_values()
        loss_key = f"{split}_loss"
        # As epoch values (also from on_train_batch_end), one value each: batch_size=1.
        self.log(loss_key, values.pop(loss_key), sync_dist=True, on_step=False, on_epoch=True, batch_size=1)
        if values:
            self.log_dict(values, sync_dist=True, on_step=False, on_epoch=True, batch_size=1)

    # ----------------------------------------------------------------------- optimization
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            if not callable(optimizer):
                raise BzConfigError(
                    f"optimizer must be a torch.optim.Optimizer or a factory taking parameters, got {optimizer!r}"
                )
            optimizer = optimizer(self.model.parameters())
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise BzConfigError(
                    f"the optimizer factory returned {type(optimizer).__name__}, expected a torch.optim.Optimizer"
                )
        if self.scheduler is None:
            return optimizer
        config: dict[str, Any] = (
            dict(self.scheduler) if isinstance(self.scheduler, Mapping) else {"scheduler": self.scheduler}
        )
        scheduler = config["scheduler"]
        if not hasattr(scheduler, "step") and callable(scheduler):
            config["scheduler"] = scheduler(optimizer)
        if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            config.setdefault("monitor", "val_loss" if self.trainer.val_dataloaders is not None else "train_loss")
        return {"optimizer": optimizer, "lr_scheduler": config}


class _SkipUpdate(Exception):
    """Raised from the optimizer closure of a step every DDP process skips."""


def _is_compiler_error(err: BaseException) -> bool:
    module = type(err).__module__
    return module.startswith(("torch._dynamo", "torch._inductor")) or "CppCompileError" in type(err).__name__


def _describe(batch: Any) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return f"a {type(batch).__name__}"
