"""The filter interface and the name -> filter registry (a new method = one module + one import line)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Mapping, Sequence, TypeVar

import numpy as np

from damoc.data.schema import Sample


class SampleFilter(ABC):
    """Picks `n_select` distinct sample indices out of a training set.

    Subclasses set `name` (the config/CLI spelling), `needs_embeddings` (whether the caller must embed
    the samples first) and `config_params` (config option name -> `select` keyword it feeds).
    """

    name: ClassVar[str]
    needs_embeddings: ClassVar[bool] = False
    config_params: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               **params) -> list[int]:
        """Return `n_select` distinct indices into `samples` (order is filter-specific, see subclass)."""


_REGISTRY: dict[str, SampleFilter] = {}
F = TypeVar("F", bound=type[SampleFilter])


def register(cls: F) -> F:
    """Class decorator: make the filter available under `cls.name`."""
    name = cls.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(f"filter name {name!r} already registered by {type(_REGISTRY[name]).__name__}")
    _REGISTRY[name] = cls()
    return cls


def get_filter(name: str) -> SampleFilter:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown filter {name!r}; available: {', '.join(available_filters())}") from None


def available_filters() -> list[str]:
    return sorted(_REGISTRY)


def check_n_select(n_select: int, n: int) -> None:
    """Shared argument check so every filter fails the same way on impossible requests."""
    if not 0 <= n_select <= n:
        raise ValueError(f"n_select must be in [0, {n}], got {n_select}")

