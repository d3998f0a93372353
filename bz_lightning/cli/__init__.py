"""bz's command line: ``bz-train`` (Hydra, ``bz_lightning.cli.train``) and ``bz``
(argparse, ``bz_lightning.cli.main``). Importing this package imports neither torch nor
Lightning."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """The ``bz`` command."""
    from bz_lightning.cli.main import main as _main

    _main()
