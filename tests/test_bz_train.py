"""``bz train`` on a bz project, end to end in real processes.

The project is the spec's ``../shared/spec/bz-project`` when it is beside this checkout,
copied with ``bz.`` -> ``bz_lightning.`` in its imports (as a migrating user does; the
spec's copy reads ``bz_lightning.`` already); without it, what ``bz init --layout bz``
writes, whose code and configs are the spec project's (checked below when the spec is
there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bz_lightning.cli._init import write_project
from bz_lightning.cli._init_bz import BZ_PROJECT_FILES

SPEC_PROJECT = Path(__file__).resolve().parents[2] / "shared" / "spec" / "bz-project"
#: The spec project's files that ``bz init --layout bz`` writes as they are.
SPEC_FILES = ("train.py", "model.py", "bz_config.json", "flat_config.json")


def bz(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bz_lightning.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})


def spec_project(destination: Path) -> Path:
    """The spec's bz project in ``destination``, with ``bz.`` -> ``bz_lightning.`` in the
    imports of its modules."""
    if SPEC_PROJECT.is_dir():
        shutil.copytree(SPEC_PROJECT, destination)
    else:
        write_project(destination, layout="bz")
    for script in destination.glob("*.py"):
        text = script.read_text()
        script.write_text(re.sub(r"^(from|import) bz\.", r"\1 bz_lightning.", text, flags=re.MULTILINE))
    return destination


def records(project: Path) -> list[dict]:
    """Every run's metrics.json under the project, oldest first."""
    return [json.loads(p.read_text()) for p in sorted((project / "outputs/train/runs").glob("*/metrics.json"))]


def test_init_layout_bz_writes_the_specs_project() -> None:
    if not SPEC_PROJECT.is_dir():
        pytest.skip(f"no spec beside this checkout ({SPEC_PROJECT})")
    assert {name: BZ_PROJECT_FILES[name] for name in SPEC_FILES} == {
        name: (SPEC_PROJECT / name).read_text() for name in SPEC_FILES}


