"""bz-train's front door, as a user meets it in a project made by ``bz init``: tab completion,
``--cfg job`` and a trailing ``-m``, sweeping experiments, what the console shows (one
summary, no adverts, a sweep's config once), a missing optional package, the dependencies a
plain install brings."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from bz_lightning.cli._init import PROJECT_FILES, write_project

ROOT = Path(__file__).resolve().parents[1]
BZ_TRAIN = str(Path(sys.executable).with_name("bz-train"))
# A run of a few steps, nothing kept between tests.
QUICK = ["epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "resume=never"]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        executable: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(executable or [BZ_TRAIN]), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path / "proj")
    return tmp_path / "proj"


def readme_commands() -> list[list[str]]:
    """The ``bz-train`` command lines the README of a ``bz init`` project shows."""
    lines = [line.split("#", 1)[0].strip() for line in PROJECT_FILES["README.md"].splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("bz-train ")]


# ------------------------------------------------------------------------ tab completion
def complete(line: str, cwd: Path) -> list[str]:
    proc = run(["-sc", "query=bash"], cwd, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_tab_completion_lists_the_projects_options_beside_bz_trains(project: Path, tmp_path: Path) -> None:
    assert complete("bz-train model=", project) == ["model=cnn", "model=mlp", "model=tiny"]
    assert complete("bz-train experiment=", project) == ["experiment=example", "experiment=mnist",
                                                         "experiment=regression"]
    assert "data=digits_small" in complete("bz-train data=", project)
    # Elsewhere, bz-train's own only.
    assert complete("bz-train model=", tmp_path) == ["model=cnn", "model=mlp"]


# ------------------------------------------------------------- --cfg job, a trailing -m
def test_the_project_readme_shows_each_form() -> None:
    forms = readme_commands()
    assert ["+experiment=example", "--cfg", "job"] in forms
    assert any(args[0] == "-m" for args in forms)


@pytest.mark.parametrize("args", [
    ["+experiment=example", "--cfg", "job"],  # as the project's README shows it
    ["--cfg", "job", "+experiment=example"],
    ["+experiment=example", "epochs=2", "--cfg", "job"],
    ["model=tiny", "--cfg", "job", "--resolve"],
], ids=" ".join)
def test_cfg_job_shows_the_projects_config(project: Path, args: list[str]) -> None:
    proc = run(args, project)
    assert proc.returncode == 0, proc.stderr
    assert "unrecognized arguments" not in proc.stderr
    assert "_target_: project_models.TinyNet" in proc.stdout
    assert not (project / "outputs").exists()  # nothing ran


def test_every_bz_train_command_of_the_project_readme_passes_the_checks(project: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bz_lightning.cli._launch import PreparedRun, preflight, prepare_argv

    monkeypatch.chdir(project)
    for args in readme_commands():  # composed and validated, each of its jobs too
        checked = preflight(prepare_argv(args))
        assert isinstance(checked, PreparedRun) == ("-m" not in args and "--cfg" not in args), args


@pytest.mark.slow
def test_a_trailing_m_sweeps_in_a_project_with_one_config_and_one_summary(project: Path) -> None:
    # The README's sweep, with -m at the end and a few steps per job.
    args = [a for a in next(a for a in readme_commands() if a[0] == "-m") if a != "-m"]
    proc = run([*args, *QUICK, "-m"], project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    sweep = next((project / "outputs/example/multiruns").iterdir())
    summary = json.loads((sweep / "summary.json").read_text())
    assert [(j["job"], j["status"]) for j in summary["jobs"]] == [("0", "complete"), ("1", "complete")]
    assert [j["overrides"][1] for j in summary["jobs"]] == ["model=tiny", "model=mlp"]
    # The sweep's config once, before its first job; no job prints its own.
    assert proc.stdout.count("sweep config (") == 1 and proc.stdout.count("\ntask_name: ") == 1
    assert proc.stdout.count("sweep summary:") == 1
    # One end-of-run summary per job, no Lightning advert.
    assert proc.stdout.count("training finished: ") == 2 and "final (" not in proc.stdout
    assert "Tip:" not in out and "litlogger" not in out and "litmodels" not in out


# ------------------------------------------------------------------- sweeping experiments
@pytest.mark.slow
def test_experiment_glob_sweeps_experiments_that_set_their_own_task_name(tmp_path: Path) -> None:
    from test_data import write_mnist

    write_mnist(tmp_path / "mnist/MNIST/raw")
    (tmp_path / "conf/experiment").mkdir(parents=True)
    # A second experiment on MNIST, with a task_name of its own, as bz's mnist experiment has.
    (tmp_path / "conf/experiment/mnist_mlp.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /data: mnist
          - override /model: mlp
        task_name: mnist_mlp
        """))
    # data.root exists in every job (both use data=mnist) but not in the base config (digits).
    proc = run(["-m", "experiment=glob(*,exclude=regression)", f"data.root={tmp_path / 'mnist'}", "data.download=false",
                "plugins=none", *QUICK], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Could not override" not in out
    # One sweep directory (the base config's task_name), holding both jobs.
    (sweep,) = (tmp_path / "outputs").glob("*/multiruns/*")
    assert sweep.parent.parent.name == "train"
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = {j["overrides"][0]: j for j in summary["jobs"]}
    assert set(jobs) == {"experiment=mnist", "experiment=mnist_mlp"}
    assert all(j["status"] == "complete" and j["metrics"]["val_loss"] is not None for j in jobs.values())
    assert {json.loads((sweep / j["job"] / "metrics.json").read_text())["output_dir"] for j in jobs.values()} == \
        {str(sweep / j["job"]) for j in jobs.values()}
    assert "best job: " in proc.stdout and "best job: none" not in proc.stdout
    # Without a console plugin, bz-train prints each job's final values itself, once.
    assert proc.stdout.count("final (1 epoch, ") == 2


def test_a_key_no_job_has_is_still_refused_with_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bz_lightning.cli._launch import preflight
    from bz_lightning.errors import BzConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BzConfigError, match=r"data\.rooot.*did you mean 'root'"):
        preflight(["-m", "experiment=glob(*)", "data.rooot=x"])


