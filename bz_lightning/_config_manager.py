"""bz's configuration API: ``get_config_manager()``, ``ConfigManager``, ``load_config``, ``BzConfig``.

Public as ``bz_lightning.config``. A bz project's ``train.py`` reads its settings through
it, and the same ``train.py`` works wherever it runs:

* under ``bz train`` (and in plain Python), the manager reads a JSON file in bz's layout:
  ``--config FILE``, else ``$BZ_CONFIG``, else ``bz_config.json`` or ``config.json`` in the
  working directory;
* inside a ``bz-train`` run, it answers from the run's composed Hydra config (training
  values from ``epochs``, ``data.batch_size``, ``optimizer.lr``..., the ``plugins`` and
  ``metrics`` groups, ``hyperparameters``).

bz wrote two JSON layouts and both are read (``load()`` returns the nested one)::

    {"training": {"epochs": 3, "batch_size": 64, ...},          # nested (bz's README)
     "plugins": {"console_out": {"enabled": true, "config": {}}},
     "metrics": {"metrics": ["accuracy"]},
     "hyperparameters": {"hidden": 64}}

    {"epochs": 2, "hyperparameters": {"batch_size": 64, "learning_rate": 0.003},
     "metrics": ["accuracy"], "plugins": ["console_out", {"early_stopping": {"patience": 3}}]}
                                                                 # flat (what `bz init` wrote)

Errors are bz's documented ones and stop the caller, never fall back to defaults:
``FileNotFoundError`` (a missing file), ``json.JSONDecodeError`` (malformed JSON),
``ValueError`` (``BzConfigError``: an invalid value or an unknown key); each names the
file and, for values, the key. A key left out takes bz's documented default
(``TRAINING_DEFAULTS``).

Importing this module imports neither torch nor Lightning.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, TypedDict, TypeVar, Union

from bz_lightning.errors import BzConfigError, did_you_mean

__all__ = [
    "BzConfig",
    "TrainingConfig",
    "PluginConfig",
    "MetricsConfig",
    "ConfigManager",
    "TRAINING_DEFAULTS",
    "CONFIG_FILE_NAMES",
    "get_config_manager",
    "load_config",
    "use_config_manager",
    "serving_bz_train_config",
]


class TrainingConfig(TypedDict, total=False):
    """``get_training_config()``: what ``train.py`` builds its loaders and optimizer from."""

    epochs: int
    batch_size: int
    learning_rate: float
    device: str
    compile: bool
    checkpoint_interval: int


class PluginConfig(TypedDict, total=False):
    """One plugin's entry: whether it runs and its options (the plugin's constructor arguments)."""

    enabled: bool
    config: dict[str, Any]


class MetricsConfig(TypedDict, total=False):
    """``metrics``: registry names, or one-key dicts ``{name: {options}}``."""

    metrics: list[Union[str, dict[str, dict[str, Any]]]]


class BzConfig(TypedDict, total=False):
    """A bz configuration file: the spec's keys, plus ``training`` of the nested layout.

    ``loss_fn``, ``optimizer`` and ``model`` are accepted as bz accepted them; ``bz train``
    builds those from ``train.py`` and says so when a config sets them.
    """

    loss_fn: Optional[Any]
    optimizer: Optional[Any]
    model: Optional[Any]
    device: Optional[str]
    epochs: int
    checkpoint_interval: int
    hyperparameters: dict[str, Any]
    metrics: Any
    plugins: Any
    training: TrainingConfig


#: bz's defaults for training values a configuration file leaves out.
TRAINING_DEFAULTS: TrainingConfig = {
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.001,
    "device": "auto",
    "compile": True,
    "checkpoint_interval": 0,
}
#: Looked for in the working directory, in this order, when no path is given.
CONFIG_FILE_NAMES = ("bz_config.json", "config.json")
#: The environment variable naming the configuration file.
CONFIG_ENV = "BZ_CONFIG"

# Keys the flat layout keeps at the top level, and the two it may keep in hyperparameters.
_FLAT_TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "device", "compile", "checkpoint_interval")
_HYPERPARAMETER_TRAINING_KEYS = ("batch_size", "learning_rate")
_PASSED_THROUGH = ("model", "loss_fn", "optimizer")
_TOP_LEVEL = ("training", "plugins", "metrics", "hyperparameters", *_FLAT_TRAINING_KEYS, *_PASSED_THROUGH)
_PLUGIN_ENTRY_KEYS = ("enabled", "config")


class ConfigManager:
    """Reads a bz configuration and answers the questions ``train.py`` and ``bz train`` ask.

    Args:
        config_path: the JSON file; ``None`` looks for ``$BZ_CONFIG``, then
            ``bz_config.json``, then ``config.json`` in the working directory, when the
            configuration is first loaded.

    Every getter loads the file on first use (``load()``) and returns a copy, so a caller
    changing what it got changes nothing for the others.

    Raises (from every getter, at the first load):
        FileNotFoundError: the file does not exist (or no file was found).
        json.JSONDecodeError: the file is not valid JSON (the message names it).
        ValueError: ``BzConfigError`` naming the file, the key, the value and what is allowed.

    Example:
        >>> import json, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bz_config.json")
        >>> _ = open(path, "w").write(json.dumps({"epochs": 2, "plugins": ["console_out"],
        ...                                       "hyperparameters": {"batch_size": 16}}))
        >>> manager = ConfigManager(path)
        >>> manager.get_training_config()["epochs"], manager.get_training_config()["batch_size"]
        (2, 16)
        >>> manager.is_plugin_enabled("console_out"), manager.is_plugin_enabled("tensorboard")
        (True, False)
    """

    def __init__(self, config_path: str | os.PathLike[str] | None = None) -> None:
        self.config_path: str | None = os.fspath(config_path) if config_path is not None else None
        self._read: Callable[[], tuple[Mapping[str, Any], str, bool]] = self._read_file
        self._source: str | None = None
        self._config: BzConfig | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | Callable[[], Mapping[str, Any]], source: str, *,
                     defaults: bool = True) -> ConfigManager:
        """A manager answering from ``data`` (or what calling it returns, on first use)
        instead of a file; ``source`` names it in error messages. ``defaults=False`` leaves
        training values that ``data`` does not hold out, rather than filling bz's defaults."""
        manager = cls()
        manager._source = source

        def read() -> tuple[Mapping[str, Any], str, bool]:
            return (data() if callable(data) else data), source, defaults

        manager._read = read
        return manager

    # ---------------------------------------------------------------------------- loading
    def load(self) -> BzConfig:
        """The whole configuration, checked, in the nested layout (see the module docstring)."""
        if self._config is None:
            raw, source, defaults = self._read()
            self._config = _normalize(raw, source, defaults)
        return copy.deepcopy(self._config)

    def _read_file(self) -> tuple[Mapping[str, Any], str, bool]:
        path = self.config_path if self.config_path is not None else find_config_file()
        self.config_path = path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(2, "bz config file not found", path) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise json.JSONDecodeError(f"{path}: {err.msg}", err.doc, err.pos) from None
        if not isinstance(data, dict):
            raise BzConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
        return data, path, True

    # ---------------------------------------------------------------------------- getters
    def get_training_config(self) -> TrainingConfig:
        """``epochs``, ``batch_size``, ``learning_rate``, ``device``, ``compile``,
        ``checkpoint_interval``, wherever the file keeps them."""
        return self.load()["training"]

    def get_plugin_config(self, plugin_name: str) -> PluginConfig | None:
        """``{"enabled": ..., "config": {...}}`` of ``plugin_name``, or ``None`` if not configured."""
        return self.load()["plugins"].get(plugin_name)

    def get_metrics_config(self) -> MetricsConfig:
        """``{"metrics": [...]}``: the metric names (or ``{name: options}``) in order."""
        return self.load()["metrics"]

    def get_hyperparameters(self) -> dict[str, Any]:
        """The ``hyperparameters`` mapping (``{}`` when the file has none)."""
        return self.load()["hyperparameters"]

    def is_plugin_enabled(self, plugin_name: str) -> bool:
        """Whether ``plugin_name`` is configured and not ``"enabled": false``."""
        entry = self.get_plugin_config(plugin_name)
        return entry is not None and bool(entry.get("enabled", True))

    def get_enabled_plugins(self) -> list[str]:
        """The names of the enabled plugins, in the file's order."""
        return [name for name, entry in self.load()["plugins"].items() if entry.get("enabled", True)]

    @property
    def source(self) -> str | None:
        """What the configuration is read from: its path (once found), or the name given to
        ``from_mapping``."""
        return self._source or self.config_path

    def __repr__(self) -> str:
        return f"ConfigManager({self.config_path!r})" if self._source is None else f"ConfigManager(<{self._source}>)"


