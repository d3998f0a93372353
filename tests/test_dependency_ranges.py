"""The dependency ranges are what is tested: each has a lower bound, which ``make
test-lowest`` installs (through ``.ci/lowest_constraints.py``), and an upper bound, below the
first release nobody has run the suite on."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci/lowest_constraints.py"

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="reads pyproject.toml with tomllib (3.11+)")


def requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    unbounded = [r for r in requirements() if not (re.search(r">=\s*\d", r) and re.search(r"<\s*\d", r))]
    assert unbounded == []


def test_the_lowest_constraints_pin_every_lower_bound_and_keep_the_installed_torch() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pinned = dict(line.split("==") for line in proc.stdout.split())
    for requirement in requirements():
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
        lower = re.search(r">=\s*([^,;\s]+)", requirement).group(1)
        assert pinned[name] == (version("torch") if name == "torch" else lower), requirement
    assert pinned["lightning"] == "2.6.6"  # 2.6.2 and 2.6.3 were compromised releases
