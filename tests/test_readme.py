"""Every code block of README.md is run, or checked as far as it can be here.

* ``python``: run, in README order, in one fresh interpreter (one namespace, as a reader
  pastes them), after a prelude defining the names the examples assume (``model``,
  ``train_loader``...). A block that starts DDP processes runs as a script of its own.
* ``console`` (and indented ``$ ...`` examples): each ``$`` command runs in a shell, and
  every output line shown must appear in the real output, in order.
* ``bash`` (and indented command lines): ``bz-train ...`` is composed and validated exactly
  as bz-train does before it trains (``preflight``); ``bz train ...`` gets ``bz train``'s
  checks in a copy of the spec's project; other ``bz`` commands are parsed, and those
  without placeholders run. ``make`` and ``pip`` lines are listed in ``NOT_RUN`` with why.
* ``json`` (a bz config), ``toml`` and ``yaml``: parsed (the json as a bz config).
* Output samples and layouts (no language, ``text``): must not hide a command.

A block of any other kind fails the test: decide how to check it before adding it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

#: Command lines shown but not run here, and why.
NOT_RUN = {
    "make test": "the suite itself; CI runs it (.ci/run)",
    "make lint": "CI runs it (.ci/run)",
    "make typecheck": "CI runs it (.ci/run)",
    "make bench": "the benchmarks take minutes; see benchmarks/README.md",
    "pip install 'bz-lightning[launchers]'": "installs packages; the test extra has them",
    "pip install 'bz-lightning[optuna]'": "installs packages; the test extra has it",
    "pip install 'bz-lightning[report]'": "installs packages; the test extra has it",
    "make test-slurm": "starts a SLURM cluster as root; CI runs it (.ci/run)",
    "make bench-gpu": "needs a CUDA device (benchmarks/bench_gpu.py says so without one)",
    ".venv/bin/python tests/slurm/slurm_cluster.py run -- bash": "an interactive shell on a SLURM cluster",
    "make test-lowest": "a second venv and make test; CI runs it (.ci/run)",
    "make test-slow": "the slow tests; CI runs them (.ci/run)",
    "pip install 'bz-lightning[mlflow]'": "installs packages; the test extra has its client (mlflow-skinny)",
    "pip install 'bz-lightning[wandb]'": "installs packages; the test extra has it",
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": "starts a server; tests read the store with MlflowClient",
    "bz-train ckpt_path=outputs/train/runs/2026-01-01_12-00-00/checkpoints/epoch_2-val_loss_0.1234.ckpt epochs=10":
        "needs an earlier run's checkpoint; tests/test_lightning_from_config.py runs it",
}
#: What ``make`` targets run (Makefile), for those checked through their command.
MAKE_COMMANDS = {"make train": "bz-train"}
_COMMANDS = ("bz-train", "bz ", "make ", "pip ", "python ", "$ ")


@dataclass
class Block:
    line: int  # README line of the block's first line
    kind: str  # the fence's language, "indented" or "" (a fence without one)
    text: str

    def __repr__(self) -> str:
        return f"README.md:{self.line} ({self.kind or 'no language'})"


def blocks(path: Path = README) -> list[Block]:
    """Fenced blocks (also indented ones, inside lists) and indented code blocks."""
    lines = path.read_text().split("\n")
    found: list[Block] = []
    fence = re.compile(r"^(\s*)(`{3,})(\S*)\s*$")
    i = 0
    while i < len(lines):
        opening = fence.match(lines[i])
        if opening:
            indent, ticks, kind = opening.groups()
            end = next(j for j in range(i + 1, len(lines)) if re.match(rf"^\s*{ticks}\s*$", lines[j]))
            found.append(Block(i + 2, kind, "\n".join(line[len(indent):] for line in lines[i + 1:end])))
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or (
                    not lines[end].strip() and end + 1 < len(lines) and lines[end + 1].startswith("    "))):
                end += 1
            found.append(Block(i + 1, "indented", "\n".join(line[4:] for line in lines[i:end])))
            i = end
        else:
            i += 1
    return found


def kind_of(block: Block) -> str:
    first = next((line for line in block.text.splitlines() if line.strip()), "")
    if block.kind in ("python", "console", "bash", "json", "toml", "yaml"):
        return block.kind
    if block.kind == "indented":
        if first.startswith("$ "):
            return "console"
        if first.startswith(_COMMANDS):
            return "bash"
    if block.kind in ("", "text", "indented"):
        return "output"
    return "unknown"


def by_kind(kind: str) -> list[Block]:
    return [b for b in blocks() if kind_of(b) == kind]


def commands(block: Block) -> list[tuple[int, str]]:
    """The block's command lines (continuations joined, comments dropped), with README lines."""
    found, pending, start = [], "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        line = re.sub(r"\s+#\s.*$", "", raw).rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not pending:
            start = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        found.append((start, (pending + line).strip()))
        pending = ""
    return found


