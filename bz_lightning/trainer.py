"""``Trainer``: bz's training API, with Lightning running the loop."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bz_lightning._run import as_list, code_objects, debug_options, describe_call, result_of, reuse, stored_fields
from bz_lightning.context import PluginContext
from bz_lightning.errors import BzCheckpointError, BzConfigError
from bz_lightning.plugins.base import Plugin

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from bz_lightning._batch_guard import BatchErrorPolicy, NonFinitePolicy, SkippedBatch
    from bz_lightning.bridge import LifecycleCallback, PluginErrorPolicy, PluginFailure
    from bz_lightning.checkpointing import ResumeMode
    from bz_lightning.checkpointing.failures import CheckpointErrorPolicy, CheckpointFailure
    from bz_lightning.checkpointing.run import RunCheckpoints
    from bz_lightning.metrics.base import Metric
    from bz_lightning.module import BzModule, OptimizerLike, SchedulerLike

__all__ = ["Trainer", "TrainingResult", "lightning_device_args"]

logger = logging.getLogger("bz_lightning")


@dataclass
class TrainingResult:
    """What ``Trainer.train`` returns.

    Attributes:
        context: the final ``PluginContext`` (last epoch's totals and metrics).
        training_metrics / validation_metrics: the last epoch's metric values by name.
        training_loss / validation_loss: the last epoch's mean losses (NaN without batches).
        epochs_completed: how many epochs ran in total, counting resumed ones.
        stopped_early: whether a plugin, callback or Lightning callback stopped the run.
        plugin_failures: plugin calls that raised (with tracebacks), in order.
        skipped_batches: training batches skipped under ``on_batch_error="skip"`` or
            ``on_nonfinite_loss="skip"`` (epoch, batch index, reason, traceback).
        checkpoint_failures: checkpoint (and ``result.json``) writes that failed under
            ``on_checkpoint_error="log"`` (path, epoch, error), in order.
        warnings: fallbacks that happened (e.g. ``torch.compile`` unavailable).
        module / lightning_trainer: the objects that ran, for further use.
        duration_s: wall time of ``fit``.
        signature: the run's signature when checkpointing was on (see
            ``compute_training_signature``).
        checkpoint_dir: where this run's checkpoints went, or ``None``.
        resumed_from: the checkpoint this run continued from, or ``None``.
        reused: ``True`` when the run had already finished: nothing trained, the values come
            from its ``result.json``, its final weights were loaded into the model, and
            ``module`` and ``lightning_trainer`` are ``None``.
    """

    context: PluginContext
    training_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    training_loss: float
    validation_loss: float
    epochs_completed: int
    stopped_early: bool
    plugin_failures: list[PluginFailure] = field(default_factory=list)
    skipped_batches: list[SkippedBatch] = field(default_factory=list)
    checkpoint_failures: list[CheckpointFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    module: BzModule | None = None
    lightning_trainer: pl.Trainer | None = None
    duration_s: float = 0.0
    signature: str | None = None
    checkpoint_dir: str | None = None
    resumed_from: str | None = None
    reused: bool = False

    @property
    def metrics(self) -> dict[str, float]:
        """All final values flat: ``train_loss``, ``val_loss``, ``train_<m>``, ``val_<m>``."""
        values = {"train_loss": self.training_loss}
        values.update({f"train_{k}": v for k, v in self.training_metrics.items()})
        # Whether validation ran, from its batch count: a NaN val_loss is a value to show.
        if self.context.validation_batch_count:
            values["val_loss"] = self.validation_loss
            values.update({f"val_{k}": v for k, v in self.validation_metrics.items()})
        return values


class Trainer:
    """Trains a model with plugins hooked into bz's 14 stages; Lightning runs the loop.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8)
        >>> model = nn.Linear(4, 2)
        >>> result = Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                          nn.CrossEntropyLoss(), data, device="cpu", compile=False)
        >>> result.context.training_batch_count
        4
    """

    def __init__(self) -> None:
        self.plugins: list[Plugin] = []
        self.logger = logger

    def add_plugin(self, plugin: Plugin) -> None:
        """Add ``plugin``; plugins run in the order they were added."""
        if not isinstance(plugin, Plugin):
            raise BzConfigError(
                f"add_plugin expects a bz_lightning.plugins.Plugin, got {type(plugin).__name__}"
            )
        self.plugins.append(plugin)

    def train(
        self,
        model: nn.Module,
        optimizer: OptimizerLike,
        loss_fn: Any,
        training_loader: Iterable[Any],
        validation_loader: Iterable[Any] | None = None,
        device: str | torch.device = "auto",
        epochs: int = 1,
        compile: bool = True,
        checkpoint_interval: int = 0,
        metrics: Sequence[Metric] = (),
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        scheduler: SchedulerLike | None = None,
        callbacks: Sequence[Any] = (),
        plugin_errors: PluginErrorPolicy = "log",
        checkpoint_dir: str | None = None,
        on_batch_error: BatchErrorPolicy = "skip",
        on_nonfinite_loss: NonFinitePolicy = "raise",
        max_skipped_batches: int | float = 10,
        resume: ResumeMode = "auto",
        runs_root: str | None = None,
        config: Mapping[str, Any] | None = None,
        on_checkpoint_error: CheckpointErrorPolicy = "log",
        ckpt_path: str | None = None,
        **lightning_kwargs: Any,
    ) -> TrainingResult:
        """Train ``model`` and return the final context and metrics.

        Args:
            model: the network to train.
            optimizer: an optimizer over ``model``'s parameters, or a factory taking them.
            loss_fn: ``loss_fn(preds, targets) -> scalar tensor`` (an instance such as
                ``nn.CrossEntropyLoss()``, not the class).
            training_loader: yields ``(inputs, targets)`` batches, anew for every epoch (a
                one-shot iterator such as a generator is refused when ``epochs > 1`` or
                checkpointing is on).
            validation_loader: optional; without it the validation stages do not fire.
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
            epochs: how many epochs to train (>= 1).
            compile: run the model through ``torch.compile``; falls back to eager with one
                warning where it cannot work.
            checkpoint_interval: also write ``epoch-N.ckpt`` every N epochs (0: only
                ``last.ckpt``). Checkpointing is on when this is > 0 or ``checkpoint_dir`` or
                ``runs_root`` is given; then ``last.ckpt`` is written at every epoch end and on
                SIGTERM, and a finished run is recorded so that the same call returns its
                result without training. See "Resuming and preemption" in the README.
            metrics: ``Metric`` objects, computed on training and validation batches.
            hyperparameters: shown to plugins as ``context.hyperparameters``.
            scheduler: optional LR scheduler (see ``BzModule``).
            callbacks: ``TrainingCallback`` objects and/or Lightning ``Callback`` objects.
            plugin_errors: ``"log"`` (default) or ``"raise"``; see ``LifecycleCallback``.
            checkpoint_dir: where checkpoints go, exactly; by default
                ``<runs_root>/<signature>/checkpoints``.
            on_batch_error: ``"skip"`` (default) or ``"raise"`` for a training batch whose
                loading, forward pass or loss raises; see ``BzModule``.
            on_nonfinite_loss: ``"raise"`` (default) or ``"skip"`` on a NaN/Inf loss.
            max_skipped_batches: how many skipped batches a run tolerates (an int), or a
                fraction of one epoch's batches (a float in (0, 1)); default 10.
            resume: with checkpointing on, ``"auto"`` continues from the newest readable
                checkpoint of this run, or returns the stored result of a finished run (its
                final weights loaded into ``model``, ``TrainingResult.reused`` set);
                ``"never"`` starts fresh (in a new ``<dir>-N`` sibling if old checkpoints
                exist, which are kept); ``"must"`` raises if there is nothing to continue.
            runs_root: the root of per-signature run directories (default ``runs``).
            config: the resolved run configuration; with the call's other arguments, the
                user's code and the data it defines the signature. Without it
                ``hyperparameters`` does.
            on_checkpoint_error: ``"log"`` (default): a checkpoint write that fails
                (``OSError``, e.g. a full disk, or ``BzCheckpointError``) is logged with the
                path and the error, the file there stays the last good checkpoint, the
                failure is counted in ``checkpoint_failures`` and the console summary, and
                training goes on; ``"raise"``: the error stops the run.
            ckpt_path: start from this checkpoint (weights, optimizer, epoch and loop state,
                as Lightning's ``fit(ckpt_path=...)``), unless the run has a checkpoint of its
                own to continue (a re-run of a preempted run goes on from its own). Read with
                ``torch.load(weights_only=True)``: a checkpoint is data.
            **lightning_kwargs: passed to ``lightning.Trainer`` (``precision``,
                ``gradient_clip_val``, ``accumulate_grad_batches``, ``deterministic``,
                ``logger``, ``enable_progress_bar``, ...). A debug option
                (``fast_dev_run``, ``overfit_batches``, ``limit_*_batches``) makes this a
                debug run: nothing is checkpointed, stored or reused.

        Raises:
            BzConfigError: for bad arguments, before anything trains.
            NonFiniteLossError: a NaN/Inf loss under ``on_nonfinite_loss="raise"``.
            BzError: more skipped batches than ``max_skipped_batches`` allows, or an epoch
                in which no batch trained.
            BzPluginError: a plugin failed under ``plugin_errors="raise"``.
            BzCheckpointError: ``resume="must"`` found nothing to continue from, or the
                checkpoint directory holds another signature's checkpoints.
            OSError: a checkpoint write failed under ``on_checkpoint_error="raise"``.
            Preempted: SIGTERM stopped training after saving ``last.ckpt`` (a ``SystemExit``
                with code 143; re-running the same call continues).
            Interrupted: the same for Ctrl-C, with code 130 (a ``Preempted``). A second
                Ctrl-C stops at once without saving: ``SystemExit(130)``.
        """
        from bz_lightning._check_args import check_train_args
        from bz_lightning.bridge import LifecycleCallback

        checkpointing = bool(checkpoint_interval or checkpoint_dir is not None or runs_root is not None)
        check_train_args(
            model=model, optimizer=optimizer, loss_fn=loss_fn, training_loader=training_loader,
            validation_loader=validation_loader, epochs=epochs, checkpoint_interval=checkpoint_interval,
            metrics=metrics, checkpointing=checkpointing,
        )
        device_args = lightning_device_args(device)
        if on_checkpoint_error not in ("log", "raise"):
            raise BzConfigError(f"on_checkpoint_error must be 'log' or 'raise', got {on_checkpoint_error!r}")
        user_callbacks = [*callbacks, *lightning_kwargs.pop("callbacks", [])]

        # 1. Plan the run: its signature, what it continues from, or the result it already has.
        checkpoints = None
        if checkpointing:
            checkpoints = self._plan(
                model=model, optimizer=optimizer, loss_fn=loss_fn, training_loader=training_loader,
                validation_loader=validation_loader, device=device, epochs=epochs, compile=compile,
                metrics=metrics, hyperparameters=hyperparameters, scheduler=scheduler, callbacks=user_callbacks,
                policies={"plugin_errors": plugin_errors, "on_batch_error": on_batch_error,
                          "on_nonfinite_loss": on_nonfinite_loss, "max_skipped_batches": max_skipped_batches,
                          # A run started from a checkpoint is keyed by the file's content.
                          **({"ckpt_sha256": _file_sha256(ckpt_path)} if ckpt_path is not None else {})},
                checkpoint_dir=checkpoint_dir, runs_root=runs_root, resume=resume, config=config,
                lightning_kwargs=lightning_kwargs, on_checkpoint_error=on_checkpoint_error,
            )
            if checkpoints is not None:
                reused = reuse(checkpoints, model)
                if reused is not None:
                    return reused
        start = None
        if ckpt_path is not None and (checkpoints is None or checkpoints.ckpt_path is None):
            from bz_lightning.checkpointing.io import read_lightning_checkpoint

            start = (ckpt_path, read_lightning_checkpoint(ckpt_path, map_location="cpu"))
            self.logger.info("starting from %s", ckpt_path)

        # 2. Build the module, the loaders and the callbacks.
        module = self._build_module(model, loss_fn, optimizer, scheduler, metrics, compile=compile,
                                    hyperparameters=hyperparameters, on_batch_error=on_batch_error,
                                    on_nonfinite_loss=on_nonfinite_loss, max_skipped_batches=max_skipped_batches)
        loader = self._training_loader(training_loader, module, checkpoints, guard=on_batch_error == "skip")
        bridge = LifecycleCallback(self.plugins, hyperparameters=hyperparameters, plugin_errors=plugin_errors)
        lightning_trainer = self._lightning_trainer(bridge, user_callbacks, checkpoints, checkpoint_interval,
                                                    max_epochs=epochs, device_args=device_args,
                                                    lightning_kwargs=lightning_kwargs, start=start)

        # 3. Fit.
        duration = self._fit(lightning_trainer, module, loader, validation_loader, checkpoints,
                             start_path=start[0] if start else None)

        # 4. Record it.
        result = result_of(bridge, module, lightning_trainer, duration)
        result.resumed_from = start[0] if start else None
        if checkpoints is not None:
            result.signature = checkpoints.signature
            result.checkpoint_dir = str(checkpoints.directory)
            result.resumed_from = checkpoints.ckpt_path or result.resumed_from
            result.checkpoint_failures = checkpoints.writes.failures  # the final records' writes join it
            if lightning_trainer.is_global_zero:
                checkpoints.store_result(stored_fields(result, epochs), model.state_dict())
        return result

    # ------------------------------------------------------------------ the steps
    def _plan(
        self,
        *,
        model: nn.Module,
        optimizer: OptimizerLike,
        loss_fn: Any,
        training_loader: Iterable[Any],
        validation_loader: Iterable[Any] | None,
        device: str | torch.device,
        epochs: int,
        compile: bool,
        metrics: Sequence[Metric],
        hyperparameters: Mapping[str, Any] | None,
        scheduler: SchedulerLike | None,
        callbacks: Sequence[Any],
        policies: Mapping[str, Any],
        checkpoint_dir: str | None,
        runs_root: str | None,
        resume: ResumeMode,
        config: Mapping[str, Any] | None,
        lightning_kwargs: Mapping[str, Any],
        on_checkpoint_error: CheckpointErrorPolicy,
    ) -> RunCheckpoints | None:
        """The run's checkpoints (its signature and resume plan), or ``None`` for a debug
        run, which is neither stored nor answered from storage."""
        from bz_lightning.checkpointing.fingerprint import data_fingerprint
        from bz_lightning.checkpointing.run import RunCheckpoints

        debug = debug_options(lightning_kwargs)
        if debug:
            shown = ", ".join(f"{k}={v!r}" for k, v in debug.items())
            if resume == "must":
                raise BzConfigError(f"resume='must' but this is a debug run ({shown}), which is never stored or "
                                    "resumed; drop the debug option or use resume='auto'")
            self.logger.info("debug run (%s): no checkpoints, nothing stored, no stored result reused", shown)
            return None
        call = describe_call(
            epochs=epochs, device=device, compile=compile, metrics=metrics, scheduler=scheduler,
            plugins=self.plugins, callbacks=callbacks, policies=policies, lightning_kwargs=lightning_kwargs,
            hyperparameters=hyperparameters if config is None else None,
        )
        code = code_objects(scheduler=scheduler, metrics=metrics, plugins=self.plugins, callbacks=callbacks,
                            loaders=(training_loader, validation_loader))
        data = {"training": data_fingerprint(training_loader), "validation": data_fingerprint(validation_loader)}
        return RunCheckpoints.open(
            model=model, optimizer=optimizer, loss_fn=loss_fn, config=config or {}, call=call, data=data,
            code=code, checkpoint_dir=checkpoint_dir, runs_root=runs_root, resume=resume,
            on_checkpoint_error=on_checkpoint_error,
        )

    @staticmethod
    def _build_module(model: nn.Module, loss_fn: Any, optimizer: OptimizerLike, scheduler: SchedulerLike | None,
                      metrics: Sequence[Metric], **options: Any) -> BzModule:
        from bz_lightning.module import BzModule

        return BzModule(model, loss_fn, optimizer, scheduler, metrics, **options)

    @staticmethod
    def _training_loader(loader: Iterable[Any], module: BzModule, checkpoints: RunCheckpoints | None, *,
                         guard: bool) -> Iterable[Any]:
        """The training loader as Lightning gets it: failed batches caught (``guard``) and,
        with checkpoints, each epoch's start recorded for exact mid-epoch resume."""
        from bz_lightning._batch_guard import guard_loader

        if guard:
            loader = guard_loader(loader, module.loader_ended_early)
        return checkpoints.wrap_loader(loader) if checkpoints is not None else loader

    @staticmethod
    def _lightning_trainer(bridge: LifecycleCallback, user_callbacks: Sequence[Any],
                           checkpoints: RunCheckpoints | None, checkpoint_interval: int, *, max_epochs: int,
                           device_args: Mapping[str, Any], lightning_kwargs: Mapping[str, Any],
                           start: tuple[str, dict[str, Any]] | None = None) -> pl.Trainer:
        """A ``lightning.Trainer`` with bz's callbacks around the user's: ``epoch-N.ckpt``
        first, then the bridge (which adapts Keras-style callbacks), the user's Lightning
        callbacks, and ``last.ckpt`` last. ``start``: the ``ckpt_path`` to start from and its
        content, already read, handed to the checkpoint IO so Lightning does not read it again."""
        import lightning.pytorch as pl

        lightning_callbacks = []
        for callback in user_callbacks:
            if isinstance(callback, pl.Callback):
                lightning_callbacks.append(callback)
            else:
                bridge.add_callback(callback)
        options: dict[str, Any] = {
            "max_epochs": max_epochs,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            # bz never validated before training; the bridge would hide it anyway.
            "num_sanity_val_steps": 0,
            **device_args,
            **lightning_kwargs,
        }
        first: list[pl.Callback] = []
        last: list[pl.Callback] = []
        if checkpoints is not None:
            first, last = checkpoints.callbacks(bridge, checkpoint_interval)
            # The same list the writes append to, for the end-of-run summary.
            bridge.context.extra["checkpoint_failures"] = checkpoints.writes.failures
            options["plugins"] = [checkpoints.checkpoint_io(), *as_list(lightning_kwargs.get("plugins"))]
        if start is not None:
            if checkpoints is None:
                options["plugins"] = [_start_io(), *as_list(lightning_kwargs.get("plugins"))]
            options["plugins"][0].preload(*start)  # read once, as data; Lightning restores from it
        options["callbacks"] = [*first, bridge, *lightning_callbacks, *last]
        # Lightning refuses a ModelCheckpoint or a progress bar among the callbacks when
        # checkpointing or the bar is off (bz's defaults): the user's callback turns it on.
        if any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in lightning_callbacks):
            options["enable_checkpointing"] = True
        if any(isinstance(c, pl.callbacks.ProgressBar) for c in lightning_callbacks):
            options["enable_progress_bar"] = True
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        try:
            return pl.Trainer(**options)
        except (MisconfigurationException, TypeError, ValueError) as err:
            # bz-train's trainer.* values reach Lightning unchecked by bz: its check, one line.
            detail = " ".join(str(err).split()) or type(err).__name__
            raise BzConfigError(f"lightning.Trainer refused its options (bz-train: trainer.*): {detail}") from err

    def _fit(self, lightning_trainer: pl.Trainer, module: BzModule, loader: Iterable[Any],
             validation_loader: Iterable[Any] | None, checkpoints: RunCheckpoints | None,
             start_path: str | None = None) -> float:
        """Run ``fit`` (from the run's own checkpoint, else ``start_path``); return its wall
        time. SIGTERM ends it with ``Preempted`` (exit 143)."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        started = time.perf_counter()
        with warnings.catch_warnings():
            # Without a validation loader bz simply has no validation stages; Lightning's
            # "you defined a validation_step" hint does not apply.
            warnings.filterwarnings("ignore", message=".*have no `val_dataloader`.*")
            # A skipped batch returns None from training_step; bz logs and counts it itself.
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            # bz's loader wrapper resumes mid-epoch exactly (see checkpointing.rng).
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
            try:
                own = checkpoints.ckpt_path if checkpoints else None
                lightning_trainer.fit(module, loader, validation_loader, ckpt_path=own or start_path)
            except SIGTERMException:
                # SIGTERM before bz's handler was installed: Lightning would exit with 0.
                from bz_lightning.checkpointing import Preempted

                preempted = Preempted(None, lightning_trainer.current_epoch)
                self.logger.warning("%s", preempted)
                raise preempted from None
            except SystemExit as stop:
                if checkpoints is not None and checkpoints.is_preemption(stop):
                    self.logger.warning("%s", stop)
                elif isinstance(stop.__context__, KeyboardInterrupt):
                    # Lightning ends a fit stopped by Ctrl-C with exit(1); a shell reports 130.
                    from bz_lightning.checkpointing.callbacks import INTERRUPTED_EXIT_CODE

                    raise SystemExit(INTERRUPTED_EXIT_CODE) from stop.__context__
                raise
            finally:
                if lightning_trainer.world_size > 1 and torch.distributed.is_initialized():
                    # Lightning leaves the process group up after fit; left to interpreter
                    # exit, gloo sometimes aborts the finished process ("terminate called
                    # without an active exception", exit -6). A later fit starts a new one.
                    torch.distributed.destroy_process_group()
        return time.perf_counter() - started


def lightning_device_args(device: str | torch.device) -> dict[str, Any]:
    """Map a bz ``device`` to ``lightning.Trainer``'s ``accelerator`` and ``devices``.

    >>> lightning_device_args("cuda:1")
    {'accelerator': 'gpu', 'devices': [1]}
    """
    if isinstance(device, torch.device):
        device = str(device)
    allowed = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if not isinstance(device, str):
        raise BzConfigError(f"device must be {allowed}, got {device!r}")
    kind, _, index = device.partition(":")
    if kind == "auto" and not index:
        return {"accelerator": "auto", "devices": 1}
    if kind == "cpu" and not index:
        return {"accelerator": "cpu", "devices": 1}
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise BzConfigError(f"device={device!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
        if index and int(index) >= torch.cuda.device_count():
            raise BzConfigError(
                f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        return {"accelerator": "gpu", "devices": [int(index)] if index else 1}
    if kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise BzConfigError("device='mps' but MPS is not available on this machine; use 'cpu' or 'auto'")
        return {"accelerator": "mps", "devices": 1}
    raise BzConfigError(f"device must be {allowed}, got {device!r}")


def _file_sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise BzCheckpointError(f"ckpt_path {path}: {err.strerror or err}") from None
    return digest.hexdigest()


def _start_io() -> Any:
    from bz_lightning.checkpointing.io import AtomicCheckpointIO

    return AtomicCheckpointIO()
