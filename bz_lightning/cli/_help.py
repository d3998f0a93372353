"""``bz-train --help``: the config groups and their options, read from the config folders.

Hydra's own ``--help`` composes the whole config first (about 0.4 s here); listing the
folders answers at once and says the same. ``--hydra-help`` still shows Hydra's options.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

__all__ = ["help_text"]

_EXAMPLES = """\
examples:
  bz-train                                       the default: an MLP on scikit-learn's digits
  bz-train model=cnn optimizer.lr=3e-4 epochs=5  pick options, set any key
  bz-train +experiment=mnist data.root=DIR       a small CNN on MNIST
  bz-train -m optimizer.lr=1e-3,1e-2 model=mlp,cnn
                                                 a sweep of 4 jobs, with a summary
  bz-train hparams_search=optuna                 an Optuna search with pruning
  bz-train --cfg job                             print the composed config and exit
  bz-train --hydra-help                          Hydra's own options

Re-running a command continues it from its checkpoints (resume=auto|never|must).
"""


def help_text(conf_dir: str, cwd: str) -> str:
    """The help of ``bz-train``: groups of ``conf_dir`` and of ``<cwd>/conf``, defaults marked."""
    roots = [Path(conf_dir)]
    if os.path.isdir(os.path.join(cwd, "conf")):
        roots.append(Path(cwd, "conf"))
    defaults = _defaults(Path(conf_dir) / "train.yaml")
    groups: dict[str, set[str]] = {}
    for root in roots:
        for group_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            if group_dir.name == "hydra":
                continue
            groups.setdefault(group_dir.name, set()).update(p.stem for p in group_dir.glob("*.yaml"))
    width = max(map(len, groups), default=0) + 2
    lines = [
        "usage: bz-train [-m] [group=option ...] [key=value ...]",
        "",
        "Trains with bz on PyTorch Lightning; Hydra composes the run from config groups.",
        "",
        "config groups (group=option, or group=[a,b] for metrics, plugins, logger, callbacks; * the default):",
    ]
    for group, options in sorted(groups.items()):
        chosen = defaults.get(group, [])
        shown = ", ".join(f"{o}*" if o in chosen else o for o in sorted(options))
        lines.append(f"  {group:<{width}}{shown}")
    return "\n".join(lines) + "\n\n" + _EXAMPLES


def _defaults(primary: Path) -> dict[str, list[str]]:
    """Group -> the options the primary config's defaults list picks."""
    picked: dict[str, list[str]] = {}
    for entry in (yaml.safe_load(primary.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                picked[group] = [] if option is None else option if isinstance(option, list) else [option]
    return picked
