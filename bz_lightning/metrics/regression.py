"""Regression metrics: ``MeanSquaredError`` and ``MeanAbsoluteError``.

Computed by ``torchmetrics.regression``, built at the first batch on that batch's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bz_lightning.metrics._shim import TorchmetricsShim

if TYPE_CHECKING:
    import torchmetrics
    from torch import Tensor

__all__ = ["MeanSquaredError", "MeanAbsoluteError"]


class _ElementwiseError(TorchmetricsShim):
    """Mean of an elementwise error between ``preds`` and ``targets`` of the same shape.

    A (N, 1) tensor paired with a (N,) one (a one-output regression head against a flat
    target) is accepted and compared element by element; any other shape mismatch raises.
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
            if preds.ndim == 2 and preds.shape[1] == 1 and targets.shape == preds.shape[:1]:
                preds = preds[:, 0]
            elif targets.ndim == 2 and targets.shape[1] == 1 and preds.shape == targets.shape[:1]:
                targets = targets[:, 0]
            else:
                raise ValueError(
                    f"{self.name_for_errors}: preds of shape {tuple(preds.shape)} and targets of shape "
                    f"{tuple(targets.shape)} differ; they must have the same shape "
                    "(or be (N, 1) and (N,))"
                )
        # Flat: the mean is over every element either way, and batches concatenate.
        return preds.reshape(-1), targets.reshape(-1)


class MeanSquaredError(_ElementwiseError):
    """Mean of ``(preds - targets) ** 2`` over every element of every batch.

    Args:
        name: the name the value is reported under (default ``"mse"``).

    Shapes:
        ``preds`` and ``targets`` of the same shape (any), or (N, 1) with (N,).

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
        ``preds`` and ``targets`` of the same shape (any), or (N, 1) with (N,).

    Example:
        >>> import torch
        >>> mae = MeanAbsoluteError()
        >>> mae.update(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 2.0]))
        >>> mae.compute()
        1.0
    """

    _tm_cls = "MeanAbsoluteError"
    default_name = "mae"
