"""bz plugins: the ``Plugin`` base class, the registry and the built-in plugins.

Importing this package is cheap: the built-in plugins (which need torch, TensorBoard or
tqdm) are imported the first time one of their names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning._lazy import lazy_getattr
from bz_lightning.context import PluginContext
from bz_lightning.plugins.base import Plugin, implemented_stages
from bz_lightning.plugins.registry import (
    ENTRY_POINT_GROUP,
    PluginRegistry,
    create_plugin,
    get_plugin_registry,
    list_plugins,
    register_plugin,
)

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "ConsoleOutPlugin": "bz_lightning.plugins.console",
    "TensorBoardPlugin": "bz_lightning.plugins.tensorboard",
    "EarlyStoppingPlugin": "bz_lightning.plugins.early_stopping",
    "EarlyStoppingConfig": "bz_lightning.plugins.early_stopping",
    "OptunaPruningPlugin": "bz_lightning.plugins.optuna_pruning",
}

__all__ = [
    "Plugin",
    # bz's plugins import it from here (``from bz.plugins import Plugin, PluginContext``).
    "PluginContext",
    "implemented_stages",
    "ENTRY_POINT_GROUP",
    "PluginRegistry",
    "get_plugin_registry",
    "register_plugin",
    "create_plugin",
    "list_plugins",
    *_LAZY,
]

if TYPE_CHECKING:
    from bz_lightning.plugins.console import ConsoleOutPlugin
    from bz_lightning.plugins.early_stopping import EarlyStoppingConfig, EarlyStoppingPlugin
    from bz_lightning.plugins.optuna_pruning import OptunaPruningPlugin
    from bz_lightning.plugins.tensorboard import TensorBoardPlugin


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
