"""Bad input stops bz-train and bz with exit code 2 and one line naming the key, the value
and what is allowed (with the closest match); no traceback.

``BAD_INPUTS`` are found before anything is built: no output directory, no runs directory.
``LATE_BAD_INPUTS`` can only be found once the run is composed into objects (a checkpoint
to read, data files to open): still one line and exit 2, before any training step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bz_lightning.cli import train as train_cli
from bz_lightning.cli.main import main as bz_main
from bz_lightning.errors import BzCheckpointError, BzConfigError

# A regular file in every test's directory: nothing can be created under it.
A_FILE = "a_file"

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
    # An empty choice (Hydra leaves the key out) and metrics that cannot score this head.
    (["metrics=[]"], ["metrics=[]", "use metrics=none", "available: accuracy"]),
    (["plugins=[]"], ["plugins=[]", "use plugins=none", "available: console_out"]),
    (["metrics=[mse]"], ["metrics.mse", "(regression)", "loss torch.nn.CrossEntropyLoss takes class indices"]),
    (["metrics=[accuracy,mae]"], ["metrics.mae", "(regression)"]),
    # Values of the right type outside what is allowed.
    (["optimizer.lr=nan"], ["optimizer.lr=nan", "expected a number >= 0"]),
    (["optimizer.lr=-1"], ["optimizer.lr=-1", "expected a number >= 0"]),
    (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9]", "expected 2 values, each a number in [0, 1)"]),
    (["optimizer.betas=[0.9,1.5]"], ["optimizer.betas=[0.9, 1.5]", "expected 2 values"]),
    (["data.num_workers=-1"], ["data.num_workers=-1", "expected an integer >= 0"]),
    (["trainer.precision=17"], ["trainer.precision=17", "expected one of", "16-mixed", "bf16-mixed"]),
    (["loss.label_smoothing=5"], ["loss.label_smoothing=5", "expected a number in [0, 1]"]),
    (["epochs=0"], ["epochs=0", "expected an integer >= 1"]),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], ["optimizer.momentum=-0.5", ">= 0"]),
    (["on_batch_error=ignore"], ["on_batch_error=ignore", "expected one of skip, raise"]),
    (["on_nonfinite_loss=warn"], ["on_nonfinite_loss=warn", "expected one of skip, raise"]),
    (["max_skipped_batches=1.5"], ["max_skipped_batches=1.5", "an integer >= 0 or a number in (0, 1)"]),
    # Output places: a name stays a name, every place can be written, before anything runs.
    (["task_name=../.."], ["task_name=../..", "a directory name", "no '/'"]),
    ([f"task_name={'n' * 300}"], ["task_name=nnnn", "1 to 100 characters"]),
    ([f"hydra.run.dir=out/{'d' * 300}"], ["hydra.run.dir=out/ddd", "is 300 bytes long", "at most 255"]),
    ([f"paths.runs_dir={A_FILE}/runs"], [f"paths.runs_dir={A_FILE}/runs", "cannot be a directory", "which is a file"]),
    (["-m", "epochs=1,2", f"hydra.sweep.dir={A_FILE}"], [f"hydra.sweep.dir={A_FILE}", "it is a file"]),
    pytest.param(["paths.runs_dir=/sys/bz-runs"], ["paths.runs_dir=/sys/bz-runs", "cannot be written"],
                 marks=pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys")),
    # Hydra's rerun unpickles a file: code, if the file came from elsewhere.
    (["--experimental-rerun", "sweep/0/.hydra/config.pickle"], ["--experimental-rerun", "pickle", "overrides.yaml"]),
]


def _argv(case) -> list[str]:
    return list((case.values if hasattr(case, "values") else case)[0])


@pytest.mark.parametrize("argv, fragments", BAD_INPUTS, ids=[" ".join(_argv(c))[:60] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_one_message_and_creates_nothing(argv, fragments, tmp_path, monkeypatch,
                                                                 capsys) -> None:
    (tmp_path / A_FILE).write_text("kept\n")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["bz-train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    assert exit_info.value.code == 2
    first = assert_one_line(capsys.readouterr().err, "bz-train", fragments)
    assert first
    assert sorted(p.name for p in tmp_path.iterdir()) == [A_FILE]  # no outputs/, no runs/, no probe left
    assert (tmp_path / A_FILE).read_text() == "kept\n"


def assert_one_line(err: str, prog: str, fragments: list[str]) -> str:
    """The message is one line (then the HYDRA_FULL_ERROR hint) and holds every fragment."""
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith(f"{prog}: error: "), err
    assert lines[1:] == ["(set HYDRA_FULL_ERROR=1 for a traceback)"], err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def test_full_error_raises(monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["bz-train", "optimizer.lrr=0.1"])
    with pytest.raises(BzConfigError, match="did you mean 'lr'"):
        train_cli.main()


@pytest.mark.parametrize("argv, fragment", [
    ("model=mpl", "did you mean 'mlp'?"),
    ("metrics=[accuracy,mse]", "(regression)"),
    ("optimizer.lr=nan", "expected a number >= 0"),
    (f"paths.runs_dir={A_FILE}/runs", "cannot be a directory"),
    # Keys bz sets itself are refused by bz's own table, before Lightning is imported.
    ("trainer.max_epochs=5", "use epochs=5"),
    ("trainer.logger=false", "from the logger group"),
    ("ckpt_path=missing.ckpt", "no such file"),
    ("extra_keys=[epochs]", "one of bz's keys"),
])
def test_config_errors_do_not_import_torch(argv, fragment, tmp_path) -> None:
    """A typo costs a fraction of a second: neither torch nor Lightning is imported."""
    (tmp_path / A_FILE).write_text("")
    code = f"import sys; from bz_lightning.cli.train import main; sys.argv = ['bz-train', {argv!r}]; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


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


# --------------------------------------------------------- found once the run is composed
# Not a debug run (no limit_*_batches): those are never stored or resumed.
QUICK = ["epochs=1", "data.batch_size=128", "plugins=none", "print_config=false", "metrics=none", "hydra.run.dir=run"]


def bz_train(argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["bz-train", *argv])
    train_cli.main()


def _signature_mismatch(tmp: Path, monkeypatch) -> list[str]:
    """A ``last.ckpt`` from another run, copied into this run's checkpoint directory."""
    bz_train(QUICK, monkeypatch)
    (last,) = tmp.glob("runs/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["bz_signature"] = "0123456789abcdef"
    torch.save(checkpoint, last)
    (last.parent / "result.json").unlink()
    return ["bz-train", *QUICK, "hydra.run.dir=run2"]  # the same run, whose checkpoint now says another


def _mnist(tmp: Path, damage: str) -> list[str]:
    from test_data import write_mnist

    raw = tmp / "mnist/MNIST/raw"
    write_mnist(raw)
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20] if damage == "truncated" else b"not a gzip file at all")
    return ["bz-train", *QUICK, "data=mnist", f"data.root={tmp / 'mnist'}", "data.download=false"]


