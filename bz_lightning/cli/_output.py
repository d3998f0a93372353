"""What bz-train prints besides training itself: Lightning's advert lines filtered out, and
a sweep's composed config printed once, when it starts, instead of once per job.

Imports neither torch nor Lightning.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["LightningChatter", "SweepConfig", "quiet_lightning", "in_multirun"]

# The loggers of Lightning's `rank_zero_info` (the name the record carries).
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class LightningChatter(logging.Filter):
    """Drops Lightning's info records that tell a bz-train user nothing about the run:

    * its adverts (``💡 Tip: ... try installing [litlogger] ...`` / ``[litmodels]``);
    * ``Trainer.fit stopped: max_epochs=N reached.``: the normal end, which bz's own
      end-of-run summary states (other reasons, ``max_time`` or ``max_steps``, stay: they
      explain an unexpected stop).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") or message.startswith("`Trainer.fit` stopped: `max_epochs="))


_FILTER = LightningChatter()


def quiet_lightning() -> None:
    """Install :class:`LightningChatter` on Lightning's ``rank_zero_info`` loggers (once)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``, a sweeper)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class SweepConfig(Callback):
    """Hydra callback (``hydra.callbacks.sweep_config`` in ``train.yaml``): prints a sweep's
    config once, before its first job, when ``print_config`` is true. It is the config every
    job starts from; the values a job sweeps are Hydra's ``#N : ...`` line before the job, and
    each job's whole config is in ``<job dir>/config.yaml``. Jobs of a multirun do not print
    their own (``bz_lightning.cli.train``)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("print_config", True):
            return
        # As written: its interpolations (paths.output_dir...) take each job's values.
        text = OmegaConf.to_yaml(OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"]))
        print("sweep config (each job's own values follow its '#N :' line):", text, sep="\n", flush=True)
