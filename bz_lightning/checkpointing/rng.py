"""RNG state as plain data, and a training loader that can resume in the middle of an epoch.

Lightning saves no RNG state, so a resumed run with ``shuffle=True`` would replay epoch 0's
order. ``capture_rng``/``restore_rng`` cover torch (CPU and CUDA), numpy, Python's
``random`` and the loader's own ``torch.Generator`` objects, as tensors, ints and lists.

A checkpoint written in the middle of an epoch (on SIGTERM) also needs the loader to
continue where it stopped. ``resumable_loader`` wraps the training loader so that every
epoch remembers the RNG state its iterator was created from and how many batches it has
produced; resuming re-creates the iterator from that state, draws the batches already
produced (the same order, the same worker seeds), hands Lightning those it had prefetched
but not trained on, and puts the RNG back to the checkpoint's state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bz_lightning._loaders import with_iterator

__all__ = ["ReplayState", "capture_rng", "loader_generators", "restore_rng", "resumable_loader"]


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects a DataLoader draws its order and worker seeds from."""
    found: list[torch.Generator] = []
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    for gen in candidates:
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Every RNG state that decides a training run's randomness, as plain data."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _plain_python_state(random.getstate()),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]
    return state


def restore_rng(state: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Put back what ``capture_rng`` captured (generators matched by position)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for gen, saved in zip(generators, state.get("generators", [])):
        gen.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def _plain_python_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


@dataclass
class ReplayState:
    """Shared between a resumable loader and the checkpoint callback.

    Attributes:
        generators: the loader's generators (saved with the RNG state).
        epoch_rng: the RNG state the current epoch's iterator was created from.
        produced: how many batches the current epoch's iterator has produced.
        pending: set on resume from a mid-epoch checkpoint: ``epoch_rng``, ``produced`` and
            ``consumed`` (the batches already trained on) of the interrupted epoch.
    """

    generators: list[torch.Generator] = field(default_factory=list)
    epoch_rng: dict[str, Any] | None = None
    produced: int = 0
    pending: dict[str, Any] | None = None

    def iterate(self, make_iterator: Any) -> Iterator[Any]:
        """Iterate one epoch through ``make_iterator()``, recording or replaying its start.

        Nothing happens until the first batch is asked for: Lightning creates an epoch's
        iterator before it calls the samplers' ``set_epoch`` (on a resumed run), and a
        ``DistributedSampler`` decides its order from its epoch; so the loader's own
        iterator is created, and a replay drawn, only once the epoch has really begun.
        """
        pending, self.pending = self.pending, None
        return self._epoch(make_iterator, pending)

    def _epoch(self, make_iterator: Any, pending: dict[str, Any] | None) -> Iterator[Any]:
        if pending is None:
            self.epoch_rng = capture_rng(self.generators)
            self.produced = 0
            iterator = make_iterator()
            buffered: list[Any] = []
        else:
            # Re-create the interrupted epoch's iterator from the RNG it started from, draw
            # what it had produced, then continue from the checkpoint's RNG state.
            now = capture_rng(self.generators)
            restore_rng(pending["epoch_rng"], self.generators)
            self.epoch_rng = pending["epoch_rng"]
            iterator = make_iterator()
            drawn = [next(iterator) for _ in range(pending["produced"])]
            buffered = drawn[pending["consumed"]:]
            self.produced = pending["produced"]
            restore_rng(now, self.generators)
        yield from buffered
        for batch in iterator:
            self.produced += 1
            yield batch


def resumable_loader(loader: Iterable[Any], state: ReplayState) -> Iterable[Any]:
    """A copy of ``loader`` whose epochs ``state`` can record and replay (see
    ``with_iterator``: a ``DataLoader`` stays one; the user's object is left untouched)."""
    state.generators = loader_generators(loader)
    return with_iterator(loader, state.iterate, "Resumable")
