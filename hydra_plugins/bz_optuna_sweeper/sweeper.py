"""``BzOptunaSweeper``: a Hydra sweeper that runs an Optuna study whose trials can be pruned.

Hydra's own Optuna sweeper pins ``optuna<3`` and cannot prune. This one asks a current
Optuna study for trials, launches each as a job through Hydra's configured launcher, and
tells the study how each ended:

* the job's return value (bz-train returns its ``optimized_metric``) -> COMPLETE;
* the job pruned itself (bz's ``optuna_pruning`` plugin reported every epoch's value to the
  trial and stopped when the pruner said so) -> PRUNED;
* the job raised, or returned ``None`` or a non-finite value -> FAIL; the sweep goes on.

Jobs reach their trial through the environment (``hydra.job.env_set``): ``BZ_OPTUNA_STUDY``
names a JSON file in the sweep directory (storage, study name, pruner) and
``BZ_OPTUNA_TRIAL`` the trial number, so trials can run in other processes and machines
(joblib, submitit) as long as they see the storage.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.bz_optuna_sweeper.config import BzOptunaSweeperConf  # noqa: F401  (registers the config)

__all__ = ["BzOptunaSweeper", "distribution"]

log = logging.getLogger(__name__)

STUDY_FILE = "optuna/study.json"
JOURNAL_FILE = "optuna/journal.log"


def distribution(override: Override) -> Any:
    """The Optuna distribution of a Hydra sweep override (``interval``, ``range``, ``choice``).

    ``interval`` tagged ``int`` is an ``IntDistribution`` (Hydra parses interval bounds as
    floats); the tag ``log`` samples on a log scale.
    """
    import optuna.distributions as d

    value = override.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return d.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, RangeSweep) and all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
        values = range(value.start, value.stop, value.step)
        return d.IntDistribution(values[0], values[-1], step=value.step)
    if isinstance(value, (RangeSweep, ChoiceSweep)):
        return d.CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(f"{override.input_line}: bz_optuna cannot search {type(value).__name__} values")


class BzOptunaSweeper(Sweeper):
    """See the module docstring and ``BzOptunaSweeperConf``."""

    def __init__(self, direction: str, study_name: str | None, storage: str | None, n_trials: int, n_jobs: int,
                 sampler: Any, pruner: Any, params: Any) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        # Plain containers: the pruner goes to every job in the study file.
        self.sampler_cfg = _plain(sampler)
        self.pruner_cfg = _plain(pruner)
        self.params = {str(k): str(v) for k, v in (_plain(params) or {}).items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Not read here: Hydra's Sweeper interface declares both, and its validate_batch_is_legal reads them.
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from hydra.utils import instantiate

        parser = OverridesParser.create()
        search: dict[str, Any] = {}
        fixed: list[str] = []
        for override in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments)):
            if override.is_sweep_override():
                search[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
        if not search:
            raise ValueError("bz_optuna: nothing to search; set hydra.sweeper.params or give sweep overrides "
                             "such as optimizer.lr='tag(log, interval(1e-4, 1e-1))'")

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage_spec = self.storage or str((self.sweep_dir / JOURNAL_FILE).resolve())
        if "://" not in storage_spec:
            Path(storage_spec).parent.mkdir(parents=True, exist_ok=True)
        study_name = self.study_name or f"bz-{self.sweep_dir.name}"
        from bz_lightning.plugins.optuna_pruning import open_storage

        study = optuna.create_study(
            study_name=study_name, storage=open_storage(storage_spec), direction=self.direction,
            sampler=instantiate(self.sampler_cfg) if self.sampler_cfg else None,
            pruner=instantiate(self.pruner_cfg) if self.pruner_cfg else optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
        study_file = (self.sweep_dir / STUDY_FILE).resolve()
        study_file.parent.mkdir(parents=True, exist_ok=True)
        study_file.write_text(json.dumps({"storage": storage_spec, "study_name": study_name,
                                          "pruner": self.pruner_cfg, "direction": self.direction}, indent=2))
        log.info("bz_optuna: study %r (%s), %d trials, searching %s", study_name, storage_spec, self.n_trials,
                 ", ".join(search))

        job_idx = 0
        while job_idx < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - job_idx)
            trials = [study.ask(search) for _ in range(batch)]
            overrides = [self._job_overrides(trial, fixed, study_file) for trial in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret)
            job_idx += batch

        states = [t.state.name for t in study.trials]
        log.info("bz_optuna: %s", ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states))))
        has_best = _has_best(study)
        if has_best:
            log.info("bz_optuna: best value %s with %s", study.best_value, study.best_params)
        else:
            log.warning("bz_optuna: no trial completed")
        best = {"name": "bz_optuna", "best_params": study.best_params if has_best else None,
                "best_value": study.best_value if has_best else None,
                "trials": {t.number: t.state.name.lower() for t in study.trials}}
        OmegaConf.save(OmegaConf.create(best), self.sweep_dir / "optimization_results.yaml")

    @staticmethod
    def _job_overrides(trial: Any, fixed: Sequence[str], study_file: Path) -> list[str]:
        from bz_lightning.plugins.optuna_pruning import STUDY_ENV, TRIAL_ENV

        params = [f"{key}={_override_value(value)}" for key, value in trial.params.items()]
        env = [f"++hydra.job.env_set.{STUDY_ENV}={json.dumps(str(study_file))}",
               f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
        return [*fixed, *params, *env]

    @staticmethod
    def _tell(study: Any, trial: Any, ret: Any) -> None:
        from optuna.trial import TrialState

        from bz_lightning.plugins.optuna_pruning import PRUNED_ATTR

        try:
            value = ret.return_value  # raises the job's exception
        except Exception as err:
            log.warning("bz_optuna: trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            study.tell(trial, state=TrialState.FAIL)
            return
        # The job reported through the storage: read the trial back from it.
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if stored.user_attrs.get(PRUNED_ATTR):
            study.tell(trial, state=TrialState.PRUNED)
            return
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            log.warning("bz_optuna: trial %d returned %r, recorded as failed", trial.number, value)
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, float(value))


def _has_best(study: Any) -> bool:
    from optuna.trial import TrialState

    return any(t.state == TrialState.COMPLETE for t in study.trials)


def _override_value(value: Any) -> str:
    """A sampled value as Hydra override text (strings quoted when they need it)."""
    if isinstance(value, str):
        return value if value.replace("_", "").replace("-", "").replace(".", "").isalnum() else json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
