"""Writing a file so that readers see the old file or the complete new one, never a torn one.

Kept free of torch and Lightning: the sweep summary and bz-train's records use it too.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bz_lightning.errors import BzDiskFullError

__all__ = ["TMP_MARK", "atomic_write_bytes", "atomic_write_text", "write_json"]

#: Temp files are named ``.<name><TMP_MARK><pid>`` beside their destination.
TMP_MARK = ".tmp-"


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Write ``path`` so that it is either the old file or the complete new one, never a torn one.

    ``write(f)`` fills a temp file ``.<name>.tmp-<pid>`` in ``path``'s own directory (so the
    final rename never crosses filesystems, whatever ``$TMPDIR`` is); it is flushed and
    fsynced, renamed over ``path`` with ``os.replace``, and the directory is fsynced so the
    rename itself survives a power cut. If anything fails, the temp file is removed and
    ``path`` is left as it was.

    Raises:
        BzDiskFullError: the filesystem is full (or the quota spent), however the writer
            reported it (torch says ``unexpected pos``); the message names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _disk_full(err):
            raise BzDiskFullError(os.fspath(path)) from err
        raise
    _fsync_directory(path.parent)


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an error it was raised from is a full filesystem. torch's zip
    writer turns the ``OSError`` of a failed write into ``RuntimeError: ... unexpected pos``,
    raised while handling it, so the ``OSError`` is its ``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``text`` (UTF-8) into ``path`` atomically (see ``atomic_write_bytes``)."""
    data = text.encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON into ``path`` atomically (see ``atomic_write_bytes``)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=repr) + "\n")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
