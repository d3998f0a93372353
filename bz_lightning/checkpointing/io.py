"""The checkpoint file format: plain types, versioned, written atomically.

Every file bz writes loads with ``torch.load(path, weights_only=True)``: nothing in it is
imported or instantiated on load. ``AtomicCheckpointIO`` is the Lightning ``CheckpointIO``
that enforces this for every checkpoint a ``lightning.Trainer`` saves.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bz_lightning._atomic import TMP_MARK as _TMP_MARK
from bz_lightning._atomic import atomic_write_bytes, write_json
from bz_lightning.errors import BzCheckpointError

__all__ = [
    "CHECKPOINT_VERSION",
    "VERSION_KEY",
    "AtomicCheckpointIO",
    "atomic_write_bytes",
    "describe_load_error",
    "load_checkpoint",
    "read_lightning_checkpoint",
    "remove_stale_temp_files",
    "to_plain",
    "write_json",
]

log = logging.getLogger("bz_lightning")

#: The format version written under ``VERSION_KEY``; readers refuse newer versions.
CHECKPOINT_VERSION = 1
VERSION_KEY = "bz_checkpoint_version"


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with every container and scalar converted to what ``weights_only=True`` loads.

    OmegaConf containers become ``dict``/``list``, numpy arrays become tensors and numpy
    scalars Python numbers, enums their values; ``OrderedDict`` (with a state dict's
    ``_metadata``), tuples, tensors, ``torch.Size``/``dtype``/``device`` are kept.

    Raises:
        BzCheckpointError: for any other object, naming where it sits (``where``).
    """
    module = type(value).__module__
    # Before the builtin check: numpy.float64 is a float subclass, yet weights_only refuses it.
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
        if isinstance(value, np.generic):
            return value.item()
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return value
    if isinstance(value, torch.Size):
        return value
    if module.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return to_plain(OmegaConf.to_container(value, resolve=True), where)
    if isinstance(value, enum.Enum):
        return to_plain(value.value, where)
    if isinstance(value, collections.OrderedDict):
        plain = collections.OrderedDict((k, to_plain(v, f"{where}[{k!r}]")) for k, v in value.items())
        metadata = getattr(value, "_metadata", None)
        if metadata is not None:
            plain._metadata = to_plain(metadata, f"{where}._metadata")  # type: ignore[attr-defined]
        return plain
    if isinstance(value, Mapping):
        return {_key(k, where): to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (list, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(items)]
    raise BzCheckpointError(
        f"cannot store a {type(value).__module__}.{type(value).__qualname__} at {where}: checkpoints hold only "
        "plain values (numbers, strings, lists, dicts, tensors) so they load with weights_only=True; "
        "convert it in the state_dict() that returns it"
    )


def _key(key: Any, where: str) -> Any:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    raise BzCheckpointError(f"cannot store the key {key!r} ({type(key).__name__}) at {where}: use str or int keys")


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files left in ``directory`` by writers that were killed; return them.

    A temp file whose writer process is still alive (another run writing into the same
    directory) is left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and _TMP_MARK in name):
            continue
        pid = name.rsplit(_TMP_MARK, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        log.info("removed %d stale temp file(s) left by killed writers in %s", len(removed), directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by somebody else
        return True
    return True


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = None) -> dict[str, Any]:
    """Read a bz checkpoint with ``torch.load(weights_only=True)`` and check its version.

    Raises:
        BzCheckpointError: the file is missing, truncated, not a bz checkpoint, or written
            by a newer format version; the message names the file.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise BzCheckpointError(f"checkpoint {os.fspath(path)} does not exist") from err
    except Exception as err:  # truncated zip, unpickling refusal, ...
        raise BzCheckpointError(f"cannot read checkpoint {os.fspath(path)}: {describe_load_error(err)}") from err
    if not isinstance(checkpoint, dict) or VERSION_KEY not in checkpoint:
        raise BzCheckpointError(f"{os.fspath(path)} is not a bz checkpoint (it has no {VERSION_KEY!r} key)")
    version = checkpoint[VERSION_KEY]
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise BzCheckpointError(
            f"{os.fspath(path)} has {VERSION_KEY}={version!r}, newer than this bz-lightning reads "
            f"({CHECKPOINT_VERSION}); upgrade bz-lightning"
        )
    return checkpoint


def read_lightning_checkpoint(path: str | os.PathLike[str], map_location: Any = None) -> dict[str, Any]:
    """Read any Lightning checkpoint (bz's, or one a plain ``lightning.Trainer`` wrote) as
    data: ``torch.load(weights_only=True)``, a mapping with a ``state_dict``, and a bz format
    version this code reads when it has one.

    Raises:
        BzCheckpointError: the file is missing, unreadable, holds pickled code, is not a
            Lightning checkpoint or is from a newer bz; the message is one line naming it.
    """
    name = os.fspath(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise BzCheckpointError(f"checkpoint {name} does not exist") from None
    except Exception as err:  # truncated zip, not a torch file, a pickle naming code
        raise BzCheckpointError(f"{name} cannot be read as a checkpoint: {describe_load_error(err)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise BzCheckpointError(f"{name} is not a Lightning checkpoint (no 'state_dict')")
    version = checkpoint.get(VERSION_KEY, CHECKPOINT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise BzCheckpointError(
            f"{name} has {VERSION_KEY}={version!r}, newer than this bz-lightning reads ({CHECKPOINT_VERSION}); "
            "upgrade bz-lightning"
        )
    return checkpoint


def describe_load_error(err: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file.

    For a pickle that names code (a class, a function such as ``os.system``) that is the
    name it asked for, never torch's own advice to retry with ``weights_only=False``, which
    would run it.
    """
    text = str(err)
    named = re.search(r"GLOBAL\s+([\w.]+)", text)
    if named:
        return (f"refused: it holds a pickled {named.group(1)}, which only an unrestricted load would "
                "import and call (it could run code); bz loads checkpoints with weights_only=True")
    if text.startswith("Weights only load failed"):
        # torch's paragraphs: its advice (to load unrestricted), the reason, a link.
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        text = " ".join(paragraphs[1:-1]) or "not a checkpoint torch can read"
        return f"not a checkpoint of plain values ({text})"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()][:2]
    detail = " ".join(lines)
    detail = detail if len(detail) <= 240 else detail[:237] + "..."
    return f"{type(err).__name__}: {detail}" if detail else f"{type(err).__name__} (the file is empty or cut short)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` writing bz's checkpoint format.

    Saving converts the checkpoint with ``to_plain``, adds ``bz_checkpoint_version`` and
    writes it with ``atomic_write_bytes``. Loading always uses ``weights_only=True``; a
    checkpoint already read (and checked) by the resume logic can be handed over with
    ``preload`` so it is not read twice.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(plugins=[AtomicCheckpointIO()], logger=False)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[str, dict[str, Any]] | None = None

    def preload(self, path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
        """Let the next ``load_checkpoint(path)`` return ``checkpoint`` without reading the file."""
        self._preloaded = (os.path.abspath(path), checkpoint)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}"
            )
        plain = to_plain(checkpoint)
        plain[VERSION_KEY] = CHECKPOINT_VERSION
        atomic_write_bytes(path, lambda f: torch.save(plain, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self._preloaded is not None and self._preloaded[0] == os.path.abspath(path):
            checkpoint = self._preloaded[1]
            self._preloaded = None
            return checkpoint
        return load_checkpoint(path, map_location=map_location)
