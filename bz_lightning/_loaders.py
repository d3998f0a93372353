"""Changing how a training loader iterates without changing the user's loader."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["with_iterator"]

#: Receives a function that starts the loader's own iterator; returns the iterator to use.
IteratorWrapper = Callable[[Callable[[], Iterator[Any]]], Iterator[Any]]


def with_iterator(loader: Iterable[Any], wrap: IteratorWrapper, label: str) -> Iterable[Any]:
    """A copy of ``loader`` whose ``iter()`` is ``wrap(<the loader's own iter>)``.

    A ``DataLoader`` stays a ``DataLoader``: a shallow copy whose class is a generated
    subclass (``<label><class name>``) overriding only ``__iter__``, so Lightning can still
    re-create it with a distributed sampler. The user's object is left untouched. Other
    iterables are wrapped, keeping their ``len()``.
    """
    from torch.utils.data import DataLoader

    if isinstance(loader, DataLoader):
        cls = type(loader)

        def __iter__(self: Any) -> Iterator[Any]:
            return wrap(lambda: cls.__iter__(self))

        wrapped = copy.copy(loader)
        wrapped.__class__ = type(f"{label}{cls.__name__}", (cls,), {"__iter__": __iter__})
        return wrapped
    return _WrappedIterable(loader, wrap)


class _WrappedIterable:
    def __init__(self, iterable: Iterable[Any], wrap: IteratorWrapper) -> None:
        self._iterable = iterable
        self._wrap = wrap

    def __iter__(self) -> Iterator[Any]:
        return self._wrap(lambda: iter(self._iterable))

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]