def find_config_file(directory: str | os.PathLike[str] | None = None) -> str:
    """``$BZ_CONFIG``, else the first of ``CONFIG_FILE_NAMES`` in ``directory`` (default: the
    working directory).

    Raises:
        FileNotFoundError: ``$BZ_CONFIG`` names a missing file, or none of the names exists.
    """
    named = os.environ.get(CONFIG_ENV)
    if named:
        if not os.path.isfile(named):
            raise FileNotFoundError(2, f"bz config file not found (named by ${CONFIG_ENV})", named)
        return named
    where = Path(directory) if directory is not None else Path.cwd()
    for name in CONFIG_FILE_NAMES:
        if (where / name).is_file():
            return str(where / name) if directory is not None else name
    raise FileNotFoundError(
        2, f"no bz config file here: none of {', '.join(CONFIG_FILE_NAMES)} (pass --config FILE or set ${CONFIG_ENV})",
        str(where),
    )


# --------------------------------------------------------------------------- normalizing
def _normalize(raw: Mapping[str, Any], source: str, defaults: bool) -> BzConfig:
    """Check ``raw`` (either layout) and return it in the nested layout."""
    for key in raw:
        if key not in _TOP_LEVEL:
            raise _error(source, str(key), raw[key], f"unknown key{did_you_mean(str(key), _TOP_LEVEL)}; "
                         f"the top level takes: {', '.join(_TOP_LEVEL)}")
    hyperparameters = raw.get("hyperparameters", {})
    if not isinstance(hyperparameters, Mapping):
        raise _error(source, "hyperparameters", hyperparameters, "expected an object of names and values")
    config: BzConfig = {
        "training": _training(raw, hyperparameters, source, defaults),
        "plugins": _plugins(raw.get("plugins", {}), source),
        "metrics": {"metrics": _metrics(raw.get("metrics", {}), source)},
        "hyperparameters": dict(hyperparameters),
    }
    for key in _PASSED_THROUGH:
        if key in raw:
            config[key] = raw[key]  # type: ignore[literal-required]
    return config


