"""``bz init``: the files of a new bz-train project.

The project runs at once (``bz-train +experiment=example``): its ``conf/`` adds a model
(a class of the project's own ``project_models.py``), a data config and an experiment to
bz-train's own groups, which stay available.
"""

from __future__ import annotations

from pathlib import Path

from bz_lightning.errors import BzConfigError

__all__ = ["PROJECT_FILES", "write_project"]

PROJECT_FILES: dict[str, str] = {
    "README.md": """\
# {name}

A bz-train project. bz-train finds `conf/` in the directory it runs in, so the groups
here (`model=tiny`, `data=digits_small`, `experiment=example`) sit beside bz-train's own.

    bz-train +experiment=example             # train the example (TinyNet on digits)
    bz-train +experiment=example epochs=1 optimizer.lr=3e-3
    bz-train -m +experiment=example model=tiny,mlp
    bz-train +experiment=example --cfg job   # show the composed config

- `project_models.py`: your models; `conf/model/tiny.yaml` points `_target_` at one.
- `conf/data/digits_small.yaml`: a data config (scikit-learn digits, smaller batches).
- `conf/experiment/example.yaml`: an experiment: the groups it picks and the values it changes.

Each run writes `outputs/<task_name>/runs/<time>/` with `config.yaml`, `metrics.json`,
TensorBoard files and the log; `bz validate <checkpoint>` evaluates a saved checkpoint.
""",
    "project_models.py": '''\
"""This project's models. A model config names one with `_target_: project_models.<Class>`."""

import math

from torch import nn


class TinyNet(nn.Module):
    """One hidden layer; `input_shape` and `num_classes` come from the data config."""

    def __init__(self, input_shape, num_classes, hidden=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):
        return self.net(x)
''',
    "conf/model/tiny.yaml": """\
_target_: project_models.TinyNet
input_shape: ${data.input_shape}
num_classes: ${data.num_classes}
hidden: 32
""",
    "conf/data/digits_small.yaml": """\
# bz-train's digits data with smaller batches and a larger validation split.
defaults:
  - digits
  - _self_
batch_size: 32
val_fraction: 0.25
""",
    "conf/experiment/example.yaml": """\
# @package _global_
# bz-train +experiment=example
defaults:
  - override /model: tiny
  - override /data: digits_small
  - override /optimizer: adam

task_name: example
epochs: 5
optimizer:
  lr: 0.003
""",
}


def write_project(directory: str | Path, force: bool = False, layout: str = "hydra") -> list[Path]:
    """Write the project files into ``directory``; returns the paths written.

    ``layout``: ``"hydra"``, a bz-train project (``PROJECT_FILES``), or ``"bz"``, a project
    in bz's layout for ``bz train`` (``_init_bz.BZ_PROJECT_FILES``).

    Raises:
        BzConfigError: a file exists already and ``force`` is false, or an unknown layout.
    """
    from bz_lightning.cli._init_bz import BZ_PROJECT_FILES

    layouts = {"hydra": PROJECT_FILES, "bz": BZ_PROJECT_FILES}
    if layout not in layouts:
        raise BzConfigError(f"--layout {layout}: unknown layout; use hydra or bz")
    files = layouts[layout]
    root = Path(directory)
    existing = [root / rel for rel in files if (root / rel).exists()]
    if existing and not force:
        raise BzConfigError(
            f"{root}: {', '.join(str(p.relative_to(root)) for p in existing)} exist already; "
            "choose an empty directory or pass --force to overwrite"
        )
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{name}", root.resolve().name) if rel == "README.md" else text)
        written.append(path)
    return written
