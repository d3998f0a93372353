"""``PluginRegistry``: plugins by name, for configuration files and the CLI.

Three sources feed one name space, in this order of precedence:

1. plugins registered in code with ``register`` / ``register_plugin``;
2. the built-ins ``console_out``, ``tensorboard``, ``early_stopping`` and ``optuna_pruning``;
3. plugins that installed packages declare in the entry-point group ``bz.plugins``::

       # pyproject.toml of a third-party package
       [project.entry-points."bz.plugins"]
       my_plugin = "my_package.plugins:MyPlugin"

Built-ins and entry points are kept as ``"module:Class"`` strings and imported only when a
plugin is created, so listing plugins never imports torch, TensorBoard or tqdm. Entry
points are read again on every lookup, so a package installed while Python runs is seen.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Union

from bz_lightning.errors import BzConfigError, did_you_mean
from bz_lightning.plugins.base import Plugin

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginRegistry",
    "get_plugin_registry",
    "register_plugin",
    "create_plugin",
    "list_plugins",
]

log = logging.getLogger(__name__)

#: The entry-point group that installed packages use to declare bz plugins.
ENTRY_POINT_GROUP = "bz.plugins"

#: Built-in plugins, imported on first use.
BUILTIN_PLUGINS: Mapping[str, str] = {
    "console_out": "bz_lightning.plugins.console:ConsoleOutPlugin",
    "tensorboard": "bz_lightning.plugins.tensorboard:TensorBoardPlugin",
    "early_stopping": "bz_lightning.plugins.early_stopping:EarlyStoppingPlugin",
    "optuna_pruning": "bz_lightning.plugins.optuna_pruning:OptunaPruningPlugin",
}

# A registered plugin: its class, or a "module:Class" string not imported yet.
_Target = Union[type, str]


class PluginRegistry:
    """Maps plugin names to plugin classes and builds plugins from plain config dicts.

    Args:
        builtins: register the built-in plugins (``BUILTIN_PLUGINS``).
        entry_points: also offer the plugins of the ``bz.plugins`` entry-point group.

    ``create_plugin(name, config)`` turns ``config`` into constructor arguments:

    * a plugin class with a ``config_class`` attribute (a dataclass, as
      ``EarlyStoppingPlugin`` has) gets ``cls(config_class(**config))``;
    * a class whose constructor takes the keys as parameters gets ``cls(**config)``;
    * a class whose constructor takes a ``config`` parameter (the base ``Plugin(name,
      config)`` included, and the bz docs' ``MyCustomPlugin(config=None)``) and none of the
      keys gets ``cls(config=config)``.

    Any other key raises ``BzConfigError`` naming the plugin, the key and the accepted keys.

    Example:
        >>> registry = PluginRegistry()
        >>> "early_stopping" in registry.list_plugins()
        True
        >>> plugin = registry.create_plugin("early_stopping", {"patience": 3, "mode": "max",
        ...                                                    "monitor": "validation_accuracy"})
        >>> plugin.config.patience
        3
    """

    def __init__(self, *, builtins: bool = True, entry_points: bool = True) -> None:
        self._targets: dict[str, _Target] = dict(BUILTIN_PLUGINS) if builtins else {}
        self._defaults: dict[str, dict[str, Any]] = {}
        self._entry_points = entry_points
        # Entry-point names removed with ``unregister``: they stay hidden.
        self._hidden: set[str] = set()

    # ---------------------------------------------------------------------- registering
    def register(self, name: str, plugin_class: type[Plugin], config: Mapping[str, Any] | None = None) -> None:
        """Register ``plugin_class`` under ``name``, replacing any plugin of that name.

        Args:
            name: the name configuration files use.
            plugin_class: a subclass of ``bz_lightning.plugins.Plugin``.
            config: default constructor arguments; ``create_plugin``'s config overrides them.

        Raises:
            TypeError: ``plugin_class`` is not a ``Plugin`` subclass.
            BzConfigError: ``name`` is empty or not a string.
        """
        if not isinstance(name, str) or not name:
            raise BzConfigError(f"a plugin name must be a non-empty string, got {name!r}")
        _check_plugin_class(plugin_class, f"register({name!r}, ...):")
        self._targets[name] = plugin_class
        self._defaults[name] = dict(config or {})
        self._hidden.discard(name)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (also a built-in or an entry-point plugin).

        Raises:
            ValueError: no plugin has that name.
        """
        if name in self._targets:
            del self._targets[name]
            self._defaults.pop(name, None)
        elif name in self._discover():
            self._hidden.add(name)
        else:
            raise self._unknown(name)

    # ------------------------------------------------------------------------- lookups
    def list_plugins(self) -> list[str]:
        """The names of all available plugins, sorted; imports none of them."""
        return sorted({*self._targets, *self._discover()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._targets or name in self._discover())

    def get_plugin_class(self, name: str) -> type[Plugin]:
        """The class registered under ``name``, importing it if needed.

        Raises:
            ValueError: no plugin has that name (the message lists the available names and
                the closest match).
            BzConfigError: the name points to something that cannot be imported or is not a
                ``Plugin`` subclass.
        """
        target = self._targets.get(name)
        source = "built-in"
        if target is None:
            entry_point = self._discover().get(name)
            if entry_point is None:
                raise self._unknown(name)
            target, source = entry_point.value, f"entry point {ENTRY_POINT_GROUP}:{name} of {_dist_name(entry_point)}"
        if isinstance(target, str):
            plugin_class = _import(target, name, source)
            _check_plugin_class(plugin_class, f"plugin {name!r} ({source}) points to {target}, but")
            if name in self._targets:
                self._targets[name] = plugin_class
            return plugin_class
        return target

    def create_plugin(self, name: str, config: Mapping[str, Any] | None = None) -> Plugin:
        """Build the plugin ``name`` from ``config`` (see the class docstring).

        Raises:
            ValueError: no plugin has that name.
            BzConfigError: ``config`` has a key the plugin does not take, or lacks one it needs.
        """
        plugin_class = self.get_plugin_class(name)
        kwargs = {**self._defaults.get(name, {}), **dict(config or {})}
        return _build(name, plugin_class, kwargs)

    # ----------------------------------------------------------------------- internals
    def _discover(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the ``bz.plugins`` group, by name, without loading them."""
        if not self._entry_points:
            return {}
        found: dict[str, metadata.EntryPoint] = {}
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            if name in self._hidden:
                continue
            if name in self._targets:
                log.debug("entry point %s:%s of %s is shadowed by the registered plugin of that name",
                          ENTRY_POINT_GROUP, name, _dist_name(entry_point))
                continue
            found.setdefault(name, entry_point)
        return found

    def _unknown(self, name: str) -> ValueError:
        available = self.list_plugins()
        return ValueError(
            f"unknown plugin {name!r}{did_you_mean(str(name), available)}; "
            f"available plugins: {', '.join(available) or 'none'}"
        )


def _dist_name(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"package {dist.name!r}" if dist is not None else "an installed package"


def _import(target: str, name: str, source: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            value = getattr(value, part)
    except (ImportError, AttributeError) as err:
        raise BzConfigError(f"plugin {name!r} ({source}) points to {target!r}, which cannot be imported: {err}") from err
    return value


def _check_plugin_class(plugin_class: Any, what: str) -> None:
    if not (isinstance(plugin_class, type) and issubclass(plugin_class, Plugin)):
        shown = plugin_class.__name__ if isinstance(plugin_class, type) else repr(plugin_class)
        hint = "; register the class itself, not an instance" if isinstance(plugin_class, Plugin) else ""
        raise TypeError(f"{what} {shown} is not a bz plugin class (a subclass of bz_lightning.plugins.Plugin){hint}")


def _build(name: str, plugin_class: type[Plugin], kwargs: dict[str, Any]) -> Plugin:
    config_class: Any = getattr(plugin_class, "config_class", None)
    if isinstance(config_class, type) and dataclasses.is_dataclass(config_class):
        allowed = [f.name for f in dataclasses.fields(config_class) if f.init]
        _check_keys(name, kwargs, allowed)
        factory: Any = plugin_class
        return factory(config_class(**kwargs))

    signature = inspect.signature(plugin_class)
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return plugin_class(**kwargs)
    allowed = [
        p.name for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if "config" in allowed and kwargs and not any(key in allowed for key in kwargs):
        # The whole dict is the plugin's own config (a key that names a parameter, mixed
        # with others, is more likely a typo than a config: it is reported below).
        return plugin_class(config=kwargs)
    _check_keys(name, kwargs, allowed)
    missing = [
        p.name for p in params.values()
        if p.default is inspect.Parameter.empty and p.name not in kwargs
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if missing:
        raise BzConfigError(
            f"plugin {name!r} needs {', '.join(repr(m) for m in missing)} in its config; "
            f"it takes {', '.join(allowed)}"
        )
    return plugin_class(**kwargs)


def _check_keys(name: str, kwargs: Mapping[str, Any], allowed: list[str]) -> None:
    for key in kwargs:
        if key not in allowed:
            raise BzConfigError(
                f"plugin {name!r} has no option {key!r}{did_you_mean(str(key), allowed)}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )


_registry: PluginRegistry | None = None


def get_plugin_registry() -> PluginRegistry:
    """The process-wide registry that the module-level functions use."""
    global _registry
    if _registry is None:
        _registry = PluginRegistry()
    return _registry


def register_plugin(name: str, plugin_class: type[Plugin], config: Mapping[str, Any] | None = None) -> None:
    """``get_plugin_registry().register(...)``."""
    get_plugin_registry().register(name, plugin_class, config)


def create_plugin(name: str, config: Mapping[str, Any] | None = None) -> Plugin:
    """``get_plugin_registry().create_plugin(...)``.

    >>> create_plugin("console_out", {"training_data_len": 10}).training_data_len
    10
    """
    return get_plugin_registry().create_plugin(name, config)


def list_plugins() -> list[str]:
    """``get_plugin_registry().list_plugins()``.

    >>> {"console_out", "early_stopping", "tensorboard"} <= set(list_plugins())
    True
    """
    return get_plugin_registry().list_plugins()
