"""Names the bz-train modules share: where the configs are and what a run's files are
called. A module of its own so that ``train``, ``_launch``, ``summary`` and ``bz validate``
import them from here instead of from each other (``train`` imports ``_launch``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONF_DIR", "CONFIG_NAME", "METRICS_FILE"]

#: bz-train's configs, an absolute path: they ship inside the package, wherever it is installed.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
#: The primary config in ``CONF_DIR`` (``train.yaml``).
CONFIG_NAME = "train"
#: Each run's record of its final metrics, in its output directory; sweep summaries read it.
METRICS_FILE = "metrics.json"
