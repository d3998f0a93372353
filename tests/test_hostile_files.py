"""Files from elsewhere are data: nothing in a checkpoint, or in the directory bz runs in,
runs code. Each attack is a crafted file that would create a marker file if any code in it
ran; the marker must not appear, the command must fail, and the message must name what
was refused."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import bz_lightning
from bz_lightning.cli._checkpoint import stored_config_report
from bz_lightning.cli._launch import compose_run
from bz_lightning.cli.main import main as bz_main
from bz_lightning.errors import BzCheckpointError
from bz_lightning.models import MLP

PACKAGE = Path(bz_lightning.__file__).resolve().parent
SOURCES = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "hydra_plugins").rglob("*.py")]


class Marker:
    """Pickles as a call of ``os.system`` that creates ``path``: what an unrestricted
    ``torch.load`` / ``pickle.load`` of a hostile file would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def bz(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        bz_main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def stored_checkpoint(path: Path, stored_config: dict, hidden: int = 16) -> Path:
    """A checkpoint as bz-train writes it: an MLP's weights under ``model.`` and a stored config."""
    model = MLP(input_shape=[1, 8, 8], num_classes=10, hidden_sizes=[hidden])
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"bz_config": stored_config}}, path)
    return path


# ------------------------------------------------------------------------- the sources
def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    loads = [(path, call) for path in SOURCES for name, call in _calls(path) if name == "torch.load"]
    assert loads, "no torch.load found: the scan looks in the wrong place"
    for path, call in loads:
        keywords = {k.arg: k.value for k in call.keywords}
        flag = keywords.get("weights_only")
        assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}: {ast.unparse(call)}"


def test_the_package_has_no_unrestricted_deserialiser() -> None:
    unsafe = {"pickle.load", "pickle.loads", "marshal.loads", "eval", "exec", "yaml.load", "yaml.unsafe_load",
              "dill.load", "cloudpickle.load", "torch.jit.load"}
    found = [f"{path}:{call.lineno}: {name}" for path in SOURCES for name, call in _calls(path) if name in unsafe]
    assert found == []


# ------------------------------------------------------------------- bz validate attacks
def _stored(**changes: dict) -> dict:
    values = compose_run(["model.hidden_sizes=[16]"])
    values.update(changes)
    return values


def test_validate_refuses_a_stored_target_that_runs_a_command(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    stored = _stored(data={"_target_": "os.system", "_args_": [f"touch {marker}"]})
    ckpt = stored_checkpoint(tmp_path / "evil.ckpt", stored)
    code, out, err = bz("validate", str(ckpt), "model.hidden_sizes=[16]", capsys=capsys)
    assert code == 2 and not marker.exists()
    assert "refused" in err and "_target_ os.system at data" in err and "Traceback" not in err
    assert out == ""


def test_validate_refuses_a_stored_torch_load_of_an_embedded_pickle(tmp_path: Path, capsys) -> None:
    """The attack that ran a shell command through the old ``bz validate``: the stored config
    asks for ``torch.load(weights_only=False)`` of a pickle lying beside the checkpoint."""
    marker = tmp_path / "pwned"
    (tmp_path / "payload.pt").write_bytes(pickle.dumps(Marker(marker)))
    stored = _stored(model={"_target_": "torch.load", "f": str(tmp_path / "payload.pt"), "weights_only": False})
    ckpt = stored_checkpoint(tmp_path / "evil.ckpt", stored)
    code, _, err = bz("validate", str(ckpt), "model.hidden_sizes=[16]", capsys=capsys)
    assert code == 2 and not marker.exists()
    assert "_target_ torch.load at model" in err


def test_validate_refuses_a_checkpoint_that_is_a_hostile_pickle(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Marker(marker)}}, tmp_path / "evil.ckpt")
    code, _, err = bz("validate", str(tmp_path / "evil.ckpt"), capsys=capsys)
    assert code == 2 and not marker.exists()
    assert "refused" in err and "posix.system" in err and "weights_only=True" in err
    assert "weights_only` set to `False`" not in err  # torch's advice to load it unrestricted is not passed on


@pytest.mark.parametrize("resume", ["auto", "must"])
def test_resume_never_unpickles_a_planted_checkpoint(tmp_path: Path, resume: str, caplog) -> None:
    from torch.utils.data import DataLoader

    from bz_lightning import Trainer
    from conftest import make_dataset, make_model

    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    torch.save({"bz_checkpoint_version": 1, "x": Marker(marker)}, ckpt_dir / "last.ckpt")
    model = make_model()
    args = (model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
            DataLoader(make_dataset(16), batch_size=8))
    kwargs = dict(device="cpu", compile=False, checkpoint_dir=str(ckpt_dir), resume=resume)
    if resume == "must":
        with pytest.raises(BzCheckpointError, match=r"resume='must'.*refused: it holds a pickled posix\.system"):
            Trainer().train(*args, **kwargs)
    else:
        result = Trainer().train(*args, **kwargs)
        assert result.resumed_from is None and result.epochs_completed == 1  # trained from scratch
        assert "refused: it holds a pickled posix.system" in caplog.text
    assert not marker.exists()


