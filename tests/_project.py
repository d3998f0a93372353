"""A small bz-train project for the subprocess tests: the digits data behind loaders that a
test can hold at the start of a chosen validation pass (a "gate" file), and a model that
always fails.

    conf/data/gated.yaml     digits, with loaders from gated_data.GatedDigits
    conf/model/broken.yaml   project_models.Broken: every forward pass raises
    conf/model/tiny.yaml     project_models.Tiny: a linear classifier
"""

from __future__ import annotations

from pathlib import Path

GATED_DATA = '''\
"""Digits whose validation loader waits at the start of pass N while <gate>.N exists."""

import os
import time

from torch.utils.data import DataLoader

from bz_lightning.data import DigitsDataModule


class GatedLoader(DataLoader):
    def __init__(self, *args, gate=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        if self.gate:
            gate = f"{self.gate}.{self.passes}"
            if os.path.exists(gate):
                open(gate + ".reached", "w").close()
                while os.path.exists(gate):
                    time.sleep(0.02)
        yield from super().__iter__()


class GatedDigits(DigitsDataModule):
    def __init__(self, gate=None, **kwargs):
        super().__init__(**kwargs)
        self.gate = gate

    def val_dataloader(self):
        return GatedLoader(self.val_set, batch_size=self.batch_size, gate=self.gate)
'''

GATED_YAML = """\
defaults:
  - digits
  - _self_
_target_: gated_data.GatedDigits
gate: gate
"""

MODELS = '''\
"""This project's models."""

from torch import nn


class Tiny(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))


class Broken(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.linear = nn.Linear(1, num_classes)

    def forward(self, x):
        raise RuntimeError("Broken cannot run forward")
'''

BROKEN_YAML = """\
_target_: project_models.Broken
input_shape: ${data.input_shape}
num_classes: ${data.num_classes}
"""

TINY_YAML = BROKEN_YAML.replace("Broken", "Tiny")


def write_project(directory: Path) -> Path:
    """Write the project into ``directory``; return it."""
    (directory / "conf" / "data").mkdir(parents=True, exist_ok=True)
    (directory / "conf" / "model").mkdir(parents=True, exist_ok=True)
    (directory / "gated_data.py").write_text(GATED_DATA)
    (directory / "conf" / "data" / "gated.yaml").write_text(GATED_YAML)
    (directory / "project_models.py").write_text(MODELS)
    (directory / "conf" / "model" / "broken.yaml").write_text(BROKEN_YAML)
    (directory / "conf" / "model" / "tiny.yaml").write_text(TINY_YAML)
    return directory
