"""bz plugins: the ``Plugin`` base class, the registry and the built-in plugins."""

from __future__ import annotations

from bz_lightning.plugins.base import Plugin, implemented_stages

__all__ = ["Plugin", "implemented_stages"]
