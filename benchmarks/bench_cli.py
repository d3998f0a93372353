"""Latency of the commands that must answer without importing torch.

Run: ``python benchmarks/bench_cli.py [--rounds 7]``

Each command runs as a fresh process (the installed console script next to this Python,
else ``python -m``), all commands round-robin in a shuffled order per round, the first
round discarded. A second, untimed run of each command under ``runpy`` reports whether
torch or Lightning was imported. Target: < 0.5 s and no torch.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Spread, interleave  # noqa: E402

COMMANDS = {
    "bz --help": ("bz", "bz_lightning.cli.main", ["--help"]),
    "bz-train --help": ("bz-train", "bz_lightning.cli.train", ["--help"]),
    "bz list-metrics": ("bz", "bz_lightning.cli.main", ["list-metrics"]),
    "bz list-plugins": ("bz", "bz_lightning.cli.main", ["list-plugins"]),
    "bz-train model=mpl (config error)": ("bz-train", "bz_lightning.cli.train", ["model=mpl"]),
}

PROBE = """\
import atexit, runpy, sys
atexit.register(lambda: sys.__stderr__.write(
    f"\\nIMPORTS torch={'torch' in sys.modules} lightning={'lightning' in sys.modules}\\n"))
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def command_line(script: str, module: str, args: list[str]) -> list[str]:
    installed = Path(sys.executable).parent / script
    if installed.exists() or shutil.which(script):
        return [str(installed if installed.exists() else shutil.which(script)), *args]
    return [sys.executable, "-m", module, *args]


def seconds(argv: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - started


def imports(module: str, args: list[str], cwd: str) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE, module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("IMPORTS ")]
    return lines[-1][len("IMPORTS "):] if lines else f"unknown (exit {proc.returncode})"


def main(argv: list[str] | None = None) -> dict[str, Spread]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as cwd:  # no ./conf or outputs/ from the repo
        variants = {name: functools.partial(seconds, command_line(*spec), cwd) for name, spec in COMMANDS.items()}
        times = interleave(variants, args.rounds)
        print(f"CLI latency, {args.rounds} rounds + 1 warm-up (seconds, median (min..max)); target < 0.5 s, no torch")
        result = {}
        for name, (_script, module, cmd_args) in COMMANDS.items():
            spread = result[name] = Spread.of(times[name])
            verdict = "met" if spread.median < 0.5 and "torch=False" in (imported := imports(module, cmd_args, cwd)) \
                else "NOT met"
            print(f"  {name:<36} {spread.median:5.2f} ({spread.low:.2f}..{spread.high:.2f})  {imported:<30} {verdict}")
    return result


if __name__ == "__main__":
    main()