# ------------------------------------------------------------------------------- the map
def test_every_block_is_of_a_kind_this_test_checks() -> None:
    found = blocks()
    assert len(found) > 20  # the parser sees the README's blocks
    assert [b for b in found if kind_of(b) == "unknown"] == []


def test_output_samples_hide_no_command() -> None:
    for block in by_kind("output"):
        for line in block.text.splitlines():
            assert not line.startswith(_COMMANDS), f"{block!r}: a command in an output sample: {line}"


# ------------------------------------------------------------------------------ commands
def _bz_train_checked(args: list[str], cwd: Path) -> None:
    from bz_lightning.cli._launch import preflight, prepare_argv

    preflight(prepare_argv(args))  # in cwd (the test chdirs there)


_PLACEHOLDERS = {"DIR": "proj", "CKPT": "last.ckpt", "N": "1", "D": "cpu", "FILE": "flat_config.json",
                 "key=value": "data.root=x",
                 "SWEEP_DIR": "sweep"}


def _bz_args(command: str) -> list[str]:
    """A synopsis line (``bz init [DIR] [--force]``) as arguments: optional parts taken,
    placeholders filled."""
    words = shlex.split(command.replace("[", " ").replace("]", " ").replace("...", " "))[1:]
    return [_PLACEHOLDERS.get(word, word) for word in words]


def test_command_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bz_lightning.cli._init import write_project
    from bz_lightning.cli._project import prepare_training
    from bz_lightning.cli.main import create_parser, main

    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    write_project(project, layout="bz")  # the spec's bz project
    checked = 0
    for block in by_kind("bash"):
        for line, command in commands(block):
            where = f"README.md:{line}: {command}"
            if command in NOT_RUN:
                continue
            command = MAKE_COMMANDS.get(command, command)
            if command.startswith("bz-train"):
                try:
                    _bz_train_checked(shlex.split(command)[1:], tmp_path)
                except Exception as err:  # noqa: BLE001 - reported with the line it came from
                    pytest.fail(f"{where}: {type(err).__name__}: {err}")
            elif command.startswith("bz "):
                args = _bz_args(command)
                parsed = create_parser().parse_args(args)
                if parsed.command == "train":
                    with monkeypatch.context() as m:
                        m.chdir(project)
                        prepare_training(parsed)
                elif not set(shlex.split(command)) & set(_PLACEHOLDERS) and "[" not in command:
                    with pytest.raises(SystemExit) as exit_:
                        main(args)
                    assert exit_.value.code == 0, where
            else:
                pytest.fail(f"{where}: not a command this test knows; check it or list it in NOT_RUN")
            checked += 1
    assert checked > 25


def _console_examples() -> list[tuple[Block, list[tuple[str, list[str]]]]]:
    examples = []
    for block in by_kind("console"):
        steps: list[tuple[str, list[str]]] = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip():
                steps[-1][1].append(line)
        examples.append((block, steps))
    return examples


@pytest.mark.parametrize(("block", "steps"), _console_examples(), ids=lambda v: repr(v) if isinstance(v, Block) else "")
def test_console_examples_print_what_they_show(block: Block, steps, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for command, shown in steps:
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=300)
        actual = (proc.stdout + proc.stderr).splitlines()
        position = 0
        for expected in shown:
            assert expected in actual[position:], f"{block!r}: `{command}` did not print\n{expected}\nbut\n" + \
                "\n".join(actual)
            position = actual.index(expected, position) + 1


# ------------------------------------------------------------------------------- data files
def test_json_blocks_are_bz_configs() -> None:
    from bz_lightning.config import ConfigManager

    for block in by_kind("json"):
        ConfigManager.from_mapping(json.loads(block.text), repr(block)).load()


