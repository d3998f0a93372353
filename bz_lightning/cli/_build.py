"""Turning a validated, resolved bz-train config (plain values) into objects.

Each builder logs the ``_target_`` it instantiates, so a run's log says what ran. torch
and Lightning are imported here only inside the builders.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bz_lightning.errors import BzConfigError

__all__ = ["instantiate", "build_metrics", "build_plugins", "build_lightning_objects", "lightning_kwargs", "CONFIG_KEY"]

log = logging.getLogger("bz_lightning.cli")

# Where the resolved config lives in a checkpoint's ``hyper_parameters``.
CONFIG_KEY = "bz_config"

# Trainer-group keys that bz's Trainer.train takes itself rather than passing to Lightning.
_BZ_TRAINER_KEYS = {"device", "plugin_errors", "on_checkpoint_error", "float32_matmul_precision"}


def instantiate(group: str, node: Mapping[str, Any], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``, logged, with errors naming the group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    target = node["_target_"]
    log.info("instantiating %s: %s%s", group, target, " (partial)" if node.get("_partial_") else "")
    try:
        return hydra_instantiate(dict(node), **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, BzConfigError):
            raise BzConfigError(f"{group}: {cause}") from cause
        detail = str(cause or err).splitlines()[0]
        raise BzConfigError(f"{group} ({target}) could not be built: {detail}") from err


def build_metrics(metrics: Mapping[str, Mapping[str, Any] | None]) -> list[Any]:
    """Metrics by registry name; each reports under its registry name unless ``name`` is set."""
    from bz_lightning.metrics import get_metric

    return [get_metric(name, **{"name": name, **(options or {})}) for name, options in metrics.items()]


def build_plugins(plugins: Mapping[str, Mapping[str, Any] | None], train_batches: int, val_batches: int) -> list[Any]:
    """Plugins by registry name, with the loader sizes the built-ins need added to their options."""
    from bz_lightning.plugins import create_plugin

    sizes = {
        "console_out": {"training_data_len": train_batches, "validation_data_len": val_batches},
        "tensorboard": {"training_loader_len": train_batches},
    }
    built = []
    for name, options in plugins.items():
        log.info("creating plugin: %s", name)
        built.append(create_plugin(name, {**sizes.get(name, {}), **(options or {})}))
    return built


def lightning_kwargs(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer group's options for ``lightning.Trainer``; ``None`` means Lightning's default."""
    return {k: v for k, v in trainer.items() if k not in _BZ_TRAINER_KEYS and v is not None}


# Lightning callbacks whose `mode` (min/max) bz fills from the monitored metric's name
# when the config leaves it out: optimized_metric may be val_loss or val_accuracy.
_MODE_FROM_MONITOR = ("lightning.pytorch.callbacks.ModelCheckpoint", "lightning.pytorch.callbacks.EarlyStopping")


def build_lightning_objects(group: str, nodes: Mapping[str, Mapping[str, Any] | None] | None) -> list[Any]:
    """The ``logger`` or ``callbacks`` group's objects, in order; a ``null`` entry is left out.

    A ``ModelCheckpoint`` or ``EarlyStopping`` that monitors a metric without a ``mode``
    gets ``max`` for metrics where higher is better (accuracy, f1...), else ``min``.
    """
    from bz_lightning.cli.summary import higher_is_better

    built = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        node = dict(node)
        if node["_target_"] in _MODE_FROM_MONITOR and node.get("monitor") and "mode" not in node:
            node["mode"] = "max" if higher_is_better(str(node["monitor"])) else "min"
        built.append(instantiate(f"{group}.{name}", node))
    return built
