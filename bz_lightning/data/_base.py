"""What the bundled DataModules share: in-memory tensors, batching and a shape check."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from bz_lightning.errors import BzConfigError

__all__ = ["TensorDataModule"]


class TensorDataModule(pl.LightningDataModule):
    """A DataModule whose ``setup`` fills ``train_set`` and ``val_set`` with tensors.

    ``input_shape`` and ``num_classes`` are part of the data's config so that models can
    interpolate them (``${data.input_shape}``); ``setup`` checks them against the data,
    so a config that describes the data wrongly fails with a message, not a shape error
    deep inside the first layer.

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

    def _check(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if list(x.shape[1:]) != self.input_shape:
            raise BzConfigError(
                f"{name}: samples have shape {list(x.shape[1:])} but data.input_shape is {self.input_shape}"
            )
        if int(y.max()) >= self.num_classes:
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