def test_toml_and_yaml_blocks_parse() -> None:
    tomllib = pytest.importorskip("tomllib")
    for block in by_kind("toml"):
        tomllib.loads(block.text)
    for block in by_kind("yaml"):
        assert isinstance(yaml.safe_load(block.text), dict), repr(block)


# ---------------------------------------------------------------------------- python blocks
PRELUDE = '''
# The names README examples assume: a tiny 3-class problem and its model.
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from bz_lightning.metrics import Metric

torch.manual_seed(0)
_x = torch.randn(64, 8)
_y = (_x[:, 0] > 0).long() + (_x[:, 1] > 0).long()
train_loader = DataLoader(TensorDataset(_x[:48], _y[:48]), batch_size=16)
val_loader = DataLoader(TensorDataset(_x[48:], _y[48:]), batch_size=16)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.CrossEntropyLoss()


class MyMetric(Metric):  # the spec's CustomMetric
    def __init__(self, name=None):
        super().__init__(name)
        self.reset()

    def reset(self):
        self.sum, self.count = 0.0, 0

    def update(self, preds, targets):
        self.sum += (preds.argmax(-1) - targets).abs().sum().item()
        self.count += targets.numel()

    def compute(self):
        return self.sum / self.count if self.count else 0.0
'''

# An example that "works" while bz logs an error (a plugin failing every epoch because its
# monitor does not exist, say) is broken too: each block must run without an error record.
RUNNER = '''
import logging, sys, traceback
_errors = []
class _Errors(logging.Handler):
    def emit(self, record):
        _errors.append(record.getMessage().splitlines()[0])
logging.getLogger("bz_lightning").addHandler(_Errors(logging.ERROR))
_namespace = {"__name__": "__main__"}
exec(compile(PRELUDE, "prelude", "exec"), _namespace)
for _line, _source in BLOCKS:
    try:
        exec(compile(_source, f"README.md:{_line}", "exec"), _namespace)
        if _errors:
            raise RuntimeError(f"bz logged errors: {_errors}")
    except BaseException:
        traceback.print_exc()
        print(f"README BLOCK FAILED: README.md:{_line}", file=sys.stderr)
        sys.exit(1)
    print(f"README BLOCK OK: README.md:{_line}", flush=True)
'''


def _starts_processes(block: Block) -> bool:
    return 'strategy="ddp"' in block.text


def _run_python(blocks_: list[Block], tmp_path: Path, processes: int = 1) -> None:
    script = tmp_path / "readme_blocks.py"
    indexed = [(b.line, b.text) for b in blocks_]
    script.write_text(f"PRELUDE = {PRELUDE!r}\nBLOCKS = {indexed!r}\n{RUNNER}")
    # The config the configuration-API example reads: the README's own bz config.
    (tmp_path / "bz_config.json").write_text(by_kind("json")[0].text)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           # compile=True (Trainer.train's default) would compile for ~15 s per example;
           # torch.compile then returns the model as it is, and everything else still runs.
           "TORCH_COMPILE_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    ran = re.findall(r"README BLOCK OK: README.md:(\d+)", proc.stdout)
    assert sorted(int(n) for n in ran) == sorted([b.line for b in blocks_] * processes)


@pytest.mark.slow
def test_python_blocks_run(tmp_path: Path) -> None:
    _run_python([b for b in by_kind("python") if not _starts_processes(b)], tmp_path)


@pytest.mark.slow
@pytest.mark.ddp
def test_python_blocks_that_start_processes_run(tmp_path: Path) -> None:
    found = [b for b in by_kind("python") if _starts_processes(b)]
    assert found
    for block in found:  # Lightning starts the other processes by running the script again
        (tmp_path / str(block.line)).mkdir()
        _run_python([block], tmp_path / str(block.line), processes=int(re.search(r"devices=(\d+)", block.text)[1]))


def test_the_parser_sees_each_kind() -> None:
    kinds = {kind_of(b) for b in blocks()}
    assert {"python", "console", "bash", "json", "output"} <= kinds
    sample = Block(1, "indented", textwrap.dedent("""\
        bz-train a=1 \\
            b=2     # comment
        # a comment line
        bz list-metrics"""))
    assert commands(sample) == [(1, "bz-train a=1      b=2"), (4, "bz list-metrics")]
    assert _bz_args("bz init [DIR] [--force]") == ["init", "proj", "--force"]
