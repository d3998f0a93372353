"""``BzProjectConfSearchPath``: bz-train finds the ``conf/`` of the directory it runs in.

A project's groups and experiments (``bz init`` writes ``conf/model/tiny.yaml``,
``conf/experiment/example.yaml``...) then sit beside bz-train's own, after them in the
search path (so bz's ``train.yaml`` stays the primary config). As a search path plugin it
works wherever Hydra builds bz-train's search path: a run, ``-m``, ``--cfg job``,
``--info`` and tab completion (``--shell-completion``), which reads no command line of
ours. It only touches bz-train's search path: one whose primary configs are
``bz_lightning/conf``.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

__all__ = ["BzProjectConfSearchPath", "PROVIDER", "project_conf"]

#: The provider name shown by ``bz-train --info searchpath``.
PROVIDER = "bz-train project (./conf)"


def project_conf(cwd: str | None = None) -> str | None:
    """``<cwd>/conf`` as an absolute path when it is a directory, else ``None``."""
    conf = os.path.join(os.path.abspath(cwd or os.getcwd()), "conf")
    return conf if os.path.isdir(conf) else None


def _folders(search_path: ConfigSearchPath, provider: str | None = None) -> list[str]:
    """The directories in ``search_path`` (``file://DIR``, or a bare ``DIR`` as ``@hydra.main``
    gives its own), resolved."""
    folders = []
    for element in search_path.get_path():
        path = element.path or ""
        if provider in (None, element.provider) and (path.startswith("file://") or "://" not in path):
            folders.append(os.path.realpath(path.removeprefix("file://")))
    return folders


class BzProjectConfSearchPath(SearchPathPlugin):
    """Appends ``./conf`` to bz-train's search path (after bz's configs and ``--config-dir``)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from bz_lightning.cli._constants import CONF_DIR

        if os.path.realpath(CONF_DIR) not in _folders(search_path, "main"):
            return  # another Hydra app
        conf = project_conf()
        # Not twice: `--config-dir conf`, or bz's own repository (its conf/ is bz_lightning/conf).
        if conf is not None and os.path.realpath(conf) not in _folders(search_path):
            search_path.append(PROVIDER, f"file://{conf}")
