"""Time from process start to the first training step: ``bz-train`` against bare Lightning.

Run: ``python benchmarks/bench_first_step.py [--rounds 5]``

Both are fresh Python processes doing the same work (``_first_step_lightning.py`` says
what): ``bz-train`` with its defaults (digits, MLP, Adam, console and TensorBoard plugins,
accuracy and F1) and a bare Lightning script with the same data, model, metrics, a
TensorBoard logger and Lightning's progress bar. Each prints ``time.time()`` at its first
training batch and exits; the time is measured from just before the process is spawned.
bz-train's stamp comes from a plugin registered by ``_first_step_bz.py`` (bz-train has no
other way to run user code at a step). Rounds alternate in a shuffled order; the first is
a discarded warm-up (it fills the OS file cache). Target: bz-train <= Lightning + 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Spread, interleave  # noqa: E402

HERE = Path(__file__).resolve().parent


def first_step_seconds(argv: list[str], cwd: str) -> float:
    started = time.time()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    stamps = [line for line in proc.stdout.splitlines() if line.startswith("FIRST_STEP ")]
    if not stamps:
        raise RuntimeError(f"{argv} printed no FIRST_STEP line (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    return float(stamps[0].split()[1]) - started


def main(argv: list[str] | None = None) -> dict[str, Spread]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        plugins = Path(work, "conf", "plugins")
        plugins.mkdir(parents=True)
        (plugins / "first_step.yaml").write_text("first_step: {}\n")
        variants = {
            "lightning": lambda: first_step_seconds([sys.executable, str(HERE / "_first_step_lightning.py"), work], work),
            "bz-train": lambda: first_step_seconds(
                [sys.executable, str(HERE / "_first_step_bz.py"), "plugins=[console_out,tensorboard,first_step]"],
                work),
        }
        times = interleave(variants, args.rounds)
    extra = [b - lt for b, lt in zip(times["bz-train"], times["lightning"])]
    result = {name: Spread.of(values) for name, values in times.items()}
    result["bz-train minus lightning"] = Spread.of(extra)
    print(f"time to first training step, {args.rounds} rounds + 1 warm-up (seconds, median (min..max)):")
    for name, spread in result.items():
        print(f"  {name:<26} {spread.median:6.2f} ({spread.low:.2f}..{spread.high:.2f})")
    verdict = "met" if statistics.median(extra) <= 0.3 else "NOT met"
    print(f"  target bz-train <= lightning + 0.30 s: {verdict}")
    return result


if __name__ == "__main__":
    main()
