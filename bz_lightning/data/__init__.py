"""Lightning DataModules for the CLI's ``data`` config group.

``digits``: scikit-learn's bundled 8x8 handwritten digits (no download).
``mnist``: the standard MNIST IDX files, read from ``<root>/MNIST/raw``.
``diabetes``: scikit-learn's bundled diabetes regression data (no download).

Every one has a train, a val and a test split (``split_dataloader(split)``).

Importing this package is cheap; torch and Lightning load with the first class used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning._lazy import lazy_getattr

__all__ = ["DigitsDataModule", "MNISTDataModule", "DiabetesDataModule", "read_idx", "MNIST_FILES", "SPLITS"]

_LAZY = {
    "DigitsDataModule": "bz_lightning.data.digits",
    "DiabetesDataModule": "bz_lightning.data.diabetes",
    "MNISTDataModule": "bz_lightning.data.mnist",
    "read_idx": "bz_lightning.data.mnist",
    "MNIST_FILES": "bz_lightning.data.mnist",
}

#: The splits every bundled DataModule has (kept here, so naming them imports no torch).
SPLITS = ("train", "val", "test")

if TYPE_CHECKING:
    from bz_lightning.data.diabetes import DiabetesDataModule
    from bz_lightning.data.digits import DigitsDataModule
    from bz_lightning.data.mnist import MNIST_FILES, MNISTDataModule, read_idx


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
