"""Writing a file so that readers see the old file or the complete new one, never a torn one.

Kept free of torch and Lightning: the sweep summary and bz-train's records use it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["TMP_MARK", "atomic_write_bytes", "atomic_write_text", "write_json"]

#: Temp files are named ``.<name><TMP_MARK><pid>`` beside their destination.
TMP_MARK = ".tmp-"


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Write ``path`` so that it is either the old file or the complete new one, never a torn one.

    ``write(f)`` fills a temp file ``.<name>.tmp-<pid>`` in ``path``'s own directory (so the
    final rename never crosses filesystems, whatever ``$TMPDIR`` is); it is flushed and
    fsynced, renamed over ``path`` with ``os.replace``, and the directory is fsynced so the
    rename itself survives a power cut. If anything fails (a full disk, say), the temp file
    is removed and ``path`` is left as it was.
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


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
