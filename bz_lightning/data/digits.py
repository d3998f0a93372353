"""scikit-learn's 8x8 handwritten digits: real data bundled with scikit-learn, no download."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from bz_lightning.data._base import TensorDataModule
from bz_lightning.errors import BzConfigError

__all__ = ["DigitsDataModule"]


class DigitsDataModule(TensorDataModule):
    """1,797 grey 8x8 digits (0-9), scaled to [0, 1], split at random into train and val.

    Args:
        batch_size: samples per batch.
        val_fraction: share of the samples held out for validation (0 < f < 1).
        seed: seed of the split, so every run validates on the same samples.
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
        seed: int = 0,
        num_workers: int = 0,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, input_shape, num_classes, pin_memory)
        if not 0.0 < val_fraction < 1.0:
            raise BzConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        self.val_fraction = val_fraction
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise BzConfigError(
                "data=digits needs scikit-learn: pip install 'bz-lightning[data]' (or scikit-learn)"
            ) from err
        bunch = load_digits()
        # Pixel values are 0..16 in this data set.
        x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.as_tensor(bunch.target, dtype=torch.long)
        self._check("digits", x, y)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, round(len(y) * self.val_fraction))
        val, train = order[:n_val], order[n_val:]
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
