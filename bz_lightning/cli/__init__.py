"""bz's command line: ``bz-train`` (Hydra, ``bz_lightning.cli.train``) and ``bz``
(argparse, ``bz_lightning.cli.main``), with the spec's ``bz.cli`` names. Importing this
package imports neither torch nor Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning._lazy import lazy_getattr

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "create_parser": "bz_lightning.cli.main",
    "run_init": "bz_lightning.cli.main",
    "run_training": "bz_lightning.cli.main",
    "run_validation": "bz_lightning.cli.main",
    "load_plugins_from_config": "bz_lightning.cli._project",
    "load_metrics_from_config": "bz_lightning.cli._project",
    "TrainingSpecification": "bz_lightning.config",
}

__all__ = ["main", *_LAZY]

if TYPE_CHECKING:
    from bz_lightning.cli._project import load_metrics_from_config, load_plugins_from_config
    from bz_lightning.cli.main import create_parser, run_init, run_training, run_validation
    from bz_lightning.config import TrainingSpecification


def main(argv: list[str] | None = None) -> None:
    """The ``bz`` command. (Once the ``bz_lightning.cli.main`` module is imported, that
    module stands here under the same name and is callable the same way.)"""
    from bz_lightning.cli.main import main as _main

    _main(argv)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