def _training(raw: Mapping[str, Any], hyperparameters: Mapping[str, Any], source: str,
              defaults: bool) -> TrainingConfig:
    section = raw.get("training", {})
    if not isinstance(section, Mapping):
        raise _error(source, "training", section, "expected an object of training values")
    for key in section:
        if key not in _FLAT_TRAINING_KEYS:
            hint = " (early stopping is the early_stopping plugin's config)" if "early_stopping" in str(key) else ""
            raise _error(source, f"training.{key}", section[key],
                         f"unknown key{did_you_mean(str(key), _FLAT_TRAINING_KEYS)}{hint}; "
                         f"training takes: {', '.join(_FLAT_TRAINING_KEYS)}")
    training: dict[str, Any] = {}
    for key in _FLAT_TRAINING_KEYS:
        places = [(f"training.{key}", section), (key, raw)]
        if key in _HYPERPARAMETER_TRAINING_KEYS:
            places.append((f"hyperparameters.{key}", hyperparameters))
        found = [(where, values[key]) for where, values in places if key in values]
        if len({json.dumps(value, sort_keys=True) for _, value in found}) > 1:
            shown = " and ".join(f"{where}={json.dumps(value)}" for where, value in found)
            raise BzConfigError(f"{source}: {shown}: one value set twice, differently; keep one of them")
        if found:
            where, value = found[0]
            _check_training_value(source, where, key, value)
            training[key] = value
        elif defaults:
            training[key] = TRAINING_DEFAULTS[key]  # type: ignore[literal-required]
    return training  # type: ignore[return-value]


