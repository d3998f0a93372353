"""Regression metrics: ``MeanSquaredError`` and ``MeanAbsoluteError``.

Computed by ``torchmetrics.regression``, built at the first batch on that batch's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bz_lightning.errors import BzConfigError
from bz_lightning.metrics._shim import TorchmetricsShim

if TYPE_CHECKING:
    import torchmetrics
    from torch import Tensor

__all__ = ["MeanSquaredError", "MeanAbsoluteError"]


class _ElementwiseError(TorchmetricsShim):
    """Mean of an elementwise error between ``preds`` and ``targets`` of the same shape.

    Any shape mismatch raises, (N, 1) against (N,) included: ``MSELoss`` and ``L1Loss``
    broadcast that pair to (N, N) and train on every prediction against every target, so a
    metric that quietly compared them element by element would report a number for a model
    the loss is not training. The error names both shapes and the two fixes.
    """

    higher_is_better = False
    _tm_cls: str

    def _build(self, preds: Tensor, targets: Tensor) -> torchmetrics.Metric:

        self._prepare(preds, targets)
        return self._rebuild({})

    def _rebuild(self, info: dict[str, Any]) -> torchmetrics.Metric:
        import torchmetrics.regression

        return getattr(torchmetrics.regression, self._tm_cls)()  # type: ignore[no-any-return]

    def _prepare(self, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if preds.shape != targets.shape:
            got = f"{self.name_for_errors}: preds of shape {tuple(preds.shape)} and targets of shape {tuple(targets.shape)}"
            column = (preds.ndim == 2 and preds.shape[1] == 1 and targets.shape == preds.shape[:1]) or (
                targets.ndim == 2 and targets.shape[1] == 1 and preds.shape == targets.shape[:1])
            if column:
                n = len(preds)
                raise BzConfigError(
                    f"{got} differ: a loss such as MSELoss broadcasts them to ({n}, {n}) and trains on every "
                    "prediction against every target; give the model's output and the targets the same shape: "
                    "targets of shape (N, 1) for a one-output model (as data=diabetes has), or squeeze the "
                    "model's output to (N,)"
                )
            raise BzConfigError(f"{got} differ; they must have the same shape")
        # Flat: the mean is over every element either way, and batches concatenate.
        return preds.reshape(-1), targets.reshape(-1)


class MeanSquaredError(_ElementwiseError):
    """Mean of ``(preds - targets) ** 2`` over every element of every batch.

    Args:
        name: the name the value is reported under (default ``"mse"``).

    Shapes:
        ``preds`` and ``targets`` of the same shape (any).

    Example:
        >>> import torch
        >>> mse = MeanSquaredError()
        >>> mse.update(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 2.0]))
        >>> round(mse.compute(), 4)
        1.6667
    """

    _tm_cls = "MeanSquaredError"
    default_name = "mse"


class MeanAbsoluteError(_ElementwiseError):
    """Mean of ``|preds - targets|`` over every element of every batch.

    Args:
        name: the name the value is reported under (default ``"mae"``).

    Shapes:
        ``preds`` and ``targets`` of the same shape (any).

    Example:
        >>> import torch
        >>> mae = MeanAbsoluteError()
        >>> mae.update(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 2.0]))
        >>> mae.compute()
        1.0
    """

    _tm_cls = "MeanAbsoluteError"
    default_name = "mae"
