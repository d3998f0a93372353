"""``bz validate``: evaluate a checkpoint on the validation data of the run *your* config describes.

A checkpoint is data, never code. The run is rebuilt from the user's own config, composed
exactly as bz-train composes it (bz-train's configs, the project's ``./conf``,
``--config-dir``, the ``key=value`` overrides), and only tensors are taken from the
checkpoint, read with ``torch.load(weights_only=True)``.

The config bz-train stores in a checkpoint (``hyper_parameters["bz_config"]``) is never
built. It is compared with the user's, and where the two differ ``bz validate`` says so and
names the stored values the user can pass as overrides: a stored value is used only when
the user types it. A stored ``_target_`` that is none of bz's own classes, nothing in
``torch.nn`` / ``torch.optim`` and nothing the user's config names is refused outright,
naming it: such a file was not written by the run the user describes, and what it names is
not imported. (Hydra's own target checks stopped neither a ``torch.load`` of an embedded
pickle nor a file writer; nothing here relies on them.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from bz_lightning.errors import BzCheckpointError

__all__ = ["ALLOWED_TARGET_PREFIXES", "validate_checkpoint", "stored_config_report"]

#: ``_target_`` prefixes a stored config may name without being refused (it is never built):
#: bz's classes, torch's, and the Lightning loggers and callbacks bz-train's groups name.
ALLOWED_TARGET_PREFIXES = ("bz_lightning.", "torch.nn.", "torch.optim.", "lightning.pytorch.loggers.",
                           "lightning.pytorch.callbacks.")
# Differences listed at most, so the note stays one readable line.
_MAX_SHOWN = 8


def validate_checkpoint(path: str, overrides: list[str] = (), config_dir: str | None = None,  # type: ignore[assignment]
                        note: Any = None) -> dict[str, float]:
    """Rebuild the run from the user's config, load the checkpoint's weights into its model,
    run ``lightning.Trainer.validate`` on the data's validation split; returns ``val_loss``
    and ``val_<metric>``.

    Args:
        path: a ``.ckpt`` file (bz-train's, or any Lightning checkpoint of a ``BzModule``).
        overrides: ``key=value`` changes to the user's config, as bz-train takes them.
        config_dir: another config directory, as bz-train's ``--config-dir``.
        note: called with one line when the stored config differs from the user's.

    Raises:
        BzConfigError: the user's config or an override is invalid.
        BzCheckpointError: the file is missing or unreadable, is not a checkpoint, names a
            ``_target_`` outside the allowlist, or its weights do not fit the model.
    """
    from bz_lightning.cli._launch import compose_run

    if not os.path.isfile(path):
        raise BzCheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise BzCheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    values = compose_run(list(overrides), config_dir=config_dir)

    import lightning.pytorch as pl
    import torch

    from bz_lightning.checkpointing.io import describe_load_error
    from bz_lightning.cli._build import build_metrics, instantiate
    from bz_lightning.module import BzModule
    from bz_lightning.trainer import lightning_device_args

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, empty, a pickle that names code: weights_only refuses it
        raise BzCheckpointError(f"{path}: cannot be read as a checkpoint: {describe_load_error(err)}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping):
        raise BzCheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    differences = stored_config_report(path, checkpoint, values)
    if differences and note is not None:
        note(f"these metrics are for your config: {differences}")

    datamodule = instantiate("data", values["data"])
    datamodule.prepare_data()
    datamodule.setup("validate")
    model = instantiate("model", values["model"])
    # BzModule registers the network as `model`; a compiled copy would add `_forward.*` keys.
    weights = {k[len("model."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("model.")}
    odd = next((k for k, v in weights.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise BzCheckpointError(f"{path}: state_dict entry model.{odd} is a {type(weights[odd]).__name__}, not a tensor")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        hint = f"; {differences}" if differences else ""
        raise BzCheckpointError(
            f"{path}: its weights do not fit the model your config builds ({values['model']['_target_']}): "
            f"{_first_line(err)}{hint}"
        ) from None
    module = BzModule(model, instantiate("loss", values["loss"]), instantiate("optimizer", values["optimizer"]),
                      metrics=build_metrics(values["metrics"]))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **lightning_device_args(values["device"]))
    (results,) = trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    return {name: float(value) for name, value in results.items()}


def stored_config_report(path: str, checkpoint: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """Compare the config stored in ``checkpoint`` with the user's ``values``.

    Returns ``None`` when they agree on everything that defines a run (the keys the run
    signature ignores, such as ``epochs`` and ``paths``, are left out), else one line naming
    each difference and the overrides that would rebuild the stored run (never applied).

    Raises:
        BzCheckpointError: the stored config names a ``_target_`` that is not allowed: not
            under ``ALLOWED_TARGET_PREFIXES`` and not named by the user's config.
    """
    from bz_lightning.checkpointing.signature import IGNORED_CONFIG_KEYS
    from bz_lightning.cli._build import CONFIG_KEY

    hyper = checkpoint.get("hyper_parameters")
    stored = hyper.get(CONFIG_KEY) if isinstance(hyper, Mapping) else None
    if stored is None:
        return None
    if not isinstance(stored, Mapping):
        raise BzCheckpointError(f"{path}: hyper_parameters[{CONFIG_KEY!r}] is a {type(stored).__name__}, not a config")
    yours = {target for _, target in _targets(values)}
    for where, target in _targets(stored):
        if not (isinstance(target, str) and (target.startswith(ALLOWED_TARGET_PREFIXES) or target in yours)):
            raise BzCheckpointError(
                f"{path}: refused: its stored config names _target_ {_show(target)} at {where}, which is none of "
                f"bz's classes, torch.nn or torch.optim, nor named by your config; a checkpoint is data and bz "
                "validate never imports what one names (nothing was built from it)"
            )
    mine = dict(_flatten(values, IGNORED_CONFIG_KEYS))
    theirs = dict(_flatten(stored, IGNORED_CONFIG_KEYS))
    keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k, _ABSENT) != theirs.get(k, _ABSENT))
    if not keys:
        return None
    shown = [f"{k} (stored {_show(theirs.get(k, _ABSENT))}, yours {_show(mine.get(k, _ABSENT))})" for k in keys]
    more = f" and {len(keys) - _MAX_SHOWN} more" if len(keys) > _MAX_SHOWN else ""
    return (f"the config stored in {path} differs from yours at {', '.join(shown[:_MAX_SHOWN])}{more} "
            f"(to rebuild the stored run, pass: {_overrides(keys, theirs)})")


def _overrides(keys: list[str], stored: Mapping[str, Any]) -> str:
    """The overrides that would bring the stored values in: ``group=option`` where a group's
    ``_target_`` differs and an option of the group builds the stored one, else ``key=value``."""
    from bz_lightning.cli._constants import CONF_DIR

    conf_dirs = (CONF_DIR, os.path.join(os.getcwd(), "conf"))
    # Group names come from the file: only plain names are looked up (no "../" into elsewhere).
    groups = {k.split(".")[0]: _option_for(k.split(".")[0], stored[k], conf_dirs)
              for k in keys if k.endswith("._target_") and k.count(".") == 1 and k in stored
              and k.split(".")[0].isidentifier()}
    picked = [f"{group}={option}" for group, option in groups.items() if option]
    # The picked option builds the stored target; its keys that differ from yours follow it.
    rest = [f"{k}={_show(stored[k])}" for k in keys
            if k in stored and not (k.endswith("._target_") and groups.get(k.split(".")[0]))]
    fix = [*picked, *rest]
    if len(fix) > 3 * _MAX_SHOWN:  # a file from elsewhere may differ everywhere
        fix = [*fix[: 3 * _MAX_SHOWN], f"... ({len(fix) - 3 * _MAX_SHOWN} more)"]
    return " ".join(fix) or "nothing: the stored run lacks these keys"


def _option_for(group: str, target: Any, conf_dirs: tuple[str, ...]) -> str | None:
    """The option of config group ``group`` whose file names ``_target_: target``, if one does."""
    import yaml

    for conf in conf_dirs:
        folder = os.path.join(conf, group)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".yaml"):
                try:
                    with open(os.path.join(folder, name)) as f:
                        node = yaml.safe_load(f)
                except (OSError, yaml.YAMLError):  # not ours to report here: bz-train will
                    continue
                if isinstance(node, dict) and node.get("_target_") == target:
                    return name[: -len(".yaml")]
    return None


_ABSENT = object()


def _targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, value)`` of every ``_target_`` at any depth of ``node``; ``where`` is the
    dotted key of the node holding it."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_":
                yield where or "the top level", value
            else:
                yield from _targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _targets(value, f"{where}[{index}]")


def _flatten(node: Mapping[str, Any], ignore: frozenset[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf, leaving out ``ignore``d key names at any depth.
    A mapping with nothing left is a leaf ``{}``: ``metrics.accuracy: {}`` counts, and
    ``plugins: {}`` equals plugins that are all ignored (``console_out``, ``tensorboard``)."""
    for key, value in node.items():
        if key in ignore:
            continue
        here = f"{prefix}.{key}" if prefix else str(key)
        inner = list(_flatten(value, ignore, here)) if isinstance(value, Mapping) else None
        if inner:
            yield from inner
        else:
            yield here, {} if inner is not None else value


def _show(value: Any) -> str:
    """A stored value as an override would spell it; JSON escapes whatever a hostile file holds."""
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) and value.isprintable() and value.strip() == value and value else None
    text = text or json.dumps(value, separators=(",", ":"), default=lambda v: f"<{type(v).__name__}>")
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(err: BaseException) -> str:
    """``Type: message`` on one line (torch's state-dict errors start with a header line)."""
    from bz_lightning.checkpointing.io import describe_load_error

    return describe_load_error(err)
