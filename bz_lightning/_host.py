"""Reading device values on the host in as few transfers as possible.

On an accelerator every read of a device value on the host (``.item()``, ``float(t)``,
``.tolist()``) waits for the kernels queued before it. Values that are shown or checked
together (a running loss, metric values, the non-finite flag) are therefore read together:
one ``tolist()`` per device instead of one read per value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor

__all__ = ["HostValue", "read_host"]

#: What ``read_host`` takes: a tensor (read), a Python number (kept) or ``None`` (kept).
HostValue = Union[Tensor, float, int, None]


def read_host(values: Sequence[HostValue]) -> list[Any]:
    """The host values of ``values``, in order, with one transfer per device.

    A 0-dim tensor becomes a ``float``, any other a ``list[float]`` (flattened); numbers and
    ``None`` come back as they are.

    Example:
        >>> read_host([torch.tensor(1.5), 2, None, torch.tensor([0, 3])])
        [1.5, 2, None, [0.0, 3.0]]
    """
    out: list[Any] = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for index, value in enumerate(values):
        if isinstance(value, Tensor):
            by_device.setdefault(value.device, []).append(index)
    for device, indices in by_device.items():
        # float64 keeps int64 counts and float32 values exact; MPS has no float64.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        parts = [values[i].detach().reshape(-1).to(dtype) for i in indices]  # type: ignore[union-attr]
        flat = torch.cat(parts).tolist() if len(parts) > 1 else parts[0].tolist()
        start = 0
        for index, part in zip(indices, parts):
            size = part.numel()
            chunk = flat[start:start + size]
            out[index] = chunk[0] if values[index].dim() == 0 else chunk  # type: ignore[union-attr]
            start += size
    return out
