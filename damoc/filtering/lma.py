"""LMA: keep the samples with the longest responses (quality-aware baseline)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.filtering.algorithms.quality import lma_select
from damoc.filtering.base import SampleFilter, register


@register
class LongestResponses(SampleFilter):
    name = "lma"
    description = "longest responses first, by characters (quality-aware baseline)"

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: BaseModel) -> list[int]:
        return lma_select(samples, n_select)
