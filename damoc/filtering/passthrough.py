"""`none`: keep every sample (the filtering stage is a pass-through; `filter.ratio` is not used)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.filtering.base import SampleFilter, register


@register
class KeepAll(SampleFilter):
    name = "none"
    description = "keep every sample (no filtering; filter.ratio is ignored)"
    passes_through = True

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: BaseModel) -> list[int]:
        return list(range(len(samples)))
