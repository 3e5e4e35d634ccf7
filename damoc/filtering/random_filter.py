"""Random baseline: uniform sampling without replacement."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.filtering.base import SampleFilter, check_n_select, register


@register
class RandomFilter(SampleFilter):
    """Uniform without replacement, seeded by `numpy.random.Generator(PCG64(seed))`.

    Returns indices in *selection order*: the first `n_select` entries of a seeded permutation, so for a
    fixed seed a smaller selection is a prefix of a larger one (nested subsets across ratios).
    """

    name = "random"
    description = "uniform random sample (seeded; the paper's baseline)"
    needs_embeddings = False

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: BaseModel) -> list[int]:
        n = len(samples)
        check_n_select(n_select, n)
        rng = np.random.default_rng(seed)
        return rng.permutation(n)[:n_select].tolist()
