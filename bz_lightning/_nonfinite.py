"""``NonFiniteGuard``: the training loss checked for NaN/Inf without a host read per step.

A check before every backward pass would read the loss on the host at every step, which on
an accelerator stops the host from running ahead of the device. Instead each step adds two
device operations (``isfinite`` and a logical *and* into a flag that stays ``False`` once a
loss was not finite) and remembers its loss tensor; the flag is read on the host only when
somebody reads the run's values anyway (a display refresh, a logged step, the end of the
training loop) or before a checkpoint is written, and at least every ``check_every`` steps.

Until then ``mask()`` lets ``BzModule`` zero the gradients on the device from the first
non-finite loss on, so NaN never reaches the weights or the optimizer's state; when the flag
is read, the first non-finite loss since the previous read is found in the remembered
tensors and reported with its epoch, batch and the last finite loss before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning.errors import NonFiniteLossError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    """Watches training losses on the device; reads the host only in ``check``/``settle``.

    Args:
        check_every: the most steps ``due`` lets pass without a read (it bounds how late a
            non-finite loss is reported when nothing else reads, and the remembered tensors).

    Example:
        >>> import torch
        >>> guard = NonFiniteGuard()
        >>> for batch, loss in enumerate([0.5, 0.25, float("nan"), 0.1]):
        ...     guard.observe(torch.tensor(loss), epoch=3, batch=batch)
        >>> guard.check()
        Traceback (most recent call last):
        ...
        bz_lightning.errors.NonFiniteLossError: loss is nan at epoch 3, batch 2 (last finite loss: 0.25); ...
    """

    def __init__(self, check_every: int = 1000) -> None:
        self.check_every = check_every
        # True while every loss observed so far was finite; once False it stays False.
        self._ok: Tensor | None = None
        # (epoch, batch, loss) of each step since the last read.
        self._unread: list[tuple[int, int, Tensor]] = []
        self._last_finite: Tensor | float | None = None
        #: The error reported, once one was; later reads report nothing more.
        self.error: NonFiniteLossError | None = None

    def observe(self, loss: Tensor, epoch: int, batch: int) -> None:
        """Record one step's (detached, scalar) loss; device operations only."""
        import torch

        ok = torch.isfinite(loss)
        self._ok = ok if self._ok is None else torch.logical_and(self._ok, ok)
        self._unread.append((epoch, batch, loss))

    @property
    def due(self) -> bool:
        """Whether ``check_every`` steps passed since the last read."""
        return len(self._unread) >= self.check_every

    def mask(self) -> Tensor | None:
        """``True`` (a bool tensor on the loss's device) from the first non-finite loss on;
        ``None`` before the first step."""
        import torch

        return None if self._ok is None else torch.logical_not(self._ok)

    def unread(self) -> Tensor | None:
        """The flag to read for ``settle`` (``True``: all finite), or ``None`` when no step
        happened since the last read (or the error was already reported)."""
        return self._ok if self._unread and self.error is None else None

    def settle(self, ok: bool | float) -> None:
        """Take the host value of ``unread()``; raise ``NonFiniteLossError`` for the first
        non-finite loss since the last read (reading the remembered losses, once)."""
        unread, self._unread = self._unread, []
        if ok:
            if unread:
                self._last_finite = unread[-1][2]
            return
        import torch

        finite = torch.isfinite(torch.stack([loss for _, _, loss in unread])).tolist()
        first = finite.index(False)
        epoch, batch, loss = unread[first]
        last = unread[first - 1][2] if first else self._last_finite
        self.error = NonFiniteLossError(epoch, batch, float(loss), None if last is None else float(last))
        raise self.error

    def check(self) -> None:
        """Read the flag (one host read) and ``settle`` it; nothing to do without new steps."""
        flag = self.unread()
        if flag is not None:
            self.settle(bool(flag))
