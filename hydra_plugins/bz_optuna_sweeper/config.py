"""The config of ``hydra/sweeper=bz_optuna``, registered in Hydra's ConfigStore.

No ``from __future__ import annotations``: Hydra's plugin scan executes this module
without registering it in ``sys.modules``, where ``dataclass`` looks string annotations up.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

__all__ = ["BzOptunaSweeperConf"]


@dataclass
class BzOptunaSweeperConf:
    """An Optuna study run as a Hydra sweep, one bz-train job per trial.

    ``params`` maps config keys to Hydra sweep expressions: ``interval(1e-4, 1e-1)``,
    ``tag(log, interval(1e-5, 1.0))``, ``tag(int, interval(1, 8))``, ``range(16, 129, 16)``,
    ``choice(adam, sgd)``; sweep expressions on the command line join them, plain
    ``key=value`` overrides apply to every trial.

    ``sampler`` and ``pruner`` are Hydra ``_target_`` nodes (``pruner: null`` never prunes).
    ``storage`` is a database URL or a journal-file path; ``null`` keeps the study in a
    journal file in the sweep directory. ``n_jobs`` trials are asked and launched at once
    (parallel with a parallel launcher, e.g. ``hydra/launcher=joblib``).
    """

    _target_: str = "hydra_plugins.bz_optuna_sweeper.sweeper.BzOptunaSweeper"
    # The sweeper builds the sampler and pruner itself; jobs rebuild the pruner from its config.
    _recursive_: bool = False
    direction: str = "minimize"
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    sampler: Dict[str, Any] = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 1234}
    )
    pruner: Optional[Dict[str, Any]] = field(
        default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5,
                                 "n_warmup_steps": 1}
    )
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="bz_optuna", node=BzOptunaSweeperConf, provider="bz_lightning")