def _empty_checkpoint(tmp: Path) -> list[str]:
    (tmp / "empty.ckpt").write_bytes(b"")
    return ["bz validate", "validate", "empty.ckpt"]


def _init_onto_a_file(tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("mine\n")
    return ["bz init", "init", "notes.txt", "--force"]


def _init_through_a_link(tmp: Path) -> list[str]:
    (tmp / "proj").mkdir()
    (tmp / "proj/README.md").symlink_to(tmp / "elsewhere.md")  # dangling
    return ["bz init", "init", "proj", "--force"]


LATE_BAD_INPUTS = {
    "resume=must with nothing to continue": (
        lambda tmp, mp: ["bz-train", *QUICK, "resume=must"],
        ["resume='must' but there is no checkpoint to continue from in runs/", "/checkpoints"]),
    "a checkpoint of another signature": (
        _signature_mismatch, ["last.ckpt belongs to a run with signature '0123456789abcdef'", "resume='never'"]),
    "a truncated MNIST .gz": (
        lambda tmp, mp: _mnist(tmp, "truncated"),
        ["t10k-labels-idx1-ubyte.gz cannot be read (EOFError", "delete it and run again with data.download=true"]),
    "a garbage MNIST .gz": (
        lambda tmp, mp: _mnist(tmp, "garbage"),
        ["t10k-labels-idx1-ubyte.gz cannot be read (BadGzipFile", "delete it"]),
    "bz validate on a 0-byte file": (
        lambda tmp, mp: _empty_checkpoint(tmp), ["empty.ckpt: the file is empty (0 bytes), not a checkpoint"]),
    "bz validate on a missing file": (
        lambda tmp, mp: ["bz validate", "validate", "nothing.ckpt"], ["checkpoint not found: nothing.ckpt"]),
    "bz init onto a file": (
        lambda tmp, mp: _init_onto_a_file(tmp), ["notes.txt exists and is not a directory"]),
    "bz init through a dangling link": (
        lambda tmp, mp: _init_through_a_link(tmp), ["proj/README.md is a symbolic link", "does not write through"]),
}


@pytest.mark.parametrize("case", LATE_BAD_INPUTS, ids=list(LATE_BAD_INPUTS))
def test_late_bad_input_exits_2_with_one_message(case, tmp_path, monkeypatch, capsys) -> None:
    setup, fragments = LATE_BAD_INPUTS[case]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    prog, *argv = setup(tmp_path, monkeypatch)
    capsys.readouterr()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    finished = set(tmp_path.rglob("metrics.json"))
    with pytest.raises(SystemExit) as exit_info:
        if prog == "bz-train":
            bz_train(argv, monkeypatch)
        else:
            bz_main(argv)
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, prog, fragments)
    for path, content in before.items():  # nothing the user had is lost or overwritten
        assert path.read_bytes() == content, path
    assert not (tmp_path / "elsewhere.md").exists()
    assert set(tmp_path.rglob("metrics.json")) == finished  # no run went to the end


