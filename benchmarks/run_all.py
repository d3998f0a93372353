"""``make bench``: every benchmark, one after another, each in its own process.

Run: ``python benchmarks/run_all.py [--quick]``

* ``bench_steps.py``: per-step slowdown against a hand-written loop, and Python calls per step;
* ``bench_host_reads.py``: host reads (device synchronisations) per training step, counted on the CPU;
* ``bench_metrics.py``: per-update cost of the metric shims against torchmetrics;
* ``bench_cli.py``: latency of ``bz --help`` and friends, and whether they import torch;
* ``bench_first_step.py``: time to the first training step, ``bz-train`` against Lightning;
* ``bench_gpu.py``: CNN with ``bf16-mixed`` and ``compile=True`` on a GPU against an autocast
  + ``torch.compile`` hand-written loop, and syncs per step (says it measured nothing where
  there is no CUDA device; ``make bench-gpu`` runs it alone).

Each script also runs on its own; ``benchmarks/README.md`` records their latest figures.
``--quick`` runs fewer rounds (a smoke test, not figures to record).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SUITE = {
    "bench_steps.py": ([], ["--rounds", "2", "--steps", "120,40"]),
    "bench_host_reads.py": ([], []),
    "bench_metrics.py": ([], ["--rounds", "3", "--updates", "100"]),
    "bench_cli.py": ([], ["--rounds", "2"]),
    "bench_first_step.py": ([], ["--rounds", "1"]),
    "bench_gpu.py": ([], ["--rounds", "1", "--steps", "120"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke test")
    args = parser.parse_args()
    print(f"{datetime.date.today()}  {platform.platform()}  Python {platform.python_version()}  "
          f"{__import__('os').cpu_count()} CPUs  command: python benchmarks/run_all.py{' --quick' if args.quick else ''}",
          flush=True)
    failed = []
    for script, (full, quick) in SUITE.items():
        print(f"\n=== {script} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *(quick if args.quick else full)])
        print(f"({script}: {time.perf_counter() - started:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
