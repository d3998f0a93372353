"""The run's signature: a short hash of what defines a training run, never of tensor values.

Two invocations with the same signature train the same thing, so the second one may
continue the first one's checkpoints, or reuse its result once it has finished. What
counts: the resolved configuration (how many epochs included), the arguments of the
``Trainer.train`` call, the model's architecture, the optimizer's and the loss's settings,
the source of the user's own code (``fingerprint.code_fingerprint``) and the data
(``fingerprint.data_fingerprint``). Options that change neither the weights nor the
reported values (where files go, how progress is shown) are left out, so moving the
output directory still resumes.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from bz_lightning.checkpointing.fingerprint import code_fingerprint, config_targets, resolve_targets, stable_repr

__all__ = ["IGNORED_CONFIG_KEYS", "compute_training_signature", "describe", "signature_of", "signature_parts",
           "signature_payload"]

#: Config keys left out of the signature, at any depth of the config. They say where files
#: go, how progress is reported and logged, and whether to continue; none changes the
#: weights a run produces or the values it reports. (``epochs`` is not among them: a run of
#: 2 epochs is not the first half of a run of 4 when anything depends on the length, such
#: as a cosine schedule's ``T_max``.)
IGNORED_CONFIG_KEYS: frozenset[str] = frozenset(
    {
        # whether to continue
        "resume",
        # where things are read from / written to
        "paths", "hydra", "output_dir", "data_dir", "checkpoint_dir", "runs_root", "checkpoint_interval",
        # naming, reporting, logging and progress display
        "task_name", "print_config", "optimized_metric", "logger", "loggers", "log_every_n_steps",
        "enable_progress_bar", "enable_model_summary", "progress_bar", "verbose",
        "console_out", "tensorboard",
        # how batches reach the device
        "pin_memory",
    }
)

#: Length of the hex signature (64 bits: collisions need ~4e9 distinct runs in one root).
SIGNATURE_LENGTH = 16


def compute_training_signature(
    model: nn.Module,
    optimizer: Any,
    loss_fn: Any,
    config: Mapping[str, Any] | None = None,
    *,
    call: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    code: Iterable[Any] = (),
    ignore: frozenset[str] | set[str] = IGNORED_CONFIG_KEYS,
) -> str:
    """A 16-hex-digit hash of what defines a training run.

    It covers (see ``signature_payload``):

    * ``config``: the resolved run configuration minus ``ignore`` (``IGNORED_CONFIG_KEYS``
      by default, matched as key names at any depth); ``epochs`` counts;
    * ``call``: how ``Trainer.train`` was called beyond the config (epochs, device,
      metrics, scheduler, plugins, callbacks, Lightning options...), minus ``ignore``;
    * the model's class and architecture (its ``repr`` and every parameter's and buffer's
      name, shape and dtype), the optimizer's class and hyperparameters (``defaults`` and
      every param group's options, never the parameter tensors), and the loss's class and
      settings (plain attributes and buffer values, e.g. a class ``weight``);
    * ``data``: the loaders' fingerprints (``data_fingerprint``);
    * the source of the user's code: every module outside installed packages that defines
      the model (or one of its blocks), the optimizer, the loss, one of ``code`` or a
      ``_target_`` of the config (``code_fingerprint``).

    Initial weights and random number state are never hashed: re-running a command resumes
    even when the model was initialised differently.

    Args:
        model: the network.
        optimizer: a ``torch.optim.Optimizer``, or a factory such as
            ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        loss_fn: an ``nn.Module`` loss or a plain function.
        config: the resolved run configuration (a ``dict`` or an OmegaConf ``DictConfig``).
        call: plain values describing the rest of the call.
        data: plain values identifying the data.
        code: more objects whose defining source counts (scheduler, metrics, plugins...).
        ignore: config key names to leave out.

    Returns:
        16 lowercase hex digits, the same in every process for the same inputs.

    Example:
        >>> from torch import nn
        >>> import torch
        >>> model = nn.Linear(2, 1)
        >>> a = compute_training_signature(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(),
        ...                                {"lr": 0.1, "epochs": 3, "output_dir": "a"})
        >>> b = compute_training_signature(nn.Linear(2, 1), torch.optim.SGD(model.parameters(), lr=0.1),
        ...                                nn.MSELoss(), {"lr": 0.1, "epochs": 3, "output_dir": "b"})
        >>> c = compute_training_signature(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(),
        ...                                {"lr": 0.1, "epochs": 10})
        >>> a == b, a == c, len(a)
        (True, False, 16)
    """
    payload = signature_payload(model, optimizer, loss_fn, config, call=call, data=data, code=code, ignore=ignore)
    return signature_of(payload)


def signature_of(payload: Mapping[str, Any]) -> str:
    """The signature of a ``signature_payload``: 16 hex digits of its SHA-256."""
    return _digest(payload, SIGNATURE_LENGTH)


def signature_parts(payload: Mapping[str, Any]) -> dict[str, str]:
    """A short hash of each part of a ``signature_payload``, stored beside the signature so
    that a mismatch can say what changed (``config``, ``code``, ``data``...)."""
    return {key: _digest(value, 8) for key, value in payload.items()}


def _digest(value: Any, length: int) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_fallback)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def signature_payload(
    model: nn.Module,
    optimizer: Any,
    loss_fn: Any,
    config: Mapping[str, Any] | None = None,
    *,
    call: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    code: Iterable[Any] = (),
    ignore: frozenset[str] | set[str] = IGNORED_CONFIG_KEYS,
) -> dict[str, Any]:
    """The plain data ``compute_training_signature`` hashes (useful to see why two differ)."""
    plain = _plain_config(config)
    code_objects = [model, optimizer, loss_fn, *code, *resolve_targets(config_targets(plain))]
    return {
        "config": _strip(plain, ignore),
        "call": _strip(dict(call or {}), ignore),
        "model": _describe_model(model),
        "optimizer": _describe_optimizer(optimizer),
        "loss": _describe_loss(loss_fn),
        "data": _value(dict(data or {})),
        "code": code_fingerprint(code_objects),
    }


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_config(config: Mapping[str, Any] | None) -> Any:
    if config is None:
        return {}
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return config


def _strip(value: Any, ignore: frozenset[str] | set[str]) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _strip(v, ignore) for k, v in value.items() if str(k) not in ignore}
    if isinstance(value, (list, tuple)):
        return [_strip(v, ignore) for v in value]
    return _value(value)


def describe(value: Any) -> Any:
    """A JSON-able, deterministic description of a setting or an object.

    Plain values, tensors, containers and ``functools.partial`` as ``_value`` gives them;
    classes and functions by qualified name; any other object by its class and its public
    attributes that hold plain values (e.g. a scheduler's ``T_max``, a metric's
    ``average``). Memory addresses never appear.

    Example:
        >>> describe(torch.nn.MSELoss)
        'torch.nn.modules.loss.MSELoss'
    """
    if value is None or isinstance(value, (bool, int, float, str, enum.Enum, torch.Tensor, list, tuple, Mapping,
                                           functools.partial, type)):
        return _value(value)
    if inspect.isroutine(value):
        return _value(value)
    if not hasattr(value, "__dict__"):
        return stable_repr(value)
    settings = {str(k): _value(v) for k, v in vars(value).items() if not str(k).startswith("_") and _is_plain(v)}
    return {"class": _qualname(value), "settings": settings}


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, enum.Enum, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _value(value: Any) -> Any:
    """A JSON-able stand-in for a hyperparameter value; tensors by content (small settings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return _value(value.value)
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _value(v) for k, v in value.items()}
    if isinstance(value, functools.partial):
        return {"partial": _callable_name(value.func),
                "args": _value(list(value.args)), "kwargs": _value(dict(value.keywords))}
    if callable(value):
        return _callable_name(value)
    return stable_repr(value)


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if name else _qualname(fn)


def _describe_model(model: nn.Module) -> dict[str, Any]:
    return {
        "class": _qualname(model),
        "repr": stable_repr(model),
        "parameters": [[n, list(p.shape), str(p.dtype)] for n, p in model.named_parameters()],
        "buffers": [[n, list(b.shape), str(b.dtype)] for n, b in model.named_buffers()],
    }


def _describe_optimizer(optimizer: Any) -> Any:
    if isinstance(optimizer, torch.optim.Optimizer):
        groups = [{k: _value(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        return {"class": _qualname(optimizer), "defaults": _value(optimizer.defaults), "param_groups": groups}
    return _value(optimizer)


def _describe_loss(loss_fn: Any) -> Any:
    if isinstance(loss_fn, nn.Module):
        settings = {k: _value(v) for k, v in vars(loss_fn).items() if not k.startswith("_") and k != "training"}
        buffers = {n: _value(b) for n, b in loss_fn.named_buffers()}
        return {"class": _qualname(loss_fn), "settings": settings, "buffers": buffers, "repr": stable_repr(loss_fn)}
    return _value(loss_fn)


def _fallback(value: Any) -> Any:
    return stable_repr(value)