def test_full_error_shows_the_traceback_of_a_checkpoint_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(BzCheckpointError, match="resume='must'"):
        bz_train([*QUICK, "resume=must"], monkeypatch)


# ----------------------------------------------------------- what a failing run tells you
FLAKY_MODEL = '''
from torch import nn


class Flaky(nn.Module):
    """A linear model whose every 3rd training batch gives a NaN loss (or raises)."""

    def __init__(self, input_shape, num_classes, fail="nan"):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
        self.fail, self.calls = fail, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls % 3 == 0:
                if self.fail == "raise":
                    raise RuntimeError("flaky batch")
                out = out * float("nan")
        return out
'''


def _flaky_project(tmp: Path) -> None:
    (tmp / "flaky_model.py").write_text(FLAKY_MODEL)
    (tmp / "conf/model").mkdir(parents=True)
    (tmp / "conf/model/flaky.yaml").write_text(
        "_target_: flaky_model.Flaky\ninput_shape: ${data.input_shape}\nnum_classes: ${data.num_classes}\n"
        "fail: nan\n")


def test_the_nan_message_names_bz_train_keys_that_work(tmp_path, monkeypatch) -> None:
    """The NaN message recommends ``on_nonfinite_loss=skip``; bz-train takes that key (and
    ``max_skipped_batches``, ``on_batch_error``) and Trainer.train gets them."""
    from bz_lightning.errors import BzError, NonFiniteLossError

    _flaky_project(tmp_path)
    run = [*QUICK, "model=flaky", "trainer.limit_train_batches=6"]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(NonFiniteLossError) as info:
        bz_train(run, monkeypatch)
    assert "trainer.gradient_clip_val=" in str(info.value)
    recommended = [word for word in str(info.value).replace(")", " ").split() if word.startswith("on_nonfinite")]
    assert recommended == ["on_nonfinite_loss=skip"]

    bz_train([*run, *recommended, "hydra.run.dir=skip"], monkeypatch)
    record = json.loads((tmp_path / "skip/metrics.json").read_text())
    assert record["skipped_batches"] == 2 and record["epochs"] == 1  # batches 3 and 6 of 6

    with pytest.raises(BzError, match=r"2 batches failed, more than max_skipped_batches=1 allows"):
        bz_train([*run, *recommended, "max_skipped_batches=1", "resume=never", "hydra.run.dir=budget"],
                 monkeypatch)
    with pytest.raises(RuntimeError, match="flaky batch"):
        bz_train([*run, "model.fail=raise", "on_batch_error=raise", "hydra.run.dir=raise"], monkeypatch)


