"""The run's signature: a short hash of what defines a training run, never of tensor values.

Two invocations with the same signature train the same thing, so the second one may
continue the first one's checkpoints. Options that do not change the trained weights (how
many epochs, where files go, how progress is shown) are left out, so raising ``epochs`` or
moving the output directory still resumes.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["IGNORED_CONFIG_KEYS", "compute_training_signature", "signature_payload"]

#: Config keys left out of the signature, at any depth of the config. They say how long to
#: train, where files go, or how progress is reported and logged; none changes the weights
#: that a given number of epochs produces.
IGNORED_CONFIG_KEYS: frozenset[str] = frozenset(
    {
        # how long and whether to continue: raising epochs continues a run
        "epochs", "max_epochs", "resume",
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
    ignore: frozenset[str] | set[str] = IGNORED_CONFIG_KEYS,
) -> str:
    """A 16-hex-digit hash of what defines a training run.

    It covers the resolved ``config`` minus ``ignore`` (``IGNORED_CONFIG_KEYS`` by
    default, matched as key names at any depth), the model's class and architecture (its
    ``repr`` and every parameter's and buffer's name, shape and dtype), the optimizer's class
    and hyperparameters (``defaults`` and every param group's options, never the parameter
    tensors), and the loss's class and settings (plain attributes and buffer values, e.g. a
    class ``weight``). Initial weights are never hashed: re-running a command resumes even
    when the model was initialised differently.

    Args:
        model: the network.
        optimizer: a ``torch.optim.Optimizer``, or a factory such as
            ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        loss_fn: an ``nn.Module`` loss or a plain function.
        config: the resolved run configuration (a ``dict`` or an OmegaConf ``DictConfig``).
        ignore: config key names to leave out.

    Returns:
        16 lowercase hex digits, the same in every process for the same inputs.

    Example:
        >>> from torch import nn
        >>> import torch
        >>> model = nn.Linear(2, 1)
        >>> a = compute_training_signature(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(),
        ...                                {"lr": 0.1, "epochs": 3})
        >>> b = compute_training_signature(nn.Linear(2, 1), torch.optim.SGD(model.parameters(), lr=0.1),
        ...                                nn.MSELoss(), {"lr": 0.1, "epochs": 10})
        >>> a == b, len(a)
        (True, 16)
    """
    payload = signature_payload(model, optimizer, loss_fn, config, ignore=ignore)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_fallback)
    return hashlib.sha256(text.encode()).hexdigest()[:SIGNATURE_LENGTH]


def signature_payload(
    model: nn.Module,
    optimizer: Any,
    loss_fn: Any,
    config: Mapping[str, Any] | None = None,
    *,
    ignore: frozenset[str] | set[str] = IGNORED_CONFIG_KEYS,
) -> dict[str, Any]:
    """The plain data ``compute_training_signature`` hashes (useful to see why two differ)."""
    return {
        "config": _strip(_plain_config(config), ignore),
        "model": _describe_model(model),
        "optimizer": _describe_optimizer(optimizer),
        "loss": _describe_loss(loss_fn),
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
    return repr(value)


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if name else _qualname(fn)


def _describe_model(model: nn.Module) -> dict[str, Any]:
    return {
        "class": _qualname(model),
        "repr": repr(model),
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
        return {"class": _qualname(loss_fn), "settings": settings, "buffers": buffers, "repr": repr(loss_fn)}
    return _value(loss_fn)


def _fallback(value: Any) -> Any:
    return repr(value)
