"""The checks of ``bz_lightning.cli._validate`` for what reaches Lightning: ``trainer.*``
against ``lightning.Trainer``'s signature and the keys bz sets itself, the ``logger`` and
``callbacks`` groups (their optional clients), and ``ckpt_path``.

Lightning is imported only for a ``trainer`` key that is neither bz's nor one bz owns, and
torch only to read a ``ckpt_path`` file that exists: errors about bz's own keys stay free
of both.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from bz_lightning.cli._validate import _check_node, _field_names, _show
from bz_lightning.config import BZ_OWNED_TRAINER_KEYS, TrainerConfig
from bz_lightning.errors import did_you_mean

__all__ = ["check_trainer", "check_lightning_objects", "check_ckpt_path", "lightning_trainer_parameters"]

# Optional clients: the module a target needs and the extra that installs it.
_CLIENTS = {
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb"),
    "lightning.pytorch.callbacks.RichProgressBar": ("rich", "rich"),
    "lightning.pytorch.callbacks.RichModelSummary": ("rich", "rich"),
}
# Callbacks that read what a Lightning logger records and fail at the first step without one.
_NEED_A_LOGGER = ("lightning.pytorch.callbacks.LearningRateMonitor",)


def check_lightning_objects(group: str, node: Any, values: Mapping[str, Any]) -> list[str]:
    """``logger`` / ``callbacks``: a mapping of names to nodes with a ``_target_`` (``null``
    leaves one out); a target whose client library is missing names the extra to install."""
    import importlib.util

    if node is None:
        return []
    if not isinstance(node, Mapping):
        return [f"{group}={_show(node)}: expected {group} by name, e.g. {group}=[...] or +{group}.NAME._target_=CLASS"]
    problems = []
    for name, entry in node.items():
        if entry is None:
            continue
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if not isinstance(target, str):
            problems.append(f"{group}.{name}={_show(entry)}: expected a config with a _target_ (a class to build)")
            continue
        if target in _CLIENTS:
            module, extra = _CLIENTS[target]
            if importlib.util.find_spec(module) is None:
                problems.append(f"{group}.{name}: {target} needs {module}, which is not installed: "
                                f"pip install 'bz-lightning[{extra}]'")
        if group == "callbacks" and target in _NEED_A_LOGGER:
            loggers = values.get("logger")
            if not (isinstance(loggers, Mapping) and any(v is not None for v in loggers.values())):
                problems.append(f"callbacks.{name}: {target} records into a Lightning logger and this run has "
                                "none; add one, e.g. logger=csv")
    return problems


def check_ckpt_path(path: Any) -> list[str]:
    """``ckpt_path``: a file that reads as a Lightning checkpoint, as data
    (``torch.load(weights_only=True)``; torch is imported only when there is a file to read)."""
    import os

    if path is None:
        return []
    if not isinstance(path, str) or not path:
        return [f"ckpt_path={_show(path)}: expected the path of a checkpoint file (.ckpt)"]
    if not os.path.exists(path):
        return [f"ckpt_path={path}: no such file"]
    if not os.path.isfile(path):
        return [f"ckpt_path={path}: not a file (a checkpoint is a .ckpt file)"]
    from bz_lightning.checkpointing.io import read_lightning_checkpoint
    from bz_lightning.errors import BzCheckpointError

    try:
        read_lightning_checkpoint(path, map_location="cpu")
    except BzCheckpointError as err:
        return [f"ckpt_path={path}: {err}"]
    return []


def check_trainer(node: Mapping[str, Any]) -> list[str]:
    """``trainer.*``: bz's keys against ``TrainerConfig``; the keys bz sets itself refused,
    naming the bz key that sets them; any other key must be a ``lightning.Trainer`` argument.

    Lightning is imported only when a key is neither bz's nor one bz owns, so a typo in
    bz's own keys (and every error about them) costs no Lightning import.
    """
    bz_keys = _field_names(TrainerConfig)
    problems, known, others = [], {}, {}
    for key, value in node.items():
        if key in bz_keys:
            known[key] = value
        elif key in BZ_OWNED_TRAINER_KEYS:
            owner, fix = BZ_OWNED_TRAINER_KEYS[key]
            problems.append(
                f"trainer.{key}={_show(value)}: bz sets lightning.Trainer's {key} itself, from {owner}; "
                f"use {fix.format(value=_show(value))}"
            )
        else:
            others[key] = value
    if others:
        lightning_keys = lightning_trainer_parameters()
        allowed = sorted({*bz_keys, *lightning_keys} - set(BZ_OWNED_TRAINER_KEYS))
        for key, value in others.items():
            if key not in lightning_keys:
                problems.append(
                    f"trainer.{key}={_show(value)}: unknown key{did_you_mean(str(key), allowed)}; the trainer group "
                    "takes bz's keys (device, plugin_errors, on_checkpoint_error) and lightning.Trainer's arguments"
                )
    return problems + _check_node("trainer", known, TrainerConfig)


@functools.cache
def lightning_trainer_parameters() -> frozenset[str]:
    """The keyword arguments of ``lightning.Trainer`` (imports Lightning)."""
    import inspect

    from lightning.pytorch import Trainer

    return frozenset(p for p in inspect.signature(Trainer.__init__).parameters if p != "self")
