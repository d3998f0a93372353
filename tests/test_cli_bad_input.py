"""Bad command lines stop bz-train before anything is built: exit code 2, one message
naming the key, the value, what is allowed and the closest match; no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bz_lightning.cli import train as train_cli
from bz_lightning.errors import BzConfigError

BAD_INPUTS = [
    # (arguments, fragments the message must contain)
    (["optimizer.lrr=0.1"], ["optimizer.lrr=0.1", "unknown key", "did you mean 'lr'?", "takes: lr"]),
    (["+optimizer.lrr=0.1"], ["optimizer.lrr=0.1", "unknown key", "did you mean 'lr'?"]),
    (["epoch=3"], ["epoch=3", "unknown key", "did you mean 'epochs'?"]),
    (["model=mpl"], ["model=mpl", "config group 'model'", "did you mean 'mlp'?", "available: cnn, mlp"]),
    (["trainer=gpux"], ["trainer=gpux", "did you mean 'gpu'?"]),
    (["+experiment=mnsit"], ["experiment=mnsit", "did you mean 'mnist'?"]),
    (["metrics=[accuracy,f1_scor]"], ["f1_scor", "did you mean 'f1_score'?"]),
    (["plugins.console_out.update_intervall=5"], ["update_intervall", "did you mean 'update_interval'?"]),
    (["epochs=abc"], ["epochs=abc", "expected an integer"]),
    (["optimizer.lr=fast"], ["optimizer.lr=fast", "expected a number"]),
    (["trainer.deterministic=true", "compile=maybe"], ["compile=maybe", "expected true or false"]),
    (["data=mnist", "data.root=???"], ["missing required value data.root"]),
    (["data.batch_size=${nope}"], ["bad interpolation at data.batch_size", "nope"]),
    (["optimized_metric=val_acc"], ["optimized_metric=val_acc", "did you mean 'val_accuracy'?"]),
    (["-m", "model=mlp,mpl"], ["model=mpl", "did you mean 'mlp'?"]),
]


@pytest.mark.parametrize("argv, fragments", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_message(argv, fragments, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["bz-train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bz-train: error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert "Traceback" not in err


def test_full_error_raises(monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["bz-train", "optimizer.lrr=0.1"])
    with pytest.raises(BzConfigError, match="did you mean 'lr'"):
        train_cli.main()


def test_config_errors_do_not_import_torch(tmp_path) -> None:
    """A typo costs a fraction of a second: neither torch nor Lightning is imported."""
    code = "import sys; from bz_lightning.cli.train import main; sys.argv = ['bz-train', 'model=mpl']; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
    assert "did you mean 'mlp'?" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["list-metrics"], ["list-plugins"]])
def test_bz_quick_commands_do_not_import_torch(argv, tmp_path) -> None:
    code = f"import sys; from bz_lightning.cli.main import main; main({argv!r})"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported


def test_bz_train_help_lists_groups_with_defaults_and_project_configs_without_torch(tmp_path) -> None:
    (tmp_path / "conf/model").mkdir(parents=True)
    (tmp_path / "conf/model/tiny.yaml").write_text("_target_: project_models.Tiny\n")
    code = "import sys; from bz_lightning.cli.train import main; sys.argv = ['bz-train', '--help']; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
    groups = {line.split()[0]: line.split(None, 1)[1] for line in proc.stdout.split("config groups (")[1]
              .split("examples:")[0].strip().splitlines()[1:]}
    assert groups["model"] == "cnn, mlp*, tiny"
    assert groups["metrics"].startswith("accuracy*, f1_score*")
    assert "trainer" in groups and "hydra" not in groups


def test_cli_modules_import_without_a_cycle(tmp_path) -> None:
    """``_launch`` and ``summary`` take the shared names from ``_constants``, not from ``train``
    (which imports ``_launch``): importing them never imports ``train``."""
    code = ("import sys, bz_lightning.cli._launch, bz_lightning.cli.summary; "
            "print('bz_lightning.cli.train' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