def test_a_sweep_gets_its_overrides_as_each_job_composes_them(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from bz_lightning.cli._launch import preflight
    from bz_lightning.errors import BzConfigError

    monkeypatch.chdir(tmp_path)
    # The regression experiment's data (diabetes) has no root: that job is named.
    with pytest.raises(BzConfigError, match=r"^the sweep's job experiment=regression data.root=x epochs=2 "
                                            r"model.dropout=0.1: data.root=x: unknown key"):
        preflight(["-m", "experiment=glob(*)", "data.root=x", "epochs=2", "model.dropout=0.1,0.2"])
    argv = preflight(["-m", "experiment=glob(*,exclude=regression)", "data.root=x", "epochs=2",
                      "model.dropout=0.1,0.2"])
    assert isinstance(argv, list)
    # data.root is not in the base config (data=digits): set-or-add; epochs and the model's
    # dropout are: left as they are.
    assert argv[:4] == ["experiment=glob(*,exclude=regression)", "++data.root=x", "epochs=2", "model.dropout=0.1,0.2"]
    sweep_dir = json.loads(argv[4].removeprefix("hydra.sweep.dir="))
    assert re.fullmatch(r"outputs/train/multiruns/[0-9_-]+.*", sweep_dir), sweep_dir
    assert argv[5:] == ["-m"]


# ----------------------------------------------------------------------- what is printed
@pytest.mark.slow
def test_a_run_ends_with_one_summary_and_no_lightning_advert(tmp_path: Path) -> None:
    proc = run(["plugins=[console_out]", *QUICK, "hydra.run.dir=run"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    record = json.loads((tmp_path / "run/metrics.json").read_text())
    assert "Tip:" not in out and "litlogger" not in out and "litmodels" not in out
    assert "`Trainer.fit` stopped" not in out
    assert proc.stdout.count("\ntask_name: ") + proc.stdout.startswith("task_name: ") == 1  # the config, once
    # The console's summary holds the final values; bz-train adds where it saved them, once.
    assert proc.stdout.count("training finished: ") == 1 and proc.stdout.count("  final  ") == 1
    assert f"val_loss {record['metrics']['val_loss']:.4f}" in proc.stdout.split("training finished: ")[1]
    assert "final (" not in proc.stdout
    assert proc.stdout.count(f"saved {tmp_path / 'run'}/metrics.json") == 1


@pytest.mark.slow
def test_ddp_epoch_values_are_logged_without_lightnings_sync_dist_warning(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.trainer.connectors.logger_connector import result

    from bz_lightning.cli.train import CONF_DIR, train

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.devices=1", "plugins=none", "print_config=false",
                                          f"paths.output_dir={tmp_path}", f"paths.runs_dir={tmp_path / 'runs'}",
                                          *QUICK])
    result.warning_cache.clear()  # Lightning warns once per process and message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = train(cfg)
    assert [str(w.message) for w in caught if "sync_dist" in str(w.message)] == []
    assert set(record["metrics"]) == {f"{s}_{m}" for s in ("train", "val") for m in ("loss", "accuracy", "f1_score")}


# ------------------------------------------------------------------- packages and extras
BLOCKED_IMPORT = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
sys.meta_path.insert(0, Blocked())
sys.argv = ["bz-train", *sys.argv[1:]]
from bz_lightning.cli.train import main
main()
"""


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_optuna_search_without_optuna_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    assert any(req.startswith("optuna") for req in _extras()["optuna"])
    proc = run(["hparams_search=optuna", *QUICK], tmp_path,
               executable=[sys.executable, "-c", BLOCKED_IMPORT.format(module="optuna")])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0] == ("bz-train: error: hparams_search=optuna: needs optuna, which is not "
                                           "installed; pip install 'bz-lightning[optuna]'")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "outputs").exists()  # before anything ran


def test_a_plain_install_brings_what_the_default_run_and_bz_init_need() -> None:
    from importlib.metadata import requires

    from bz_lightning.cli._init_bz import BZ_PROJECT_FILES

    plain = [r for r in requires("bz-lightning") or [] if "extra ==" not in r]
    assert any(re.match(r"scikit-learn\s*[<>=]", r) and "<" in r for r in plain), plain  # bounded
    # What needs it: the default data (digits) and both layouts of `bz init`.
    assert "sklearn" in (ROOT / "bz_lightning/data/digits.py").read_text()
    assert "sklearn" in "".join(BZ_PROJECT_FILES.values())
