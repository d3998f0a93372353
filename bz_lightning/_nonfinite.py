"""``NonFiniteGuard``: the training loss checked for NaN/Inf without a host read per step.

A check before every backward pass would read the loss on the host at every step, which on
an accelerator stops the host from running ahead of the device. Instead each step only
remembers its loss tensor (no device work at all); whether they were all finite is read on
the host when somebody reads the run's values anyway (a display refresh, a logged step, the
end of the training loop) or before a checkpoint is written, and at least every
``check_every`` steps. A step after a non-finite loss may have made the weights non-finite,
so each time the losses read finite the guard keeps a copy of the weights (in host memory),
and when a read finds a non-finite loss it puts that copy back before raising
``NonFiniteLossError`` for the first such loss (its epoch and batch, and the last finite
loss before it). Between reads, a run whose loss went non-finite wastes at most the steps
until the next read; no checkpoint is written in them (``BzModule.on_save_checkpoint`` reads
first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bz_lightning.errors import NonFiniteLossError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["NonFiniteGuard"]

log = logging.getLogger("bz_lightning")


class NonFiniteGuard:
    """Remembers training losses; reads them on the host only in ``check``/``settle``.

    Args:
        check_every: the most steps ``due`` lets pass without a read (it bounds how late a
            non-finite loss is found when nothing else reads, and the tensors remembered).

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
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new run starts (``watch`` again to guard weights)."""
        # (epoch, batch, loss) of each step since the last read.
        self._unread: list[tuple[int, int, Tensor]] = []
        self._last_finite: Tensor | float | None = None
        # The weights being guarded, their copy from the last read that found all finite,
        # and the optimizer step that copy was taken at.
        self._watched: list[Tensor] = []
        self._copy: list[Tensor] = []
        self._step: Callable[[], int] = lambda: 0
        self.copied_at: int | None = None
        #: The error reported, once one was; later reads report nothing more.
        self.error: NonFiniteLossError | None = None

    def watch(self, tensors: Sequence[Tensor], step: Callable[[], int] = lambda: 0) -> None:
        """Guard ``tensors`` (a module's parameters and buffers): copy them now and at every
        read that finds the losses finite; put the last copy back when one does not.
        ``step()`` says which optimizer step a copy is from (for the log)."""
        import torch

        self._watched = list(tensors)
        # Host memory, so the copy costs no accelerator memory; pinned, so that copying into
        # it does not make the host wait.
        self._copy = [torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=t.is_cuda) for t in self._watched]
        self._step = step
        self._take_copy()

    def observe(self, loss: Tensor, epoch: int, batch: int) -> None:
        """Remember one step's (detached, scalar) loss: no device work, no host read."""
        self._unread.append((epoch, batch, loss))

    @property
    def due(self) -> bool:
        """Whether ``check_every`` steps passed since the last read."""
        return len(self._unread) >= self.check_every

    def unread(self) -> Tensor | None:
        """Whether every loss since the last read is finite, as a bool tensor on their device
        (to read, then ``settle``), or ``None`` when there is nothing new to read."""
        if not self._unread or self.error is not None:
            return None
        import torch

        return torch.isfinite(torch.stack([loss for _, _, loss in self._unread])).all()

    def settle(self, ok: bool | float) -> None:
        """Take the host value of ``unread()``: keep a copy of the weights if it is true;
        otherwise put the last copy back and raise ``NonFiniteLossError`` for the first
        non-finite loss since the last read."""
        unread, self._unread = self._unread, []
        if ok:
            if unread:
                self._last_finite = unread[-1][2]
            self._take_copy()
            return
        import torch

        finite = torch.isfinite(torch.stack([loss for _, _, loss in unread])).tolist()
        first = finite.index(False)
        epoch, batch, loss = unread[first]
        last = unread[first - 1][2] if first else self._last_finite
        self.error = NonFiniteLossError(epoch, batch, float(loss), None if last is None else float(last))
        if self._watched:
            with torch.no_grad():
                for tensor, copy in zip(self._watched, self._copy):
                    tensor.copy_(copy)
            log.warning("%s; the model's weights were put back to those of optimizer step %s, the last read "
                        "before it that found every loss finite (the optimizer's state was not)",
                        self.error, self.copied_at)
        raise self.error

    def check(self) -> None:
        """Read whether the new losses are finite (one host read) and ``settle`` it."""
        flag = self.unread()
        if flag is not None:
            self.settle(bool(flag))

    def _take_copy(self) -> None:
        for tensor, copy in zip(self._watched, self._copy):
            copy.copy_(tensor.detach(), non_blocking=tensor.is_cuda)
        if self._watched:
            self.copied_at = self._step()
