"""Checks of the places a run writes to, made before anything is built.

A run that cannot write its checkpoints used to find out after its first epoch, and a
300-character name failed with ``OSError: File name too long`` deep inside Hydra. Here
each output place is checked up front: every name in it fits the filesystem, and the
directory exists or can be created, and is writable (tried for real: ``os.access`` says
yes to root on a read-only mount or in ``/sys``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

__all__ = ["NAME_MAX", "check_output_places"]

#: The longest file or directory name (in bytes) Linux and macOS filesystems take.
NAME_MAX = 255


def check_output_places(places: Iterable[tuple[str, str]]) -> list[str]:
    """One line per problem with the ``(key, path)`` places a run writes to.

    A relative path is taken relative to the working directory, as the run takes it.
    Nothing is left behind: a directory that does not exist yet is not created (only its
    nearest existing parent is tried, with a temp directory removed at once).
    """
    problems = []
    for key, path in places:
        problem = _name_too_long(path) or _not_writable(path)
        if problem:
            problems.append(f"{key}={path}: {problem}")
    return problems


def _name_too_long(path: str) -> str | None:
    for name in path.split(os.sep):
        size = len(os.fsencode(name))
        if size > NAME_MAX:
            return (f"the name {name[:20]}...{name[-8:]} is {size} bytes long; a file or directory name may have "
                    f"at most {NAME_MAX}")
    return None


def _not_writable(path: str) -> str | None:
    target = os.path.abspath(path)
    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is" if existing == target else f"would be inside {existing}, which is"
        return f"cannot be a directory: it {what} a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bz-write-check-", dir=existing))
    except OSError as err:
        where = "" if existing == target else f" (it would be created in {existing})"
        return f"cannot be written{where}: {err.strerror or err}"
    return None
