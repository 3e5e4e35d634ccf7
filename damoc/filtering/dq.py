"""Dataset Quantization: GraphCut bins, then a seeded uniform sample from every bin (distribution-aware)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.algorithms.dq import DEFAULT_BINS, DEFAULT_LAMBDA, dq_select
from damoc.filtering.base import SampleFilter, register
from damoc.registry import SettingsModel


class DQSettings(SettingsModel):
    bins: int = Field(DEFAULT_BINS, ge=1, description="number of non-overlapping GraphCut bins")
    lambda_: float = Field(DEFAULT_LAMBDA, ge=0.0, alias="lambda", serialization_alias="lambda",
                           description="GraphCut diversity weight used to build the bins")


@register
class DQFilter(SampleFilter):
    name = "dq"
    description = "Dataset Quantization: GraphCut bins, uniform sample from each (distribution-aware)"
    needs_embeddings = True
    Settings = DQSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: DQSettings) -> list[int]:
        return dq_select(self.embeddings_for(embeddings, samples), n_select, n_bins=settings.bins, lambda_=settings.lambda_, seed=seed)
