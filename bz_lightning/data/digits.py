"""scikit-learn's 8x8 handwritten digits: real data bundled with scikit-learn, no download."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from bz_lightning.data._base import TensorDataModule, random_split_indices, sklearn_dataset
from bz_lightning.errors import BzConfigError

__all__ = ["DigitsDataModule"]


class DigitsDataModule(TensorDataModule):
    """1,797 grey 8x8 digits (0-9), scaled to [0, 1], split at random into val, test and train.

    Args:
        batch_size: samples per batch.
        val_fraction: share of the samples held out for validation (0 < f < 1).
        test_fraction: share held out for testing (0 < f < 1); cut after the validation
            samples, so these stay the ones earlier versions validated on.
        seed: seed of the split, so every run validates and tests on the same samples.
        num_workers: DataLoader workers (0: load in the main process; the data is tiny).
        input_shape / num_classes: what the config says the data is; checked in ``setup``.
        pin_memory: batches in page-locked memory for fast copies to a GPU; ``None``: when
            CUDA is available.

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), y.dtype
        ((32, 1, 8, 8), torch.int64)
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, input_shape, num_classes, pin_memory)
        if not 0.0 < val_fraction < 1.0:
            raise BzConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        if not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise BzConfigError(
                f"data.test_fraction must be between 0 and 1 (exclusive) and leave training samples "
                f"(val_fraction + test_fraction < 1), got {test_fraction} with val_fraction {val_fraction}"
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        bunch = sklearn_dataset("digits")
        # Pixel values are 0..16 in this data set.
        x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.as_tensor(bunch.target, dtype=torch.long)
        self._check("digits", x, y)
        val, test, train = random_split_indices(len(y), [self.val_fraction, self.test_fraction], self.seed)
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])
