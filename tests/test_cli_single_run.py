"""A single bz-train run is composed once, by the preflight check, and handed to Hydra's
``run_job``: the run directory must hold what ``@hydra.main`` would have written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from bz_lightning.cli import train as train_cli

TINY = ["epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "print_config=false",
        "optimizer.lr=0.01"]


def _run(entry, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["bz-train", *TINY, f"hydra.run.dir={run_dir}", f"paths.runs_dir={run_dir}/runs"])
    entry()


def _hydra_files(run_dir: Path) -> dict[str, object]:
    text = {name: (run_dir / ".hydra" / name).read_text().replace(str(run_dir), "<run>")
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    return {name: yaml.safe_load(content) for name, content in text.items()}


def test_single_run_writes_what_hydra_main_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(train_cli.main, tmp_path / "fast", monkeypatch)
    _run(train_cli._hydra_main, tmp_path / "hydra", monkeypatch)
    fast, reference = _hydra_files(tmp_path / "fast"), _hydra_files(tmp_path / "hydra")
    assert fast["overrides.yaml"] == reference["overrides.yaml"] == [*TINY, "paths.runs_dir=<run>/runs"]
    assert fast["config.yaml"] == reference["config.yaml"]
    assert fast["hydra.yaml"]["hydra"]["mode"] == "RUN"
    assert fast["hydra.yaml"]["hydra"]["overrides"]["hydra"] == ["hydra.run.dir=<run>", "hydra.mode=RUN"]
    assert fast["hydra.yaml"] == reference["hydra.yaml"]
    for name in ("train.log", "metrics.json", "config.yaml"):
        assert (tmp_path / "fast" / name).is_file(), name


def test_single_run_composes_its_config_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal.hydra import Hydra

    calls = []
    compose = Hydra.compose_config

    def counting(self, *args, **kwargs):
        calls.append(args)
        return compose(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", counting)
    _run(train_cli.main, tmp_path / "run", monkeypatch)
    assert len(calls) == 1
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_config_that_asks_for_a_multirun_still_sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hydra.mode: MULTIRUN`` in a config (as ``hparams_search`` sets) is Hydra's to run."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "two_lrs.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      optimizer.lr: 0.01,0.02\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bz-train", "+experiment=two_lrs", *TINY[:-1],
                                      f"hydra.sweep.dir={tmp_path}/sweep", f"paths.runs_dir={tmp_path}/runs"])
    train_cli.main()
    lrs = sorted(yaml.safe_load((tmp_path / "sweep" / str(job) / "config.yaml").read_text())["optimizer"]["lr"]
                 for job in (0, 1))
    assert lrs == [0.01, 0.02]
