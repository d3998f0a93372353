"""``on_checkpoint_error``: a checkpoint write that fails on a real full file system.

The file system is a tmpfs with room for two files (``nr_inodes=3``: its root and two
files), mounted in a private mount namespace of the training subprocess, so nothing is left
mounted whatever happens. The first epoch's ``epoch-1.ckpt`` and ``last.ckpt`` fit; every
later write (``epoch-N.ckpt`` and ``final-weights.pt`` need a file of their own, the next
``last.ckpt`` a temp file beside the old one) fails with ``ENOSPC``, as on a full disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bz_lightning.checkpointing import CheckpointWrites
from bz_lightning.errors import BzConfigError

SCRIPT = """
import json, sys
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from bz_lightning import Trainer
from bz_lightning.plugins import ConsoleOutPlugin, Plugin

directory, policy = sys.argv[1], sys.argv[2]
sigterm_at = int(sys.argv[3]) if len(sys.argv) > 3 else None  # an epoch: SIGTERM after its first batch
torch.manual_seed(0)
x = torch.randn(32, 4)
loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
model = nn.Linear(4, 2)

class Epochs(Plugin):
    def __init__(self):
        self.saved, self.ended = [], []
    def save_checkpoint(self, context):
        self.saved.append(context.epoch)
    def end_epoch(self, context):
        self.ended.append(context.epoch)
    def end_training_batch(self, context):
        if context.epoch == sigterm_at and context.extra["batch_index"] == 0:
            import os, signal
            os.kill(os.getpid(), signal.SIGTERM)

epochs = Epochs()
trainer = Trainer()
trainer.add_plugin(ConsoleOutPlugin(len(loader), update_interval=100, interactive=False))
trainer.add_plugin(epochs)
report = {}
try:
    result = trainer.train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), loader,
                           device="cpu", compile=False, epochs=3, checkpoint_interval=1, checkpoint_dir=directory,
                           on_checkpoint_error=policy)
    report["epochs_completed"] = result.epochs_completed
    report["failures"] = [[f.path, f.epoch, type(f.error).__name__, getattr(f.error, "errno", None)]
                          for f in result.checkpoint_failures]
except OSError as err:
    report["raised"] = [type(err).__name__, err.errno]
except SystemExit as stop:  # Preempted
    report["preempted"] = [stop.code, stop.checkpoint_path, str(stop)]
report["ended"], report["saved"] = epochs.ended, epochs.saved
import os
report["files"] = sorted(os.listdir(directory))
report["last_epoch"] = torch.load(os.path.join(directory, "last.ckpt"), weights_only=True)["epoch"]
print("REPORT " + json.dumps(report))
"""


def _train_on_a_full_file_system(tmp_path: Path, policy: str, *extra: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    mount = f"mount -t tmpfs -o size=4m,nr_inodes=3 tmpfs {disk}"
    probe = subprocess.run([unshare, "--mount", "--map-root-user", "sh", "-c", mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [unshare, "--mount", "--map-root-user", "sh", "-c", f'{mount} && exec "$0" "$@"',
         sys.executable, str(script), str(disk), policy, *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[0][len("REPORT "):]), proc


@pytest.mark.slow
def test_failing_writes_are_logged_counted_and_training_goes_on(tmp_path: Path) -> None:
    report, proc = _train_on_a_full_file_system(tmp_path, "log")
    disk = str(tmp_path / "disk")
    assert proc.returncode == 0, proc.stderr
    assert report["epochs_completed"] == 3 and report["ended"] == [0, 1, 2]
    # The last good checkpoint is kept: last.ckpt still holds the first epoch.
    assert report["files"] == ["epoch-1.ckpt", "last.ckpt"] and report["last_epoch"] == 0
    failed = [[f"{disk}/epoch-2.ckpt", 1], [f"{disk}/last.ckpt", 1], [f"{disk}/epoch-3.ckpt", 2],
              [f"{disk}/last.ckpt", 2], [f"{disk}/final-weights.pt", 2]]
    assert [f[:2] for f in report["failures"]] == failed
    assert {(f[2], f[3]) for f in report["failures"]} == {("BzDiskFullError", 28)}  # ENOSPC, as bz reports it: "no space left on <path>"
    # save_checkpoint fires for the epoch whose epoch-N.ckpt was written, and only for it.
    assert report["saved"] == [0]
    # Logged with the path and the OS error; the console summary counts and lists them
    # (all but final-weights.pt, which is written after the summary; without it no result.json
    # is written, so the run is not reused).
    assert f"cannot write checkpoint {disk}/last.ckpt (epoch 2): no space left;" in proc.stderr
    assert "the previous file there is kept, and training goes on" in proc.stderr
    assert f"cannot write checkpoint {disk}/final-weights.pt (epoch 3)" in proc.stderr
    assert "  checkpoint failures: 4 (training went on)" in proc.stdout
    assert f"    {disk}/epoch-2.ckpt (epoch 2): no space left" in proc.stdout
    assert f"    {disk}/last.ckpt (epoch 3): no space left" in proc.stdout


@pytest.mark.slow
def test_on_checkpoint_error_raise_stops_at_the_first_failing_write(tmp_path: Path) -> None:
    report, proc = _train_on_a_full_file_system(tmp_path, "raise")
    assert report["raised"] == ["BzDiskFullError", 28]
    assert report["ended"] == [0]  # epoch-2.ckpt failed before the second epoch ended
    assert report["files"] == ["epoch-1.ckpt", "last.ckpt"] and report["last_epoch"] == 0


@pytest.mark.slow
def test_preempted_names_no_checkpoint_it_could_not_write(tmp_path: Path) -> None:
    """SIGTERM in the second epoch: the mid-epoch last.ckpt cannot be written, and the
    preemption says so instead of pointing at the first epoch's file."""
    report, proc = _train_on_a_full_file_system(tmp_path, "log", "1")
    code, path, message = report["preempted"]
    assert code == 143 and path is None
    assert "no checkpoint written" in message
    assert report["files"] == ["epoch-1.ckpt", "last.ckpt"] and report["last_epoch"] == 0


@pytest.mark.parametrize("key", ["on_checkpoint_error", "plugin_errors"])
def test_bz_train_takes_the_option(tmp_path: Path, key: str) -> None:
    from hydra import compose, initialize_config_dir

    from bz_lightning.cli._build import lightning_kwargs
    from bz_lightning.cli._validate import validate_config
    from bz_lightning.cli.train import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", f"trainer.{key}=raise"])
        bad = compose("train", overrides=[f"paths.output_dir={tmp_path}", f"trainer.{key}=ignore"])
    values = validate_config(cfg)
    assert values["trainer"][key] == "raise"
    assert key not in lightning_kwargs(values["trainer"])  # bz's, not Lightning's
    with pytest.raises(BzConfigError, match=f"trainer.{key}=ignore: expected one of log, raise"):
        validate_config(bad)


def test_policy_is_checked() -> None:
    with pytest.raises(BzConfigError, match="on_checkpoint_error must be 'log' or 'raise', got 'ignore'"):
        CheckpointWrites("ignore")  # type: ignore[arg-type]
