"""What the bundled DataModules share: in-memory tensors, batching, splits and a shape check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning.data import SPLITS
from bz_lightning.errors import BzConfigError

__all__ = ["TensorDataModule", "Split", "random_split_indices", "sklearn_dataset"]

Split = Literal["train", "val", "test"]


def random_split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut into ``len(fractions) + 1`` parts:
    one of ``max(1, round(n * f))`` samples per fraction, in order, then the rest.

    The first part is cut first, so adding a later fraction leaves the earlier parts as
    they were (digits kept its validation samples when it gained a test split).

    >>> [len(p) for p in random_split_indices(10, [0.2, 0.3], seed=0)]
    [2, 3, 5]
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for fraction in fractions:
        size = max(1, round(n * fraction))
        parts.append(order[start:start + size])
        start += size
    if start >= n:
        raise BzConfigError(f"the split fractions {list(fractions)} leave no training samples out of {n}")
    parts.append(order[start:])
    return parts


def sklearn_dataset(name: str, **kwargs: object) -> Any:
    """``sklearn.datasets.load_<name>(**kwargs)``: a data set bundled with scikit-learn.

    Raises:
        BzConfigError: scikit-learn is not installed; the message names the extra.
    """
    try:
        from sklearn import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise BzConfigError(
            f"data={name} needs scikit-learn: pip install 'bz-lightning[data]' (or scikit-learn)"
        ) from err
    return getattr(datasets, f"load_{name}")(**kwargs)


class TensorDataModule(pl.LightningDataModule):
    """A DataModule whose ``setup`` fills ``train_set``, ``val_set`` and ``test_set`` with tensors.

    ``input_shape`` and ``num_classes`` are part of the data's config so that models can
    interpolate them (``${data.input_shape}``); ``setup`` checks them against the data,
    so a config that describes the data wrongly fails with a message, not a shape error
    deep inside the first layer. For regression data (float targets) ``num_classes`` is
    the number of outputs per sample.

    The loaders are set up for an accelerator as a practitioner would by hand: batches in
    page-locked memory (``pin_memory``, by default whenever CUDA is available), so that
    Lightning's copy to the GPU, which it makes with ``non_blocking=True``, does not wait
    for the device; worker processes kept between epochs (``persistent_workers``) when
    ``num_workers > 0``.
    """

    input_shape: Sequence[int]
    num_classes: int

    def __init__(self, batch_size: int, num_workers: int, input_shape: Sequence[int], num_classes: int,
                 pin_memory: bool | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise BzConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        # None: decided when a loader is made (CUDA available or not).
        self.pin_memory = pin_memory
        self.input_shape = [int(d) for d in input_shape]
        self.num_classes = int(num_classes)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _check(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if list(x.shape[1:]) != self.input_shape:
            raise BzConfigError(
                f"{name}: samples have shape {list(x.shape[1:])} but data.input_shape is {self.input_shape}"
            )
        if y.dtype.is_floating_point:  # regression targets: one value per output
            outputs = 1 if y.ndim == 1 else int(torch.tensor(y.shape[1:]).prod())
            if outputs != self.num_classes:
                raise BzConfigError(f"{name}: targets have {outputs} value(s) each but data.num_classes is "
                                    f"{self.num_classes} (the number of outputs, for regression data)")
        elif int(y.max()) >= self.num_classes:
            raise BzConfigError(f"{name}: labels go up to {int(y.max())} but data.num_classes is {self.num_classes}")

    def _loader(self, dataset: TensorDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a DataLoader")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available() if self.pin_memory is None else self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def split_dataloader(self, split: Split) -> DataLoader:
        """The samples of ``split`` in their stored order (never shuffled, the training
        split included), for evaluation and prediction: row ``i`` is sample ``i``."""
        if split not in SPLITS:
            raise BzConfigError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
        return self._loader(getattr(self, f"{split}_set"), shuffle=False)