# -------------------------------------------------------- bz validate builds from your config
def test_validate_builds_your_config_and_names_what_the_stored_one_changed(tmp_path: Path, capsys) -> None:
    ckpt = stored_checkpoint(tmp_path / "run.ckpt", _stored())
    code, out, err = bz("validate", str(ckpt), capsys=capsys)  # the default MLP is [128, 64]: no fit
    assert code == 2 and out == ""
    assert "do not fit the model your config builds (bz_lightning.models.MLP)" in err
    assert "model.hidden_sizes (stored [16], yours [128,64])" in err and "pass: model.hidden_sizes=[16]" in err

    code, out, err = bz("validate", str(ckpt), "model.hidden_sizes=[16]", "--json", capsys=capsys)
    assert code == 0 and "note" not in err
    import json

    metrics = json.loads(out)
    assert set(metrics) == {"val_loss", "val_accuracy", "val_f1_score"}


def test_a_stored_config_is_reported_never_applied(tmp_path: Path, capsys) -> None:
    """The stored run used batch size 32; the user's config says 64. The weights fit either
    way: bz validate evaluates the user's config and says, once, what the stored run differs in."""
    ckpt = stored_checkpoint(tmp_path / "run.ckpt", _stored(data={**_stored()["data"], "batch_size": 32}))
    code, out, err = bz("validate", str(ckpt), "model.hidden_sizes=[16]", capsys=capsys)
    assert code == 0 and "val_loss" in out
    (note,) = [line for line in err.splitlines() if "note:" in line]
    assert "these metrics are for your config" in note
    assert "data.batch_size (stored 32, yours 64)" in note and "pass: data.batch_size=32" in note


def test_a_target_your_config_names_is_allowed_and_others_are_not(tmp_path: Path) -> None:
    values = {"model": {"_target_": "project_models.TinyNet", "hidden": 8}}
    own = {"bz_config": {"model": {"_target_": "project_models.TinyNet", "hidden": 4}}}
    report = stored_config_report("x.ckpt", {"hyper_parameters": own}, values)
    assert report is not None and "model.hidden (stored 4, yours 8)" in report
    other = {"bz_config": {"model": {"_target_": "project_models.Evil"}, "loss": {"_target_": "torch.nn.MSELoss"}}}
    with pytest.raises(BzCheckpointError, match="_target_ project_models.Evil at model"):
        stored_config_report("x.ckpt", {"hyper_parameters": other}, values)
    nested = {"bz_config": {"plugins": {"p": {"cfg": [{"_target_": "subprocess.run"}]}}}}
    with pytest.raises(BzCheckpointError, match=r"_target_ subprocess\.run at plugins\.p\.cfg\[0\]"):
        stored_config_report("x.ckpt", {"hyper_parameters": nested}, values)


# --------------------------------------------------------------- the working directory
@pytest.mark.slow
def test_a_local_module_does_not_shadow_an_installed_package(tmp_path: Path) -> None:
    """bz-train puts the working directory on sys.path for the project's own models, after
    the installed packages: a stray ``sklearn.py`` there is never imported."""
    bz_train = Path(sys.executable).parent / "bz-train"
    if not bz_train.is_file():
        pytest.skip(f"no bz-train console script beside {sys.executable}")
    marker = tmp_path / "shadowed"
    (tmp_path / "sklearn.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('shadow')\n")
    (tmp_path / "project_models.py").write_text(
        "from torch import nn\nclass Tiny(nn.Sequential):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(64, num_classes))\n")
    (tmp_path / "conf/model").mkdir(parents=True)
    (tmp_path / "conf/model/tiny.yaml").write_text(
        "_target_: project_models.Tiny\ninput_shape: ${data.input_shape}\nnum_classes: ${data.num_classes}\n")
    proc = subprocess.run([str(bz_train), "model=tiny", "debug=fdr", "plugins=none", "print_config=false",
                           "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not marker.exists()
    assert "project_models.Tiny" in (tmp_path / "run/config.yaml").read_text()


def test_the_suggested_overrides_never_look_outside_the_config_groups(tmp_path: Path) -> None:
    """Group names in a stored config are the file's: one spelled as a path is not listed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.yaml").write_text("_target_: bz_lightning.models.CNN\n")
    stored = {"bz_config": {str(elsewhere): {"_target_": "bz_lightning.models.CNN"},
                            "model": {"_target_": "bz_lightning.models.CNN"}}}
    report = stored_config_report("x.ckpt", {"hyper_parameters": stored},
                                  {"model": {"_target_": "bz_lightning.models.MLP"}})
    assert report is not None and "model=cnn" in report and "secret" not in report
