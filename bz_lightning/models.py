"""Small reference models for the CLI: an MLP and a CNN sized from the data's config.

Both take ``input_shape`` (channels, height, width) and ``num_classes``; the shipped
model configs interpolate them from ``data`` (``${data.input_shape}``), so swapping the
data set resizes the model without editing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "CNN"]


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU -> Dropout`` per hidden size, then a linear classifier.

    Args:
        input_shape: shape of one sample, e.g. ``[1, 8, 8]``.
        num_classes: number of output logits.
        hidden_sizes: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.

    Example:
        >>> MLP([1, 8, 8], 10, hidden_sizes=[32])(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2`` per channel count, then
    ``Flatten -> Dropout -> Linear(hidden) -> ReLU -> Linear(num_classes)``.

    Args:
        input_shape: ``[channels, height, width]`` of one sample.
        num_classes: number of output logits.
        channels: output channels of the convolution blocks.
        hidden: width of the fully connected layer.
        dropout: dropout probability before the fully connected layer.

    Example:
        >>> CNN([1, 28, 28], 10, channels=[8, 16])(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        in_channels, height, width = (int(d) for d in input_shape)
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
            # Pool while the map is large enough; 8x8 digits take two poolings, not four.
            if min(height, width) >= 4:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