def _check_training_value(source: str, where: str, key: str, value: Any) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if key in ("epochs", "batch_size") and not (is_int(value) and value >= 1):
        raise _error(source, where, value, "expected an integer >= 1")
    if key == "checkpoint_interval" and not (is_int(value) and value >= 0):
        raise _error(source, where, value, "expected an integer >= 0 (0: only last.ckpt)")
    if key == "learning_rate" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise _error(source, where, value, "expected a number > 0")
    if key == "compile" and not isinstance(value, bool):
        raise _error(source, where, value, "expected true or false")
    if key == "device" and not _is_device(value):
        raise _error(source, where, value, "expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _is_device(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    kind, colon, index = value.partition(":")
    return value in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and colon == ":" and index.isdigit())


def _plugins(value: Any, source: str) -> dict[str, PluginConfig]:
    """``{name: {"enabled": ..., "config": {...}}}`` from either layout, in the file's order."""
    plugins: dict[str, PluginConfig] = {}
    if isinstance(value, Mapping):  # {"name": {"enabled": true, "config": {...}}}
        for name, entry in value.items():
            where = f"plugins.{name}"
            if entry is None:
                entry = {}
            if not isinstance(entry, Mapping):
                raise _error(source, where, entry, 'expected {"enabled": true|false, "config": {...}}')
            for key in entry:
                if key not in _PLUGIN_ENTRY_KEYS:
                    raise _error(source, f"{where}.{key}", entry[key],
                                 f"unknown key{did_you_mean(str(key), _PLUGIN_ENTRY_KEYS)}; a plugin entry takes "
                                 "enabled and config (the plugin's options go under config)")
            enabled, options = entry.get("enabled", True), entry.get("config", {})
            if not isinstance(enabled, bool):
                raise _error(source, f"{where}.enabled", enabled, "expected true or false")
            if options is None:
                options = {}
            if not isinstance(options, Mapping):
                raise _error(source, f"{where}.config", options, "expected an object of the plugin's options")
            plugins[str(name)] = {"enabled": enabled, "config": dict(options)}
    elif isinstance(value, list):  # ["console_out", {"early_stopping": {"patience": 3}}]
        for i, item in enumerate(value):
            name, options = _named_entry(item, source, f"plugins[{i}]", "plugin")
            if name in plugins:
                raise _error(source, f"plugins[{i}]", name, "this plugin is listed twice")
            plugins[name] = {"enabled": True, "config": options}
    else:
        raise _error(source, "plugins", value, 'expected an object {"name": {"enabled": ..., "config": ...}} '
                     "or a list of names")
    return plugins


def _metrics(value: Any, source: str) -> list[Union[str, dict[str, dict[str, Any]]]]:
    where = "metrics"
    if isinstance(value, Mapping):  # {"metrics": [...]}
        for key in value:
            if key != "metrics":
                raise _error(source, f"metrics.{key}", value[key], 'unknown key; metrics takes "metrics" (a list)')
        value, where = value.get("metrics", []), "metrics.metrics"
    if not isinstance(value, list):
        raise _error(source, where, value, "expected a list of metric names")
    entries: list[Union[str, dict[str, dict[str, Any]]]] = []
    for i, item in enumerate(value):
        name, options = _named_entry(item, source, f"{where}[{i}]", "metric")
        entries.append({name: options} if options else name)
    return entries


