"""Every option of every config group composes, validates and runs one fast_dev_run step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bz_lightning.cli._validate import validate_config
from bz_lightning.cli.train import CONF_DIR, train
from bz_lightning.config import PLUGIN_SCHEMAS, TARGET_SCHEMAS
from bz_lightning.errors import BzConfigError

CONF = Path(CONF_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _cases() -> list[list[str]]:
    cases: list[list[str]] = [[]]
    for group in ("model", "optimizer", "scheduler", "data", "trainer", "paths", "experiment", "debug"):
        cases += [[f"{group}={option}"] for option in options(group)]
    cases += [[f"metrics=[{option}]"] for option in options("metrics")]
    cases += [[f"loss={option}"] for option in options("loss")]
    cases += [[f"plugins=[{option}]"] for option in options("plugins")]
    return cases


def _compose(overrides: list[str], output_dir: Path):
    extra = [f"paths.output_dir={output_dir}", "print_config=false"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *extra])
    if cfg.data._target_.endswith("MNISTDataModule"):  # one step needs MNIST's format, not its digits
        from test_data import write_mnist

        write_mnist(output_dir / "mnist" / "MNIST" / "raw")
        cfg.data.root = str(output_dir / "mnist")
        cfg.data.download = False
    return cfg


# Regression metrics with a classification loss: refused before anything runs.
REGRESSION = {"mse", "mae"}
# Options that do not fit the default classification run alone, and the error naming why.
MISMATCHED = {
    "data=diabetes": r"data=bz_lightning.data.DiabetesDataModule: regression data .*use loss=mse",
    "loss=mse": r"loss=torch.nn.MSELoss: compares values .* gives class indices",
    "loss=l1": r"loss=torch.nn.L1Loss: compares values .* gives class indices",
    "loss=bce_with_logits": r"loss=torch.nn.BCEWithLogitsLoss: compares values .* gives class indices",
}


@pytest.mark.parametrize("overrides", _cases(), ids=lambda o: " ".join(o) or "default")
def test_every_option_runs_one_step(overrides: list[str], tmp_path: Path) -> None:
    cfg = _compose(overrides, tmp_path)
    if set(cfg.metrics) & REGRESSION and cfg.loss._target_ == "torch.nn.CrossEntropyLoss":
        with pytest.raises(BzConfigError, match=r"metrics\.m[sa]e: .*\(regression\), but this run classifies"):
            validate_config(cfg)
        return
    if overrides and overrides[0] in MISMATCHED:
        with pytest.raises(BzConfigError, match=MISMATCHED[overrides[0]]):
            validate_config(cfg)
        return
    values = validate_config(cfg)
    if values["trainer"]["device"] == "cuda" and not torch.cuda.is_available():
        pytest.skip("composes and validates; running needs CUDA")
    if "optuna_pruning" in values["plugins"]:
        pytest.skip("composes and validates; running needs an Optuna trial (tests/test_optuna_sweeper.py)")
    if values["trainer"].get("strategy") == "ddp":
        assert values["trainer"]["devices"] == 2
        cfg.trainer.devices = 1  # one process: the strategy is exercised, no spawn
    if not overrides or not overrides[0].startswith("debug="):
        cfg.trainer.fast_dev_run = True
    else:
        cfg.epochs = 1
    record = train(cfg)
    assert record["metrics"]["train_loss"] is not None
    assert (tmp_path / "metrics.json").is_file()
    assert OmegaConf.load(tmp_path / "config.yaml").model._target_ == values["model"]["_target_"]


def test_every_target_option_has_a_schema(tmp_path: Path) -> None:
    for group in ("model", "optimizer", "scheduler", "data", "loss"):
        for option in options(group):
            node = _compose([f"{group}={option}"], tmp_path)[group]
            if node is None or not node:  # scheduler=none
                continue
            assert node._target_ in TARGET_SCHEMAS, f"{group}/{option}.yaml has no schema"


def test_metric_and_plugin_options_match_the_registries() -> None:
    from bz_lightning.metrics import list_available_metrics
    from bz_lightning.plugins import list_plugins

    assert set(options("metrics")) - {"none"} == set(list_available_metrics())
    assert set(options("plugins")) - {"none"} == set(list_plugins()) == set(PLUGIN_SCHEMAS)


def test_experiment_values_win_over_the_primary_config(tmp_path: Path) -> None:
    cfg = _compose(["experiment=mnist"], tmp_path)
    assert cfg.task_name == "mnist" and cfg.epochs == 3 and cfg.model._target_.endswith("CNN")


def test_optuna_search_composes_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize"
    assert "optimizer.lr" in cfg.hydra.sweeper.params
