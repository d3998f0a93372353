"""``python -m bz_lightning`` is the ``bz`` command: same output, same exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BZ = Path(sys.executable).with_name("bz")


@pytest.mark.skipif(not BZ.is_file(), reason=f"no bz console script beside {sys.executable} (pip install -e .)")
@pytest.mark.parametrize("argv", [["--help"], ["list-metrics"], ["runs", "--runs-dir", "missing"], ["nonsense"]])
def test_python_m_bz_lightning_behaves_as_bz(argv: list[str], tmp_path: Path) -> None:
    def run(*command: str) -> tuple[int, str, str]:
        proc = subprocess.run([*command, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    as_module = run(sys.executable, "-m", "bz_lightning")
    assert as_module == run(str(BZ))
    assert as_module[0] == (0 if argv[0] in ("--help", "list-metrics") else 2)
    assert (as_module[1] + as_module[2]).strip()
