"""Fingerprints of what a run's configuration does not show: the user's code and the data.

* ``code_fingerprint``: a hash of the source file of every module that defines one of the
  run's classes (the model and each of its submodules, the loss, the optimizer, the
  scheduler, metrics, plugins, callbacks, the dataset, every ``_target_`` of the config, and
  their base classes), for modules that live outside installed packages: the user's own
  project, a training script, an editable install. Installed packages (site-packages, the
  standard library) are left out: their code changes only with their version.
* ``data_fingerprint``: a loader's type, its dataset's type and length, the batch size,
  the sampler's type, and a hash of the first and last batch worth of samples (in dataset
  order, so no random number is drawn and no worker process is started).

Both are cheap (milliseconds for the code, one or two batches of data) and deterministic
across processes, which is what makes a re-run find its own checkpoints.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["code_fingerprint", "config_targets", "data_fingerprint", "is_user_code", "stable_repr"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_repr(value: Any) -> str:
    """``repr(value)`` without memory addresses (``<Foo object at 0x7f..>`` -> ``<Foo object>``),
    so that two processes describe the same object the same way."""
    return _ADDRESS.sub("", repr(value))


# ------------------------------------------------------------------------------ code
@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    roots: set[str] = set()
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv's site module
        pass
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if user_site:
        roots.add(user_site)
    paths = sysconfig.get_paths()
    roots.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths)
    return tuple(sorted(os.path.realpath(r) + os.sep for r in roots if r))


def is_user_code(path: str | None) -> bool:
    """Whether ``path`` (a module's source file) lies outside installed packages and the
    standard library: the user's project, a script, an editable install."""
    if not path:
        return False
    real = os.path.realpath(path)
    return not any(real.startswith(root) for root in _installed_roots())


def _defining_objects(obj: Any) -> Iterator[Any]:
    """The classes and functions whose code decides what ``obj`` does."""
    if isinstance(obj, functools.partial):
        yield from _defining_objects(obj.func)
        return
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        yield obj
        return
    cls = obj if isinstance(obj, type) else type(obj)
    yield from (c for c in cls.__mro__ if c is not object)
    if isinstance(obj, torch.nn.Module):  # the blocks a model is built from
        for sub in obj.modules():
            if sub is not obj:
                yield from (c for c in type(sub).__mro__ if c is not object)


def _module_source(module_name: str, fallback: Any) -> str:
    """A hash of the module's source file; for code with no file (a notebook, ``python -c``)
    the source ``inspect`` finds for ``fallback``, or ``"unavailable"``."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    try:
        return hashlib.sha256(inspect.getsource(fallback).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return "unavailable"


def code_fingerprint(objects: Iterable[Any]) -> dict[str, str]:
    """``{module name: hash of its source}`` for every module outside installed packages
    that defines one of ``objects`` (instances count by their class, with base classes and,
    for ``nn.Module``, every submodule's class; ``functools.partial`` by its function).

    Example:
        >>> from torch import nn
        >>> code_fingerprint([nn.Linear(2, 2)])   # torch is installed: nothing of yours
        {}
    """
    found: dict[str, str] = {}
    for obj in objects:
        if obj is None:
            continue
        for code in _defining_objects(obj):
            name = getattr(code, "__module__", None)
            if not name or name in found or name in sys.builtin_module_names:
                continue
            module = sys.modules.get(name)
            path = getattr(module, "__file__", None)
            if path is None and name != "__main__":
                continue  # a namespace or built-in module: nothing of the user's to hash
            if path is not None and not is_user_code(path):
                continue
            found[name] = _module_source(name, code)
    return dict(sorted(found.items()))


def config_targets(config: Any) -> list[str]:
    """Every ``_target_`` string in a plain (resolved) config, in order of appearance."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            target = node.get("_target_")
            if isinstance(target, str):
                found.append(target)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(config)
    return found


def resolve_targets(targets: Iterable[str]) -> list[Any]:
    """The objects ``_target_`` strings name (imported as Hydra would); a target that does
    not import is described by its name alone, so the signature still differs from a run
    whose target does."""
    targets = list(dict.fromkeys(targets))
    if not targets:
        return []
    from hydra.utils import get_object

    objects: list[Any] = []
    for target in targets:
        try:
            objects.append(get_object(target))
        except Exception:  # noqa: BLE001 - an unimportable target is reported when it is built
            continue
    return objects


# ------------------------------------------------------------------------------ data
#: Samples hashed at each end of a map-style dataset when the loader has no batch size.
_DEFAULT_SAMPLES = 16


def data_fingerprint(loader: Iterable[Any] | None) -> dict[str, Any] | None:
    """What identifies the data a loader yields, cheaply: types, sizes and a content hash.

    For a ``DataLoader`` over a map-style dataset: the first and the last ``batch_size``
    samples in dataset order (``dataset[i]``, so shuffling, samplers and workers play no
    part and no random number is drawn). For an ``IterableDataset``: its first
    ``batch_size`` samples. For any other iterable: its first batch. Random number state is
    saved and restored around anything that iterates.

    Returns ``None`` for ``None``.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> a = DataLoader(TensorDataset(torch.zeros(8, 2)), batch_size=4)
        >>> b = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=4)
        >>> data_fingerprint(a)["samples"] != data_fingerprint(b)["samples"]
        True
    """
    if loader is None:
        return None
    from torch.utils.data import DataLoader, IterableDataset

    info: dict[str, Any] = {"type": _qualname(loader), "batches": _length(loader)}
    if isinstance(loader, DataLoader):
        dataset = loader.dataset
        size = loader.batch_size
        info.update(dataset=_qualname(dataset), length=_length(dataset), batch_size=size,
                    drop_last=loader.drop_last, collate=_qualname(loader.collate_fn))
        count = size or _DEFAULT_SAMPLES
        if isinstance(dataset, IterableDataset):
            info["samples"] = _hash_items(_first(dataset, count))
        else:
            info["sampler"] = _qualname(loader.sampler)
            info["batch_sampler"] = _qualname(loader.batch_sampler) if loader.batch_sampler is not None else None
            length = len(dataset)  # type: ignore[arg-type]
            head = range(min(count, length))
            tail = range(max(length - count, len(head)), length)
            info["samples"] = _hash_items(_item(dataset, i) for i in (*head, *tail))
    else:
        info["samples"] = _hash_items(_first(loader, 1))
    return info


def _item(dataset: Any, index: int) -> Any:
    """``dataset[index]``, or the error it raises: a sample that fails is data too (under
    ``on_batch_error="skip"`` training goes on without it)."""
    try:
        return dataset[index]
    except Exception as err:  # noqa: BLE001
        return f"error {type(err).__name__}: {err}"


def _first(iterable: Iterable[Any], count: int) -> list[Any]:
    """The first ``count`` items of a fresh iterator over ``iterable`` (a raised error ends
    them, as an item); RNG state untouched."""
    from bz_lightning.checkpointing.rng import capture_rng, restore_rng

    state = capture_rng()
    try:
        iterator = iter(iterable)
        items: list[Any] = []
        while len(items) < count:
            try:
                items.append(next(iterator))
            except StopIteration:
                break
            except Exception as err:  # noqa: BLE001 - see _item
                items.append(f"error {type(err).__name__}: {err}")
                break
        close = getattr(iterator, "close", None)
        if callable(close):  # a generator: run its finally blocks now, not at garbage collection
            close()
        return items
    finally:
        restore_rng(state)


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _qualname(obj: Any) -> str:
    if isinstance(obj, functools.partial):
        return f"partial({_qualname(obj.func)})"
    target = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"


def _hash_items(items: Iterable[Any]) -> str:
    digest = hashlib.sha256()
    for item in items:
        _feed(digest, item)
    return digest.hexdigest()[:16]


def _feed(digest: Any, value: Any) -> None:
    """Add ``value``'s content to ``digest``: tensors and arrays by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        digest.update(f"A{value.dtype}{getattr(value, 'shape', ())}".encode())
        digest.update(value.tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(stable_repr(value).encode())
