"""MoDS (Du et al. 2023): quality, coverage and necessity (hybrid), simplified.

1. Quality: every sample gets a quality score in [0, 1] — the scorer LM's expected 1..6 rating of the
   response after Deita's quality prompt, mapped by (r - 1) / 5 (MoDS uses a DeBERTa reward model and its
   own threshold scale) — and the pool is the samples with score > `alpha`; if that pool is smaller than the
   number to keep, it is topped up with the next best by score (stats: `quality_pool`, `quality_topped_up`).
2. Coverage: k-center greedy over the pool's embeddings picks the rows (seeded first pick).
Simplification: MoDS's necessity step (fine-tune on the seed set, generate answers for the remaining
high-quality instructions, add those answered badly) needs a training loop and generation per run; here
k-center keeps picking from the high-quality pool until the number to keep is reached instead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.algorithms.kcenter import kcenter_greedy
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import ScorerSettings, quality_scores, scorer_path


class MoDSSettings(ScorerSettings):
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="quality threshold: keep samples whose quality "
                         "(expected rating 1..6 mapped to 0..1) is above it before k-center")


@register
class MoDSFilter(SampleFilter):
    name = "mods"
    description = "MoDS: scorer-LM quality above alpha, then k-center greedy over their embeddings (hybrid)"
    needs_embeddings = True
    needs_scorer = True
    Settings = MoDSSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: MoDSSettings, context: FilterContext | None = None) -> list[int]:
        emb = self.embeddings_for(embeddings, samples)
        quality = (quality_scores(samples, scorer_path(self.name, settings, context), settings) - 1.0) / 5.0
        order = np.lexsort((np.arange(len(quality)), -quality))  # best first, ties by index
        n_good = int((quality > settings.alpha).sum())
        pool = np.sort(order[:max(n_good, n_select)])
        picked = [int(pool[i]) for i in kcenter_greedy(emb[pool], n_select, seed=seed)]
        if context is not None:
            context.stats.update({"quality_pool": n_good, "quality_topped_up": max(0, n_select - n_good)})
        return picked
