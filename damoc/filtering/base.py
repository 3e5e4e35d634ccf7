"""The filter interface and the registry of filtering methods (a new method = one module + one import line).

Each method declares its own settings as a small pydantic model (`Settings`); the run configuration holds
them under `filter.options.<method>` and validates them against this registry.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.registry import NoSettings, Registry


@dataclass
class FilterContext:
    """What a run knows beyond the samples, handed to filters whose `select` takes a `context` keyword.

    scorer_model: the run's small causal LM (path or hub id) for scorer-based methods when their own
      `scorer_model` setting is null (the workflow passes the compression scorer: first candidate's base).
    target_samples: a target/validation set (the run's eval samples) for methods that aim at one (LESS).
    progress: show progress bars.
    stats: filled by the filter with method-specific statistics (objective value, counts); filter_samples
      merges them into the run's stats.
    """

    scorer_model: str | None = None
    target_samples: Sequence[Sample] | None = None
    progress: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class SampleFilter(ABC):
    """Picks `n_select` distinct sample indices out of a training set.

    Subclasses set `name` (the config/CLI spelling), `description` (one line for docs and the KFP UI),
    `needs_embeddings` (whether the caller must embed the samples first), `Settings` (the method's own
    settings; `NoSettings` when it has none), `passes_through` (True: keeps every sample, ratio unused),
    `needs_scorer` (scores samples with a causal LM: `settings.scorer_model` or `context.scorer_model`) and
    `needs_judge` (rates samples with an LLM judge configured in its settings).
    A `select` that declares a `context` keyword receives a `FilterContext`; older filters need not.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_embeddings: ClassVar[bool] = False
    passes_through: ClassVar[bool] = False
    needs_scorer: ClassVar[bool] = False
    needs_judge: ClassVar[bool] = False
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def takes_context(self) -> bool:
        return "context" in inspect.signature(self.select).parameters

    def embeddings_for(self, embeddings: np.ndarray | None, samples: Sequence[Sample]) -> np.ndarray:
        """The embeddings a `needs_embeddings` method was given, checked: present and one per sample."""
        if embeddings is None:
            raise ValueError(f"{self.name} needs embeddings")
        if len(embeddings) != len(samples):
            raise ValueError(f"{len(embeddings)} embeddings for {len(samples)} samples")
        return embeddings

    @abstractmethod
    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: BaseModel) -> list[int]:
        """Return `n_select` distinct indices into `samples` (order is filter-specific, see subclass)."""


FILTERS: Registry[SampleFilter] = Registry("filtering method")
F = TypeVar("F", bound=type[SampleFilter])


def register(cls: F) -> F:
    """Class decorator: make the filter available under `cls.name`."""
    existing = FILTERS._entries.get(cls.name)
    if existing is not None and type(existing) is not cls:
        raise ValueError(f"filter name {cls.name!r} already registered by {type(existing).__name__}")
    FILTERS.register(cls.name, cls(), replace=True)
    return cls


def get_filter(name: str) -> SampleFilter:
    return FILTERS.get(name)


def available_filters() -> list[str]:
    return FILTERS.names()


def check_n_select(n_select: int, n: int) -> None:
    """Shared argument check so every filter fails the same way on impossible requests."""
    if n_select > n >= 0:
        raise ValueError(f"cannot keep {n_select} rows: only {n} rows to choose from "
                         f"(n_select must be in [0, {n}])")
    if n_select < 0:
        raise ValueError(f"n_select must be in [0, {n}], got {n_select}")
