"""bz's configuration API (``bz_lightning.config``): both JSON layouts, the documented errors,
file discovery, and answers from the composed config inside a bz-train run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from bz_lightning.config import BzConfig, ConfigManager, get_config_manager, load_config

# The two layouts of the spec's bz project (../shared/spec/bz-project), as bz wrote them.
NESTED = {
    "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.003, "device": "auto", "compile": False,
                 "checkpoint_interval": 1},
    "hyperparameters": {"hidden": 64},
    "plugins": {
        "console_out": {"enabled": True},
        "tensorboard": {"enabled": False, "config": {"log_dir": "runs/experiment"}},
        "early_stopping": {"enabled": True, "config": {"patience": 3, "min_delta": 0.001, "monitor": "val_loss"}},
    },
    "metrics": {"metrics": ["accuracy", "precision", "recall"]},
}
FLAT = {
    "epochs": 2,
    "hyperparameters": {"hidden": 32, "batch_size": 64, "learning_rate": 0.003},
    "metrics": ["accuracy"],
    "plugins": ["console_out"],
}


def write(tmp_path: Path, data: object, name: str = "bz_config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_nested_layout(tmp_path: Path) -> None:
    manager = ConfigManager(write(tmp_path, NESTED))
    assert manager.get_training_config() == NESTED["training"]
    assert manager.get_hyperparameters() == {"hidden": 64}
    assert manager.get_plugin_config("tensorboard") == {"enabled": False, "config": {"log_dir": "runs/experiment"}}
    assert manager.get_plugin_config("console_out") == {"enabled": True, "config": {}}
    assert manager.get_plugin_config("optuna_pruning") is None
    assert [manager.is_plugin_enabled(n) for n in ("console_out", "tensorboard", "early_stopping", "nope")] == [
        True, False, True, False]
    assert manager.get_enabled_plugins() == ["console_out", "early_stopping"]
    assert manager.get_metrics_config() == {"metrics": ["accuracy", "precision", "recall"]}


def test_flat_layout_answers_training_values_from_hyperparameters(tmp_path: Path) -> None:
    manager = ConfigManager(write(tmp_path, FLAT))
    training = manager.get_training_config()
    assert (training["epochs"], training["batch_size"], training["learning_rate"]) == (2, 64, 0.003)
    # What the file leaves out takes bz's documented defaults.
    assert (training["device"], training["compile"], training["checkpoint_interval"]) == ("auto", True, 0)
    assert manager.get_metrics_config() == {"metrics": ["accuracy"]}
    assert manager.get_plugin_config("console_out") == {"enabled": True, "config": {}}
    # The nested layout comes back from load(), and load_config() is the same.
    loaded: BzConfig = manager.load()
    assert loaded == load_config(tmp_path / "bz_config.json")
    assert set(loaded) == {"training", "plugins", "metrics", "hyperparameters"}


def test_plugin_and_metric_options_in_list_entries(tmp_path: Path) -> None:
    manager = ConfigManager(write(tmp_path, {
        "plugins": ["console_out", {"early_stopping": {"patience": 2, "enabled": False}}],
        "metrics": ["accuracy", {"precision": {"average": "macro"}}],
    }))
    # In a list, a one-key dict holds the plugin's own options (early stopping has one called enabled).
    assert manager.get_plugin_config("early_stopping") == {"enabled": True, "config": {"patience": 2, "enabled": False}}
    assert manager.get_metrics_config() == {"metrics": ["accuracy", {"precision": {"average": "macro"}}]}


def test_getters_return_copies(tmp_path: Path) -> None:
    manager = ConfigManager(write(tmp_path, NESTED))
    manager.get_training_config()["epochs"] = 99
    manager.get_hyperparameters()["hidden"] = 1
    assert manager.get_training_config()["epochs"] == 3 and manager.get_hyperparameters() == {"hidden": 64}


def test_missing_file_is_file_not_found_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ConfigManager(tmp_path / "nope.json").get_training_config()
    assert str(tmp_path / "nope.json") in str(info.value)


def test_malformed_json_is_json_decode_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"training": {"epochs": 3,}}')
    with pytest.raises(json.JSONDecodeError) as info:
        ConfigManager(path).load()
    assert str(info.value).startswith(f"{path}: Expecting property name enclosed in double quotes: line 1")


@pytest.mark.parametrize(("data", "message"), [
    ({"training": {"epochs": 0}}, "training.epochs=0: expected an integer >= 1"),
    ({"epochs": "3"}, 'epochs="3": expected an integer >= 1'),
    ({"training": {"learning_rate": -0.1}}, "training.learning_rate=-0.1: expected a number > 0"),
    ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size=0: expected an integer >= 1"),
    ({"training": {"device": "gpu"}}, "training.device=\"gpu\": expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ({"training": {"compile": "yes"}}, 'training.compile="yes": expected true or false'),
    ({"training": {"checkpoint_interval": -1}}, "training.checkpoint_interval=-1: expected an integer >= 0"),
    ({"trainig": {}}, "trainig={}: unknown key (did you mean 'training'?); the top level takes: training,"),
    ({"training": {"epoch": 3}}, "training.epoch=3: unknown key (did you mean 'epochs'?); training takes: epochs,"),
    ({"training": {"early_stopping_patience": 3}}, "(early stopping is the early_stopping plugin's config)"),
    ({"training": {"batch_size": 32}, "hyperparameters": {"batch_size": 64}},
     "training.batch_size=32 and hyperparameters.batch_size=64: one value set twice, differently"),
    ({"plugins": {"early_stopping": {"patience": 3}}},
     "plugins.early_stopping.patience=3: unknown key; a plugin entry takes enabled and config"),
    ({"plugins": {"console_out": {"enabled": "yes"}}}, 'plugins.console_out.enabled="yes": expected true or false'),
    ({"plugins": ["console_out", "console_out"]}, 'plugins[1]="console_out": this plugin is listed twice'),
    ({"plugins": "console_out"}, 'plugins="console_out": expected an object'),
    ({"metrics": [3]}, "metrics[0]=3: expected a metric name"),
    ({"metrics": {"metric": []}}, 'metrics.metric=[]: unknown key; metrics takes "metrics"'),
    ({"hyperparameters": [1]}, "hyperparameters=[1]: expected an object"),
    ([1, 2], "expected a JSON object at the top level, got list"),
])
def test_invalid_values_are_value_errors_naming_file_and_key(tmp_path: Path, data, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as info:
        ConfigManager(path).load()
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BZ_CONFIG", raising=False)
    with pytest.raises(FileNotFoundError, match=r"no bz config file here: none of bz_config.json, config.json .*--config"):
        ConfigManager().load()
    write(tmp_path, {"epochs": 4}, "config.json")
    assert ConfigManager().get_training_config()["epochs"] == 4
    write(tmp_path, {"epochs": 5}, "bz_config.json")
    manager = ConfigManager()
    assert manager.get_training_config()["epochs"] == 5 and manager.config_path == "bz_config.json"
    monkeypatch.setenv("BZ_CONFIG", str(write(tmp_path, {"epochs": 6}, "other.json")))
    assert ConfigManager().get_training_config()["epochs"] == 6
    monkeypatch.setenv("BZ_CONFIG", str(tmp_path / "gone.json"))
    with pytest.raises(FileNotFoundError, match=r"named by \$BZ_CONFIG.*gone.json"):
        ConfigManager().load()


def test_importing_the_config_api_imports_no_torch() -> None:
    code = ("import sys; from bz_lightning.config import get_config_manager, load_config, BzConfig; "
            "print([m for m in ('torch', 'lightning') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------- inside bz-train
class ConfigReadingNet(nn.Module):
    """A project's model that reads its settings the bz way, built by bz-train."""

    seen: list[dict] = []

    def __init__(self, input_shape, num_classes, hidden_sizes=(8,), dropout=0.0) -> None:
        super().__init__()
        manager = get_config_manager()
        ConfigReadingNet.seen.append({
            "training": manager.get_training_config(),
            "hyperparameters": manager.get_hyperparameters(),
            "plugins": manager.get_enabled_plugins(),
            "early_stopping": manager.get_plugin_config("early_stopping"),
            "tensorboard": manager.is_plugin_enabled("tensorboard"),
            "metrics": manager.get_metrics_config(),
        })
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)