def _named_entry(item: Any, source: str, where: str, what: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": {options}}`` -> (name, options)."""
    if isinstance(item, str) and item:
        return item, {}
    if isinstance(item, Mapping) and len(item) == 1:
        ((name, options),) = item.items()
        if options is None:
            options = {}
        if isinstance(name, str) and name and isinstance(options, Mapping):
            return name, dict(options)
    raise _error(source, where, item, f'expected a {what} name or {{"<name>": {{<options>}}}}')


def _error(source: str, key: str, value: Any, allowed: str) -> BzConfigError:
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BzConfigError(f"{source}: {key}={shown}: {allowed}")


# -------------------------------------------------------------------- the active manager
_default_manager: ConfigManager | None = None
_active: list[ConfigManager] = []


def get_config_manager() -> ConfigManager:
    """The configuration of the run in progress.

    Inside ``bz train`` or ``bz-train``, the manager of that run (its JSON file, or its
    composed Hydra config); elsewhere one process-wide ``ConfigManager()``, which finds its
    file when first loaded.
    """
    if _active:
        return _active[-1]
    global _default_manager
    if _default_manager is None:
        _default_manager = ConfigManager()
    return _default_manager


@contextmanager
def use_config_manager(manager: ConfigManager) -> Iterator[ConfigManager]:
    """Make ``get_config_manager()`` return ``manager`` inside the ``with`` block."""
    _active.append(manager)
    try:
        yield manager
    finally:
        _active.remove(manager)


def load_config(path: str | os.PathLike[str] | None = None) -> BzConfig:
    """The configuration file at ``path`` (found as ``ConfigManager`` finds it when ``None``),
    checked, in the nested layout. Raises what ``ConfigManager.load`` raises."""
    return ConfigManager(path).load()


# ------------------------------------------------------------------------- inside bz-train
def bz_train_view(values: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved ``bz-train`` config as a bz configuration (nested layout).

    Training values come from where bz-train keeps them: ``epochs``, ``device``,
    ``compile``, ``checkpoint_interval`` at the top, ``batch_size`` from ``data``,
    ``learning_rate`` from ``optimizer.lr`` (left out when the run's groups have none).
    """
    training: dict[str, Any] = {key: values[key] for key in ("epochs", "device", "compile", "checkpoint_interval")
                                if key in values}
    data, optimizer = values.get("data") or {}, values.get("optimizer") or {}
    if isinstance(data, Mapping) and "batch_size" in data:
        training["batch_size"] = data["batch_size"]
    if isinstance(optimizer, Mapping) and "lr" in optimizer:
        training["learning_rate"] = optimizer["lr"]
    plugins = values.get("plugins") or {}
    metrics = values.get("metrics") or {}
    return {
        "training": training,
        "plugins": {name: {"enabled": True, "config": dict(options or {})} for name, options in plugins.items()},
        "metrics": {"metrics": [{name: dict(options)} if options else name for name, options in metrics.items()]},
        "hyperparameters": dict(values.get("hyperparameters") or {}),
    }


_F = TypeVar("_F", bound=Callable[..., Any])


def serving_bz_train_config(train: _F) -> _F:
    """Decorate bz-train's ``train(cfg)`` so that ``get_config_manager()`` answers from ``cfg``
    while it runs (read when first asked, so a run that never asks pays nothing)."""

    @functools.wraps(train)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        def values() -> Mapping[str, Any]:
            from omegaconf import DictConfig

            from bz_lightning.cli._validate import resolve_config

            return bz_train_view(resolve_config(cfg) if isinstance(cfg, DictConfig) else cfg)

        manager = ConfigManager.from_mapping(values, "bz-train's composed config", defaults=False)
        with use_config_manager(manager):
            return train(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