def test_a_metric_that_computes_several_values_is_named(train_loader) -> None:
    from torch import nn

    from bz_lightning import Trainer
    from bz_lightning.errors import BzError
    from bz_lightning.metrics import Metric
    from conftest import make_model

    class PerClass(Metric):
        def reset(self) -> None:
            self.counts = torch.zeros(3)

        def update(self, preds, targets) -> None:
            self.counts += torch.bincount(targets, minlength=3)

        def compute(self):
            return self.counts  # three values, not one

    model = make_model()
    with pytest.raises(BzError, match=r"metric 'per_class' \(PerClass\): compute\(\) must return one number, "
                                      r"got a tensor of shape \(3,\)"):
        Trainer().train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), train_loader,
                        device="cpu", compile=False, metrics=[PerClass("per_class")])


def _bz_train_process(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen[str]:
    # SIGINT as a terminal delivers it: not ignored, whatever the test runner's parent did.
    return subprocess.Popen([sys.executable, "-m", "bz_lightning.cli.train", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


@pytest.mark.slow
def test_ctrl_c_saves_last_checkpoint_exits_130_and_rerun_continues(tmp_path) -> None:
    # 180 batches an epoch: Ctrl-C lands well before the 20th epoch ends, on any machine.
    quick = ["plugins=none", "print_config=false", "data.batch_size=8"]
    command = [*quick, "epochs=20"]  # the same command continues: more epochs would be another run
    proc = _bz_train_process(command, tmp_path)
    deadline = time.time() + 120
    while not list(tmp_path.glob("runs/*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.2)  # the first epoch ended: training is under way
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "training stopped by Ctrl-C" in out and "Traceback" not in out
    (last,) = tmp_path.glob("runs/*/checkpoints/last.ckpt")
    stopped = torch.load(last, weights_only=True)
    assert stopped["bz_checkpoint_version"] == 1
    assert stopped["epoch"] < 19, "the run ended before Ctrl-C"
    rerun = subprocess.run([sys.executable, "-m", "bz_lightning.cli.train", *command, "hydra.run.dir=run"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = json.loads((tmp_path / "run/metrics.json").read_text())
    assert record["resumed_from"].endswith("last.ckpt") and record["epochs"] == 20
    assert re.search(r"resuming run \w+ from \S+last\.ckpt \(epoch \d+ done", rerun.stdout + rerun.stderr)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_still_with_130(tmp_path) -> None:
    script = Path(__file__).with_name("_resume_script.py")
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, str(script), "train", str(tmp_path / "ckpt"), str(tmp_path / "out.pt"),
                             "50", "--slow", "0.5"], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)  # the next batch sleeps half a second after its step: both signals land in it
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Ctrl-C again to stop at once" in out and "training stopped by Ctrl-C" not in out


def _can_mount_tmpfs() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -m` and mount rights (root) for a tiny tmpfs")
def test_a_full_disk_is_reported_as_no_space_left_on_the_file(tmp_path) -> None:
    """A real full filesystem: a 64 KiB tmpfs, in a mount namespace of the test's own, holds
    ``paths.runs_dir``; the first ``last.ckpt`` does not fit. By default the failed write is
    logged (naming the file and "no space left") and training goes on (issue 16's
    ``on_checkpoint_error``); with ``trainer.on_checkpoint_error=raise`` it is one line, exit 2."""
    full = tmp_path / "full"
    full.mkdir()
    command = (f'mount -t tmpfs -o size=64k tmpfs {full} && exec "$0" "$@"')

    def run(*overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "-m", "sh", "-c", command, sys.executable, "-m", "bz_lightning.cli.train",
                               *QUICK, f"paths.runs_dir={full}/runs", *overrides], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    logged = run()
    assert logged.returncode == 0, logged.stdout[-2000:] + logged.stderr[-2000:]
    assert f"cannot write checkpoint {full}/runs/" in logged.stdout and "no space left;" in logged.stdout
    assert "unexpected pos" not in logged.stdout

    proc = run("trainer.on_checkpoint_error=raise")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last_lines = "\n".join(proc.stderr.strip().splitlines()[-2:])  # after Lightning's warnings
    line = assert_one_line(last_lines, "bz-train", [f"no space left on {full}/runs/", "/checkpoints/last.ckpt"])
    assert "unexpected pos" not in line


def test_the_precisions_allowed_are_lightnings() -> None:
    """``trainer.precision`` is checked before Lightning is imported, against a copy of
    Lightning's list; this keeps the copy equal to the installed Lightning's."""
    import typing

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    from bz_lightning.config import PRECISIONS

    lightning = [v for arg in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(arg)]
    assert sorted(map(repr, PRECISIONS)) == sorted(map(repr, lightning))