def test_inside_bz_train_the_manager_answers_from_the_composed_config(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir

    from bz_lightning.cli.train import CONF_DIR, train

    monkeypatch.delenv("BZ_CONFIG", raising=False)
    overrides = [f"paths.output_dir={tmp_path}", f"paths.runs_dir={tmp_path / 'runs'}", "print_config=false",
                 f"model._target_={__name__}.ConfigReadingNet", "epochs=2", "data.batch_size=16", "optimizer.lr=0.01",
                 "+hyperparameters.hidden=5", "plugins=[console_out,early_stopping]", "metrics=[accuracy,precision]",
                 "checkpoint_interval=1", "trainer.fast_dev_run=true"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    ConfigReadingNet.seen.clear()
    train(cfg)
    (seen,) = ConfigReadingNet.seen
    assert seen["training"] == {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "device": "auto",
                                "compile": False, "checkpoint_interval": 1}
    assert seen["hyperparameters"] == {"hidden": 5}
    assert seen["plugins"] == ["console_out", "early_stopping"] and seen["tensorboard"] is False
    assert seen["early_stopping"]["enabled"] is True and seen["early_stopping"]["config"]["patience"] == 3
    assert seen["metrics"] == {"metrics": ["accuracy", {"precision": {"average": "macro"}}]}
    # Outside the run the process-wide manager answers again (here: no file, so it says so).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        get_config_manager().load()
