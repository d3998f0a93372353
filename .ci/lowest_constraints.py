"""Print pip constraints pinning every dependency in pyproject.toml to its lower bound.

    python .ci/lowest_constraints.py > constraints.txt
    pip install -c constraints.txt -e ".[test]"

Each ``name>=X`` (in ``dependencies`` and every extra) becomes ``name==X``, so an install
gets the oldest versions the project claims to support and the tests check the claim
(``make test-lowest``). torch is pinned to the version already installed instead: the CPU
build from ``TORCH_SPEC``, never a download of another build.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import tomllib

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def lower_bounds(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    bounds: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if not match:
            sys.exit(f"cannot read the requirement {requirement!r}")
        name, specifiers = match.group(1).lower(), match.group(2)
        lowest = re.search(r">=\s*([^,\s]+)", specifiers)
        if lowest is None:
            sys.exit(f"{requirement!r} has no lower bound (>=): every dependency needs one")
        if bounds.get(name, lowest.group(1)) != lowest.group(1):
            sys.exit(f"{name} has two lower bounds: {bounds[name]} and {lowest.group(1)}")
        bounds[name] = lowest.group(1)
    return bounds


def main() -> None:
    bounds = lower_bounds(Path(__file__).resolve().parents[1] / "pyproject.toml")
    try:
        bounds["torch"] = version("torch")
    except PackageNotFoundError:
        sys.exit("install torch first (make test-lowest installs TORCH_SPEC)")
    for name, pinned in sorted(bounds.items()):
        print(f"{name}=={pinned}")


if __name__ == "__main__":
    main()
