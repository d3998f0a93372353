"""``OptunaPruningPlugin``: report a trial's monitored metric to Optuna every epoch and stop
the run when Optuna's pruner says the trial is not worth finishing.

bz's Optuna sweeper (``hydra/sweeper=bz_optuna``, see ``hparams_search/optuna.yaml``)
launches every trial as a bz-train job and names the study and the trial in the job's
environment (``BZ_OPTUNA_STUDY``: the study file it wrote in the sweep directory;
``BZ_OPTUNA_TRIAL``: the trial number); bz-train then adds this plugin by itself. The
study lives in an Optuna storage that any process can open (a journal file in the sweep
directory by default), so trials may run in other processes or on other machines.

Importing this module does not import optuna or torch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bz_lightning.context import PluginContext, epoch_values
from bz_lightning.errors import BzConfigError
from bz_lightning.plugins.base import Plugin

if TYPE_CHECKING:
    import optuna

__all__ = ["OptunaPruningPlugin", "STUDY_ENV", "TRIAL_ENV", "PRUNED_ATTR", "open_storage", "monitored_value"]

#: Path of the study file (JSON: storage, study name, pruner) the sweeper wrote.
STUDY_ENV = "BZ_OPTUNA_STUDY"
#: The number of the trial this job runs.
TRIAL_ENV = "BZ_OPTUNA_TRIAL"
#: Trial user attribute set when the job pruned itself; the sweeper then tells PRUNED.
PRUNED_ATTR = "bz_pruned"


def open_storage(spec: str) -> Any:
    """An Optuna storage from the sweeper's ``storage`` spec: a database URL
    (``sqlite:///study.db``) or the path of a journal file (anything without ``://``)."""
    if "://" in spec:
        return spec
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(spec))


def monitored_value(context: PluginContext, metric: str) -> float | None:
    """The value of bz-train's ``optimized_metric`` name in ``context``: ``train_loss``,
    ``val_loss``, ``train_<metric>`` or ``val_<metric>``; ``None`` if the epoch has none."""
    return epoch_values(context, train="train_", val="val_").get(metric)


class OptunaPruningPlugin(Plugin):
    """Reports ``monitor`` to an Optuna trial at each epoch end and prunes on its pruner's word.

    At ``end_epoch``: ``trial.report(value, epoch)``; if ``trial.should_prune()``, the plugin
    sets ``context.should_stop_training`` (the run ends after this epoch, on every DDP
    process), sets ``pruned`` and marks the trial with the user attribute ``bz_pruned``, so
    the sweeper records it as PRUNED. A non-finite value is not reported (the sweeper records
    the trial as failed). Runs on the rank-0 process only.

    Args:
        study_file: the JSON file bz's sweeper wrote: ``storage``, ``study_name`` and
            ``pruner`` (a Hydra ``_target_`` node or ``null``); default ``$BZ_OPTUNA_STUDY``.
        trial_number: the trial of that study this run is; default ``$BZ_OPTUNA_TRIAL``.
        monitor: the value to report, as bz-train's ``optimized_metric`` names it
            (``val_loss``, ``val_accuracy``...).

    Example (what bz-train does for a trial; ``study.json`` comes from the sweeper)::

        trainer.add_plugin(OptunaPruningPlugin("sweep/optuna/study.json", 3, monitor="val_accuracy"))
    """

    rank_zero_only: ClassVar[bool] = True

    def __init__(self, study_file: str | None = None, trial_number: int | None = None,
                 monitor: str = "val_loss") -> None:
        super().__init__()
        study_file = study_file if study_file is not None else os.environ.get(STUDY_ENV)
        trial = trial_number if trial_number is not None else os.environ.get(TRIAL_ENV)
        if study_file is None or trial is None:
            raise BzConfigError(
                "optuna_pruning: no Optuna trial to report to; give study_file and trial_number, "
                f"or run under bz's Optuna sweeper (hparams_search=optuna), which sets {STUDY_ENV} and {TRIAL_ENV}"
            )
        self.study_file = study_file
        self.trial_number = int(trial)
        self.monitor = monitor
        self.pruned = False
        self._trial: optuna.Trial | None = None

    def start_training_session(self, context: PluginContext) -> None:
        import optuna
        from hydra.utils import instantiate

        try:
            spec = json.loads(Path(self.study_file).read_text())
        except (OSError, ValueError) as err:
            raise BzConfigError(f"optuna_pruning: cannot read the study file {self.study_file!r}: {err}") from err
        storage = optuna.storages.get_storage(open_storage(spec["storage"]))
        pruner = instantiate(spec["pruner"]) if spec.get("pruner") else None
        study = optuna.load_study(study_name=spec["study_name"], storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(spec["study_name"])
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        self._trial = optuna.Trial(study, trial_id)

    def end_epoch(self, context: PluginContext) -> None:
        if self._trial is None:
            return
        value = monitored_value(context, self.monitor)
        if value is None or not math.isfinite(value):
            self.logger.warning("epoch %d: %s is %s; not reported to Optuna", context.epoch + 1, self.monitor, value)
            return
        self._trial.report(value, step=context.epoch)
        if self._trial.should_prune():
            self.logger.info("Optuna pruned trial %d after epoch %d (%s %.4f)", self.trial_number, context.epoch + 1,
                             self.monitor, value)
            self._trial.set_user_attr(PRUNED_ATTR, True)
            self.pruned = True
            context.should_stop_training = True
