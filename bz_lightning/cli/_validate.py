"""Checks a composed bz-train config against the schemas in ``bz_lightning.config``.

Runs before anything is instantiated and imports neither torch nor Lightning for bz's own
keys, so a typo costs a fraction of a second (only a ``trainer`` key that is not bz's, or a
``ckpt_path`` file to read, imports them: see ``_validate_lightning``). Each problem becomes
one line naming the key, the value, what is allowed and the closest allowed name.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

from bz_lightning.config import GROUP_SCHEMAS, PLUGIN_SCHEMAS, TARGET_SCHEMAS, Rule, TrainConfig, TrainerConfig
from bz_lightning.errors import BzConfigError, did_you_mean

__all__ = ["validate_config", "resolve_config", "group_option_error"]

# Group nodes that must say what to build.
_TARGET_GROUPS = ("data", "model", "optimizer", "loss")
_OPTIONAL_TARGET_GROUPS = ("scheduler",)
# Keys of a config node that are Hydra's, not the target's.
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def resolve_config(cfg: DictConfig) -> dict[str, Any]:
    """The config without ``hydra`` as plain values, interpolations resolved.

    Raises:
        BzConfigError: a required value is missing (``???``) or an interpolation fails.
    """
    try:
        # Node by node rather than a copy without `hydra`: interpolations resolve against the
        # whole config either way, and Hydra's own node is most of it.
        return {
            key: OmegaConf.to_container(node, resolve=True, throw_on_missing=True) if OmegaConf.is_config(node) else node
            for key, node in ((str(key), cfg[key]) for key in cfg if key != "hydra")
        }
    except MissingMandatoryValue as err:
        key = err.full_key
        raise BzConfigError(f"missing required value {key}: set it on the command line, e.g. {key}=...") from None
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        raise BzConfigError(f"bad interpolation at {err.full_key}: {message}") from None


def validate_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Check ``cfg`` (a composed bz-train config) and return it resolved, as plain values.

    Raises:
        BzConfigError: with one line per problem found.
    """
    from bz_lightning.cli._validate_lightning import check_ckpt_path, check_lightning_objects, check_trainer

    values: dict[str, Any] = resolve_config(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    own_keys, problems = _project_keys(values)
    problems += _check_node("", values, TrainConfig, skip={"hydra", *_TARGET_GROUPS, *_OPTIONAL_TARGET_GROUPS,
                                                            "metrics", "plugins", "logger", "callbacks",
                                                            *GROUP_SCHEMAS, *own_keys})
    for group, schema in GROUP_SCHEMAS.items():
        node = values.get(group)
        if isinstance(node, Mapping):
            problems += check_trainer(node) if schema is TrainerConfig else _check_node(group, node, schema)
    for group in (*_TARGET_GROUPS, *_OPTIONAL_TARGET_GROUPS):
        problems += _check_target(group, values.get(group), required=group in _TARGET_GROUPS)
    problems += _check_chosen(values)
    problems += _check_metrics(values.get("metrics") or {}, values.get("loss"))
    problems += _check_plugins(values.get("plugins") or {})
    for group in ("logger", "callbacks"):
        problems += check_lightning_objects(group, values.get(group), values)
    problems += check_ckpt_path(values.get("ckpt_path"))
    if not problems:
        problems += _check_optimized_metric(values)
    if problems:
        raise BzConfigError("\n".join(problems))
    return values


def group_option_error(group: str, option: str, options: list[str]) -> BzConfigError:
    """The error for ``group=option`` when the group has no such option."""
    return BzConfigError(
        f"{group}={option}: no option {option!r} in config group {group!r}{did_you_mean(option, options)}; "
        f"available: {', '.join(options) or 'none'}"
    )


# ----------------------------------------------------------------------------- helpers
def _project_keys(values: Mapping[str, Any]) -> tuple[set[str], list[str]]:
    """The top-level keys a project declared its own in ``extra_keys`` (checked: names that
    are not bz's), and the problems with that list."""
    declared = values.get("extra_keys") or []
    if not isinstance(declared, list) or not all(isinstance(k, str) for k in declared):
        return set(), [f"extra_keys={_show(declared)}: expected a list of top-level key names, e.g. [num_features]"]
    bz_keys = [k for k in _field_names(TrainConfig) if k != "extra_keys"]
    clashes = [k for k in declared if k in bz_keys or k == "hydra"]
    problems = [f"extra_keys: {k!r} is one of bz's keys, not a project's; pick another name" for k in clashes]
    return set(declared) - set(clashes), problems


def _check_target(group: str, node: Any, required: bool) -> list[str]:
    if node is None or (isinstance(node, Mapping) and not node and not required):
        return [] if not required else [f"missing required value {group}: choose an option, e.g. {group}=<option>"]
    if not isinstance(node, Mapping) or "_target_" not in node:
        return [f"{group}={node!r}: expected a config with a _target_ (pick an option of the {group!r} group)"]
    schema = TARGET_SCHEMAS.get(node["_target_"])
    if schema is None:
        return []  # a user's own class: instantiate() checks its arguments
    return _check_node(group, node, schema)


def _check_node(path: str, node: Mapping[str, Any], schema: type, skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    names = _field_names(schema)
    allowed = [n for n in names if n not in _HYDRA_KEYS]
    problems = []
    known = {}
    for key, value in node.items():
        if key in skip:
            continue
        if key in names:
            known[key] = value
        elif key not in _HYDRA_KEYS:
            full = f"{path}.{key}" if path else key
            problems.append(
                f"{full}={_show(value)}: unknown key{did_you_mean(str(key), allowed)}; "
                f"{path or 'the top level'} takes: {', '.join(allowed)}"
            )
    # One merge checks every type; only a node that fails is checked key by key, to name them.
    typed = known
    if known and not _types_fit(schema, known):
        typed = {}
        for key, value in known.items():
            full = f"{path}.{key}" if path else key
            if _types_fit(schema, {key: value}):
                typed[key] = value
            else:
                problems.append(f"{full}={_show(value)}: expected {_type_name(schema, key)}")
    rules = _rules(schema)
    for key, value in typed.items():
        rule = rules.get(key)
        if rule is not None and not rule.fits(value):
            full = f"{path}.{key}" if path else key
            problems.append(f"{full}={_show(value)}: expected {rule.allowed}")
    for f in dataclasses.fields(schema):
        if f.default == "???" and f.name not in node and f.name not in skip:
            full = f"{path}.{f.name}" if path else f.name
            problems.append(f"missing required value {full}: set it on the command line, e.g. {full}=...")
    return problems


@functools.cache
def _field_names(schema: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(schema))


@functools.cache
def _rules(schema: type) -> dict[str, Rule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(schema) if "rule" in f.metadata}


@functools.cache
def _structured(schema: type) -> DictConfig:
    return OmegaConf.structured(schema)


def _types_fit(schema: type, values: Mapping[str, Any]) -> bool:
    try:
        OmegaConf.merge(_structured(schema), values)
    except ValidationError:
        return False
    return True


def _check_chosen(values: Mapping[str, Any]) -> list[str]:
    """``metrics=[]`` / ``plugins=[]`` choose no option, and Hydra then leaves the key out."""
    from bz_lightning.metrics import list_available_metrics
    from bz_lightning.plugins import list_plugins

    problems = []
    for group, available in (("metrics", list_available_metrics), ("plugins", list_plugins)):
        if group not in values:
            names = available()
            problems.append(
                f"{group}=[]: an empty list chooses nothing; use {group}=none for no {group}, "
                f"or name some, e.g. {group}=[{','.join(names[:2])}]; available: {', '.join(names)}"
            )
    return problems


# Losses whose targets are class indices: the model's output is one score per class.
_CLASS_INDEX_LOSSES = ("torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss")


def _check_metrics(metrics: Any, loss: Any = None) -> list[str]:
    if not isinstance(metrics, Mapping):
        return [f"metrics={_show(metrics)}: expected metric names, e.g. metrics=[accuracy,f1_score]"]
    from bz_lightning.metrics import MeanAbsoluteError, MeanSquaredError, get_metric

    loss_target = loss.get("_target_") if isinstance(loss, Mapping) else None
    problems = []
    for name, options in metrics.items():
        if options is not None and not isinstance(options, Mapping):
            problems.append(f"metrics.{name}={_show(options)}: expected keyword arguments of the metric (a mapping)")
            continue
        try:
            metric = get_metric(name, **{"name": name, **(options or {})})
        except (BzConfigError, TypeError, ValueError) as err:
            problems.append(f"metrics.{name}: {err}")
            continue
        # It would fail at the first batch: (N, C) class scores against (N,) class indices.
        if loss_target in _CLASS_INDEX_LOSSES and isinstance(metric, (MeanSquaredError, MeanAbsoluteError)):
            problems.append(
                f"metrics.{name}: {type(metric).__name__} compares predictions with targets of the same shape "
                f"(regression), but this run classifies (loss {loss_target} takes class indices); "
                "use accuracy, precision, recall, f1_score or top5_accuracy"
            )
    return problems


def _check_plugins(plugins: Any) -> list[str]:
    if not isinstance(plugins, Mapping):
        return [f"plugins={_show(plugins)}: expected plugin names, e.g. plugins=[console_out,tensorboard]"]
    from bz_lightning.plugins import list_plugins

    available = list_plugins()
    problems = []
    for name, options in plugins.items():
        if name not in available:
            problems.append(
                f"plugins.{name}: unknown plugin {name!r}{did_you_mean(str(name), available)}; "
                f"available: {', '.join(available)}"
            )
        elif options is not None and not isinstance(options, Mapping):
            problems.append(f"plugins.{name}={_show(options)}: expected the plugin's options (a mapping)")
        elif name in PLUGIN_SCHEMAS:
            problems += _check_node(f"plugins.{name}", options or {}, PLUGIN_SCHEMAS[name])
    return problems


def _check_optimized_metric(values: Mapping[str, Any]) -> list[str]:
    wanted = values.get("optimized_metric")
    if wanted is None:
        return []
    available = ["train_loss", "val_loss"]
    for metric in values.get("metrics") or {}:
        available += [f"train_{metric}", f"val_{metric}"]
    if wanted in available:
        return []
    return [
        f"optimized_metric={wanted}: not a metric of this run{did_you_mean(str(wanted), available)}; "
        f"available: {', '.join(available)}"
    ]


def _type_name(schema: type, key: str) -> str:
    hint = typing.get_type_hints(schema)[key]
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:
        return f"{_plain(args[0])} or null"
    return _plain(hint)


def _plain(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):  # noqa: UP006
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_plain(item)}"
    if origin in (dict, typing.Dict):  # noqa: UP006
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(member.value) for member in hint)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _show(value: Any) -> str:
    return "null" if value is None else str(value) if not isinstance(value, str) else value
