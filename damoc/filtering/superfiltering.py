"""Superfiltering (Li et al. 2024): Instruction-Following Difficulty with a small LM (quality-aware).

IFD = PPL(A | Q) / PPL(A) under a small scorer LM (the paper: GPT-2; here the run's scorer or
`scorer_model`). Samples with IFD >= 1 (the question does not help predict the answer) are dropped and the
highest IFD kept. If fewer than the number to keep have IFD < 1, the rest is filled by IFD ascending
(closest to 1 first; stats `ifd_ge_1_kept` says how many). Deterministic: no sampling.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from damoc.data.schema import Sample
from damoc.filtering.algorithms.quality import superfiltering_select
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import ScorerSettings, ifd, scorer_path


class SuperfilteringSettings(ScorerSettings):
    pass


@register
class SuperfilteringFilter(SampleFilter):
    name = "superfiltering"
    description = "Superfiltering: highest IFD = PPL(A|Q)/PPL(A) below 1 under a small scorer LM (quality-aware)"
    needs_scorer = True
    Settings = SuperfilteringSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: SuperfilteringSettings, context: FilterContext | None = None) -> list[int]:
        scores = ifd(samples, scorer_path(self.name, settings, context), settings)
        picked = superfiltering_select(scores, n_select, fill=True)
        if context is not None:
            chosen = scores[picked]
            context.stats.update({"ifd_below_1": int((scores < 1).sum()),
                                  "ifd_ge_1_kept": int((~(chosen < 1)).sum()),
                                  "objective": float(np.nanmean(chosen)) if len(chosen) else None,
                                  "objective_name": "mean IFD of kept rows"})
        return picked