def expected_validation_metrics(project: Path, checkpoint: Path) -> dict[str, float]:
    """The checkpoint's weights on the project's validation split, scored by scikit-learn."""
    code = f"""
        import json, sys, torch
        from sklearn import metrics
        sys.path.insert(0, {str(project)!r})
        from model import DigitsNet
        from sklearn.datasets import load_digits
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        val = order[1400:]
        model = DigitsNet(hidden=64)
        state = torch.load({str(checkpoint)!r}, weights_only=True)["state_dict"]
        model.load_state_dict({{k[len("model."):]: v for k, v in state.items()}})
        with torch.no_grad():
            pred = model(x[val]).argmax(1).numpy()
        true = y[val].numpy()
        print(json.dumps({{
            "val_accuracy": metrics.accuracy_score(true, pred),
            "val_precision": metrics.precision_score(true, pred, average="macro", zero_division=0),
            "val_recall": metrics.recall_score(true, pred, average="micro"),
        }}))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_spec_project_trains_records_and_continues(tmp_path: Path) -> None:
    project = spec_project(tmp_path / "project")
    first = bz("train", cwd=project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    # bz_config.json: 3 epochs, console_out (bz-train's cadence: every 10 batches) and early stopping.
    assert "epoch 1/3  train 22/22  loss " in out and "epoch 1/3  val 7/7  loss " in out  # refreshed by time
    assert "training finished: 3 epochs in " in out
    (record,) = records(project)
    assert record["status"] == "complete" and record["epochs"] == 3 and not record["reused"]
    assert record["resumed_from"] is None and record["overrides"] == []
    assert sorted(record["metrics"]) == sorted(f"{split}_{name}" for split in ("train", "val")
                                               for name in ("loss", "accuracy", "precision", "recall"))
    # One end-of-run summary: the console's; bz adds only where the record went.
    assert out.count("training finished: ") == 1 and out.count("  final  train_loss ") == 1
    assert "final (" not in out and out.count("saved ") == 1
    assert out.rstrip().endswith(f"saved {record['output_dir']}/metrics.json")
    run_dir = project / "outputs/train/runs" / Path(record["output_dir"]).name
    assert {p.name for p in run_dir.iterdir()} == {"metrics.json", "config.json", "train.log"}
    # Checkpoints where bz-train puts them: runs/<signature>/checkpoints, every epoch (interval 1).
    checkpoints = project / "runs" / record["signature"] / "checkpoints"
    assert record["checkpoint_dir"] == str(Path("runs") / record["signature"] / "checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch-1.ckpt", "epoch-2.ckpt", "epoch-3.ckpt", "final-weights.pt", "last.ckpt", "result.json"]
    # The recorded validation metrics are the last epoch's weights scored by scikit-learn
    # (train.py's metrics: Accuracy(), Precision(average="macro"), Recall()).
    expected = expected_validation_metrics(project, checkpoints / "epoch-3.ckpt")
    assert {k: record["metrics"][k] for k in expected} == pytest.approx(expected, abs=1e-6)
    assert record["metrics"]["val_accuracy"] > 0.8

    # The same command reuses the finished run, loudly; more epochs is another run.
    same = bz("train", cwd=project)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    reused = records(project)[-1]
    assert reused["reused"] and reused["signature"] == record["signature"] and reused["metrics"] == record["metrics"]
    assert f"reused the finished run {record['signature']}" in same.stdout
    again = bz("train", "--epochs", "4", cwd=project)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = records(project)[-1]
    assert second["signature"] != record["signature"] and second["epochs"] == 4
    assert second["resumed_from"] is None and not second["reused"] and second["overrides"] == ["epochs=4"]
    assert "epoch 1/4  train_loss" in again.stdout and "epoch 4/4  train_loss" in again.stdout


PLUGIN_PACKAGE = '''
    from bz_lightning.plugins import Plugin

    class Greeter(Plugin):
        def __init__(self, greeting="hello"):
            super().__init__()
            self.greeting = greeting

        def end_epoch(self, context):
            print(f"{self.greeting} from epoch {context.epoch}: {context.training_batch_count} batches", flush=True)
'''


@pytest.mark.slow
def test_init_layout_bz_runs_with_a_flat_config_and_an_entry_point_plugin(tmp_path: Path) -> None:
    init = bz("init", "--layout", "bz", "proj", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "proj"
    assert sorted(p.name for p in project.iterdir()) == [
        "README.md", "bz_config.json", "flat_config.json", "model.py", "train.py"]
    assert init.stdout.endswith("next: cd proj && bz train\n")
    # A plugin from an installed package's entry point, named in the config.
    site = tmp_path / "site"
    (site / "greeter_pkg-0.1.dist-info").mkdir(parents=True)
    (site / "greeter_pkg.py").write_text(textwrap.dedent(PLUGIN_PACKAGE))
    (site / "greeter_pkg-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: greeter-pkg\nVersion: 0.1\n")
    (site / "greeter_pkg-0.1.dist-info" / "entry_points.txt").write_text("[bz.plugins]\ngreeter = greeter_pkg:Greeter\n")
    (project / "flat.json").write_text(json.dumps({
        "epochs": 1,
        "hyperparameters": {"hidden": 16, "batch_size": 128, "learning_rate": 0.003},
        "metrics": ["accuracy"],
        "plugins": ["console_out", {"greeter": {"greeting": "hi"}}],
    }))
    run = bz("train", "--config", "flat.json", "--device", "cpu", cwd=project, env={"PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "hi from epoch 0: 11 batches\n" in run.stdout  # 1400 samples in batches of 128
    (record,) = records(project)
    assert record["epochs"] == 1 and record["overrides"] == ["config=flat.json", "device=cpu"]
    assert json.loads((project / record["output_dir"] / "config.json").read_text())["training"] == {
        "epochs": 1, "batch_size": 128, "learning_rate": 0.003, "device": "cpu", "compile": True,
        "checkpoint_interval": 0}


@pytest.mark.parametrize(("config", "args", "message"), [
    ('{"training": {"epochs": 3,}}', [],
     "bz train: error: bz_config.json: Expecting property name enclosed in double quotes: line 1 column 27 (char 26)"),
    (None, ["--config", "nope.json"], "bz train: error: nope.json: bz config file not found"),
    ('{"plugins": {"consol_out": {"enabled": true}}}', [],
     "bz train: error: bz_config.json: plugins.consol_out: unknown plugin 'consol_out' (did you mean "
     "'console_out'?); available: console_out, early_stopping, optuna_pruning, tensorboard"),
    ('{"metrics": ["acuracy"]}', [],
     "bz train: error: bz_config.json: metrics.acuracy: unknown metric 'acuracy' (did you mean 'accuracy'?)"),
    ('{"training": {"epochs": 0}}', [], "bz train: error: bz_config.json: training.epochs=0: expected an integer >= 1"),
    ("{}", ["--device", "gpu"], "bz train: error: --device gpu: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
], ids=["bad-json", "missing-file", "unknown-plugin", "unknown-metric", "bad-value", "bad-device"])
def test_config_errors_exit_2_with_one_line_before_anything_runs(tmp_path: Path, config: str | None,
                                                                   args: list[str], message: str) -> None:
    project = spec_project(tmp_path / "project")
    if config is not None:
        (project / "bz_config.json").write_text(config)
    proc = bz("train", *args, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(message)
    assert "Traceback" not in proc.stderr
    assert not (project / "outputs").exists() and not (project / "runs").exists()  # nothing ran


def test_a_project_still_importing_bz_is_told_what_to_rename(tmp_path: Path) -> None:
    project = spec_project(tmp_path / "project")
    script = project / "train.py"
    script.write_text(re.sub(r"^from bz_lightning\.", "from bz.", script.read_text(), flags=re.MULTILINE))
    proc = bz("train", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        "bz train: error: train.py imports 'bz': bz is bz_lightning here; replace 'bz.' with 'bz_lightning.' in its "
        "imports (e.g. from bz_lightning.config import get_config_manager)")


def test_cli_names_of_the_spec() -> None:
    import bz_lightning.cli as cli
    from bz_lightning.config import TrainingSpecification

    for name in ("main", "create_parser", "run_training", "run_validation", "run_init", "load_plugins_from_config",
                 "load_metrics_from_config", "TrainingSpecification"):
        assert name in cli.__all__ and getattr(cli, name) is not None
    assert cli.TrainingSpecification is TrainingSpecification
    import bz_lightning.cli.main  # noqa: F401  (the submodule: it used to shadow main())

    assert callable(cli.main)
    with pytest.raises(SystemExit) as info:
        cli.main(["list-metrics"])
    assert info.value.code == 0
    args = cli.create_parser().parse_args(["train", "--epochs", "2", "--device", "cpu", "--config", "c.json"])
    assert (args.command, args.epochs, args.device, args.config, args.resume) == ("train", 2, "cpu", "c.json", "auto")


def test_config_errors_import_no_torch(tmp_path: Path) -> None:
    """A typo costs a fraction of a second: nothing heavy is imported before it is reported."""
    (tmp_path / "bz_config.json").write_text('{"plugins": ["consol_out"]}')
    code = ("import sys\nfrom bz_lightning.cli.main import main\ntry:\n    main(['train'])\nexcept SystemExit as e:\n"
            "    print(e.code, [m for m in ('torch', 'lightning', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr
