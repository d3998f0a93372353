"""The plugin registry: built-ins by name, config checking, entry-point discovery."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bz_lightning.plugins as plugins
from bz_lightning.errors import BzConfigError
from bz_lightning.plugins import Plugin, PluginRegistry


class Recorder(Plugin):
    def __init__(self, label: str = "x", every: int = 1) -> None:
        super().__init__()
        self.label = label
        self.every = every


class OldStyle(Plugin):
    """The bz docs' custom-plugin style: one ``config`` dict."""

    def __init__(self, config=None):
        self.config = config or {}


def test_builtins_are_listed_and_created():
    registry = PluginRegistry(entry_points=False)
    assert registry.list_plugins() == ["console_out", "early_stopping", "optuna_pruning", "tensorboard"]
    console = registry.create_plugin("console_out", {"training_data_len": 10})
    assert type(console).__name__ == "ConsoleOutPlugin" and console.training_data_len == 10
    stopper = registry.create_plugin(
        "early_stopping", {"patience": 3, "monitor": "validation_accuracy", "mode": "max"}
    )
    assert isinstance(stopper, plugins.EarlyStoppingPlugin)
    assert stopper.config == plugins.EarlyStoppingConfig(patience=3, monitor="validation_accuracy", mode="max")
    board = registry.create_plugin("tensorboard", {"training_loader_len": 5, "log_dir": "runs/a"})
    assert isinstance(board, plugins.TensorBoardPlugin) and board.log_dir == "runs/a"


def test_module_level_functions_share_one_registry():
    registry = plugins.get_plugin_registry()
    assert registry is plugins.get_plugin_registry()
    plugins.register_plugin("recorder_test", Recorder, {"label": "default"})
    try:
        assert "recorder_test" in plugins.list_plugins()
        made = plugins.create_plugin("recorder_test", {"every": 2})
        assert (made.label, made.every) == ("default", 2)
        assert plugins.create_plugin("recorder_test", {"label": "mine"}).label == "mine"
    finally:
        registry.unregister("recorder_test")
    assert "recorder_test" not in plugins.list_plugins()


def test_register_rejects_non_plugins():
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(TypeError, match="not a bz plugin class"):
        registry.register("bad", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an instance"):
        registry.register("bad", Recorder())  # type: ignore[arg-type]
    assert "bad" not in registry.list_plugins()


def test_unknown_plugin_names_the_available_ones_and_the_closest():
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(ValueError) as info:
        registry.create_plugin("tensorbord")
    message = str(info.value)
    assert "'tensorbord'" in message and "did you mean 'tensorboard'" in message
    assert "console_out, early_stopping, optuna_pruning, tensorboard" in message
    with pytest.raises(ValueError, match="unknown plugin 'nope'"):
        registry.unregister("nope")


def test_unknown_config_key_names_plugin_key_and_allowed_keys():
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(BzConfigError) as info:
        registry.create_plugin("early_stopping", {"patiense": 3})
    message = str(info.value)
    assert "'early_stopping'" in message and "'patiense'" in message and "did you mean 'patience'" in message
    assert "min_delta" in message
    with pytest.raises(BzConfigError, match=r"'console_out' has no option 'log_dir'.*allowed: training_data_len"):
        registry.create_plugin("console_out", {"training_data_len": 3, "log_dir": "x"})
    with pytest.raises(BzConfigError, match="'console_out' needs 'training_data_len'"):
        registry.create_plugin("console_out", {})
    with pytest.raises(BzConfigError, match="mode must be 'min' or 'max'.*did you mean 'max'"):
        registry.create_plugin("early_stopping", {"mode": "maxx"})


def test_single_config_parameter_gets_the_whole_dict():
    registry = PluginRegistry(entry_points=False)
    registry.register("old", OldStyle)
    assert registry.create_plugin("old", {"a": 1, "b": 2}).config == {"a": 1, "b": 2}


def test_registered_dict_is_the_config_of_a_plugin_taking_config():
    """The spec's register(name, cls, config): a class whose constructor takes ``config``
    (the base Plugin(name, config) too) gets the dict when its keys are not parameters."""

    class Mine(Plugin):
        pass

    registry = PluginRegistry(entry_points=False)
    registry.register("mine", Mine, {"a": 1})
    made = registry.create_plugin("mine")
    assert isinstance(made, Mine) and made.config == {"a": 1}
    assert registry.create_plugin("mine", {"b": 2}).config == {"a": 1, "b": 2}
    with pytest.raises(BzConfigError, match=r"'mine' has no option 'a'.*allowed: name, config"):
        registry.create_plugin("mine", {"name": "m"})  # a parameter mixed with config keys
    registry.register("plain", Mine)
    assert registry.create_plugin("plain", {"name": "m"}).name == "m"  # parameters stay parameters

    class Typed(Plugin):
        def __init__(self, every: int = 1, config=None):
            super().__init__(config=config)
            self.every = every

    registry.register("typed", Typed)
    assert registry.create_plugin("typed", {"every": 3}).every == 3
    assert registry.create_plugin("typed", {"colour": "red"}).config == {"colour": "red"}
    with pytest.raises(BzConfigError, match=r"'typed' has no option 'evry' \(did you mean 'every'\?\)"):
        registry.create_plugin("typed", {"every": 3, "evry": 2})


def test_plugin_context_imports_from_the_plugins_package():
    from bz_lightning.context import PluginContext
    from bz_lightning.plugins import PluginContext as FromPlugins

    assert FromPlugins is PluginContext


def test_unregister_builtin_and_register_replacement():
    registry = PluginRegistry(entry_points=False)
    registry.unregister("tensorboard")
    assert registry.list_plugins() == ["console_out", "early_stopping", "optuna_pruning"]
    registry.register("tensorboard", Recorder)
    assert isinstance(registry.create_plugin("tensorboard"), Recorder)


def _fake_distribution(root: Path, plugin_source: str, entry: str = "fake = fakepkg_plugins:FakePlugin") -> None:
    (root / "fakepkg_plugins.py").write_text(textwrap.dedent(plugin_source))
    info = root / "fakepkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bz.plugins]\n{entry}\n")


FAKE_PLUGIN = """
    from bz_lightning.plugins import Plugin

    class FakePlugin(Plugin):
        def __init__(self, greeting="hello"):
            super().__init__()
            self.greeting = greeting
"""


def test_entry_point_plugins_are_discovered_and_created(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fakepkg_plugins", raising=False)
    registry = PluginRegistry()
    assert "fake" in registry.list_plugins()
    # Listing does not import the plugin's module.
    assert "fakepkg_plugins" not in sys.modules
    plugin = registry.create_plugin("fake", {"greeting": "hi"})
    assert type(plugin).__name__ == "FakePlugin" and plugin.greeting == "hi"
    # The process-wide registry sees packages that appear after it was created.
    assert plugins.create_plugin("fake").greeting == "hello"
    with pytest.raises(BzConfigError, match="'fake' has no option 'greting'.*did you mean 'greeting'"):
        registry.create_plugin("fake", {"greting": "x"})
    registry.unregister("fake")
    assert "fake" not in registry.list_plugins()


def test_entry_point_that_is_not_a_plugin_is_rejected_by_name(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "class FakePlugin:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fakepkg_plugins", raising=False)
    with pytest.raises(TypeError, match=r"plugin 'fake' \(entry point bz.plugins:fake of package 'fakepkg'\) points to "
                       r"fakepkg_plugins:FakePlugin, but FakePlugin is not a bz plugin class"):
        PluginRegistry().create_plugin("fake")


def test_entry_point_that_does_not_import_is_reported(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, FAKE_PLUGIN, entry="broken = fakepkg_missing:Nothing")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BzConfigError, match="'broken'.*fakepkg_missing:Nothing.*cannot be imported"):
        PluginRegistry().create_plugin("broken")


def test_listing_plugins_imports_no_heavy_module():
    code = (
        "import sys, bz_lightning.plugins as p; names = p.list_plugins(); "
        "heavy = [m for m in ('torch', 'tensorboard', 'tqdm', 'lightning') if m in sys.modules]; "
        "print(heavy, names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] ["), out
    assert "'console_out', 'early_stopping', 'optuna_pruning', 'tensorboard'" in out


def test_lazy_names_resolve():
    assert plugins.ConsoleOutPlugin.__module__ == "bz_lightning.plugins.console"
    assert set(plugins.__all__) <= set(dir(plugins))
    with pytest.raises(AttributeError):
        plugins.NoSuchPlugin  # noqa: B018
