"""scikit-learn's diabetes regression data: bundled with scikit-learn, no download."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from bz_lightning.data._base import TensorDataModule, random_split_indices, sklearn_dataset
from bz_lightning.errors import BzConfigError

__all__ = ["DiabetesDataModule"]


class DiabetesDataModule(TensorDataModule):
    """442 patients, 10 numeric features, one target (disease progression after a year),
    split at random into val, test and train.

    Features are standardised with the training split's mean and standard deviation (so
    nothing about val or test leaks into them). With ``standardize_target`` the target is
    too, the same way: losses, ``mse`` and ``mae`` are then in units of the training
    targets' standard deviation (``target_mean`` / ``target_std`` convert back), and a
    plain MLP trains in a few epochs; without it they are in the data's own units (25 to 346).

    Targets have shape ``(N, 1)``, like the output of a model with one output, so
    ``MSELoss`` and the ``mse`` metric compare them element by element.

    Args:
        batch_size: samples per batch.
        val_fraction / test_fraction: shares held out for validation and testing.
        seed: seed of the split.
        standardize_target: scale the target as the features are.
        num_workers: DataLoader workers.
        pin_memory: batches in page-locked memory for fast copies to a GPU; ``None``: when
            CUDA is available.
        input_shape / num_classes: what the config says the data is (``[10]`` and 1
            output); checked in ``setup``.

    Example:
        >>> dm = DiabetesDataModule(batch_size=16)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), tuple(y.shape), y.dtype
        ((16, 10), (16, 1), torch.float32)
    """

    def __init__(
        self,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        standardize_target: bool = True,
        num_workers: int = 0,
        input_shape: Sequence[int] = (10,),
        num_classes: int = 1,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, input_shape, num_classes, pin_memory)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise BzConfigError(f"data.{key} must be between 0 and 1 (exclusive), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise BzConfigError(f"data.val_fraction + data.test_fraction must be < 1 to leave training samples, "
                                f"got {val_fraction} + {test_fraction}")
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.standardize_target = standardize_target
        self.target_mean = 0.0
        self.target_std = 1.0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # scaled=False: the raw measurements; the scaling below uses the training split only.
        bunch = sklearn_dataset("diabetes", scaled=False)
        x = torch.as_tensor(bunch.data, dtype=torch.float32)
        y = torch.as_tensor(bunch.target, dtype=torch.float32).unsqueeze(1)
        val, test, train = random_split_indices(len(y), [self.val_fraction, self.test_fraction], self.seed)
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / std
        if self.standardize_target:
            self.target_mean, self.target_std = float(y[train].mean()), float(y[train].std())
            y = (y - self.target_mean) / self.target_std
        self._check("diabetes", x, y)
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])
