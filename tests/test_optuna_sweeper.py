"""bz's Optuna sweeper (hydra/sweeper=bz_optuna): pruning through intermediate values, failed
trials recorded, and the trial states in the sweep summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402

from hydra_plugins.bz_optuna_sweeper.sweeper import distribution  # noqa: E402

BZ_TRAIN = str(Path(sys.executable).with_name("bz-train"))


@pytest.mark.parametrize(("expression", "expected"), [
    ("interval(0.1, 1.0)", optuna.distributions.FloatDistribution(0.1, 1.0)),
    ("tag(log, interval(1e-5, 10))", optuna.distributions.FloatDistribution(1e-5, 10.0, log=True)),
    ("tag(int, interval(1, 8))", optuna.distributions.IntDistribution(1, 8)),
    ("range(16, 65, 16)", optuna.distributions.IntDistribution(16, 64, step=16)),
    ("choice(adam, sgd)", optuna.distributions.CategoricalDistribution(["adam", "sgd"])),
])
def test_sweep_expressions_become_distributions(expression: str, expected: object) -> None:
    (override,) = OverridesParser.create().parse_overrides([f"key={expression}"])
    assert distribution(override) == expected


@pytest.mark.slow
def test_six_trials_with_a_pruner_prune_the_bad_ones(tmp_path: Path) -> None:
    """SGD over a learning-rate range that is mostly useless (1e-6) or diverging (huge):
    MedianPruner stops trials that fall behind, a diverging trial (NaN loss) is recorded as
    failed, and the sweep runs all 6 trials."""
    sweep = tmp_path / "sweep"
    cmd = [
        BZ_TRAIN, "hparams_search=optuna", "optimizer=sgd",
        "hydra.sweeper.params={optimizer.lr: 'choice(1e-6, 0.3, 1e6)'}",
        "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.sampler.n_startup_trials=6",
        "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0",
        "epochs=4", "trainer.limit_train_batches=4", "print_config=false", "plugins=none",
        f"paths.runs_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    statuses = [job["status"] for job in summary["jobs"]]
    assert len(statuses) == 6, statuses
    assert "pruned" in statuses, statuses
    assert "complete" in statuses, statuses
    assert "failed" in statuses, statuses  # lr=1e6: NaN loss, recorded, the sweep went on
    pruned = next(job for job in summary["jobs"] if job["status"] == "pruned")
    assert pruned["epochs"] < 4 and pruned["stopped_early"]
    results = (sweep / "optimization_results.yaml").read_text()
    assert "pruned" in results
    # report.png holds Optuna's own plots after bz's panels.
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    (drew,) = [line for line in proc.stdout.splitlines() if line.startswith(f"drew {sweep / 'report.png'} (")]
    assert drew.endswith("; Optuna: optimization history; Optuna: parameter importances)"), drew
    panels = int(drew.split(" (", 1)[1].split()[0])
    assert imread(sweep / "report.png").shape == (400 * -(-panels // 3), 520 * min(panels, 3), 4)


@pytest.mark.slow
def test_trials_with_the_same_parameters_each_train_their_own_run(tmp_path: Path) -> None:
    """Pruning makes a trial's outcome depend on the other trials, so a trial never reuses
    or continues another run's result, even one with the same config: each trial trains
    and reports its own epochs. (Reused, a pruned run's stopped-early metrics would be told
    to the study as a complete trial.)"""
    sweep = tmp_path / "sweep"
    cmd = [
        BZ_TRAIN, "hparams_search=optuna", "hydra.sweeper.params={optimizer.lr: 'choice(0.01)', model.dropout: 'choice(0.0)'}",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null",
        # Not a debug run (no limit_*_batches): those are never stored, so nothing could be reused.
        "epochs=2", "data.batch_size=512", "print_config=false",
        "plugins=none", f"paths.runs_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [(row["status"], row["reused"], row["epochs"]) for row in rows] == [("complete", False, 2)] * 2
    assert rows[0]["signature"] != rows[1]["signature"]
    assert rows[0]["metrics"] == rows[1]["metrics"]  # the same config trains the same numbers
    from bz_lightning.plugins.optuna_pruning import open_storage

    spec = json.loads((sweep / "optuna" / "study.json").read_text())
    study = optuna.load_study(study_name=spec["study_name"], storage=open_storage(spec["storage"]))
    assert [sorted(t.intermediate_values) for t in study.trials] == [[0, 1], [0, 1]]
