"""Deita (Liu et al. 2024): complexity x quality scores, then a representation (diversity) filter (hybrid).

Each sample's score = complexity(instruction) x quality(response), both the scorer LM's expected rating
1..6 read from the rating tokens' likelihoods after Deita's rating prompts (Deita uses fine-tuned LLaMA
scorers; here any small causal LM, the run's scorer by default). Samples are walked by score, highest
first, and one is admitted only if its embedding's cosine similarity to every admitted sample is
<= `threshold` — so no admitted pair ever has cosine above it. If the pool runs out before the number to
keep, the run fails with a message (raise the threshold or lower the ratio) rather than break that rule.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.algorithms.quality import deita_select
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import ScorerSettings, complexity_scores, quality_scores, scorer_path


class DeitaSettings(ScorerSettings):
    threshold: float = Field(0.9, ge=-1.0, le=1.0, description="largest cosine similarity allowed between two "
                             "kept samples (Deita's Repr filter; the paper: 0.9)")


@register
class DeitaFilter(SampleFilter):
    name = "deita"
    description = "Deita: complexity x quality score from a scorer LM, admitted only if cosine <= threshold (hybrid)"
    needs_embeddings = True
    needs_scorer = True
    Settings = DeitaSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: DeitaSettings, context: FilterContext | None = None) -> list[int]:
        emb = self.embeddings_for(embeddings, samples)
        path = scorer_path(self.name, settings, context)
        scores = complexity_scores(samples, path, settings) * quality_scores(samples, path, settings)
        picked = deita_select(scores, emb, n_select, settings.threshold)
        if len(picked) < n_select:
            raise ValueError(f"deita: only {len(picked)} of the {n_select} rows to keep have pairwise cosine "
                             f"<= {settings.threshold}; raise filter.options.deita.threshold or lower filter.ratio")
        if context is not None:
            context.stats.update({"objective": float(scores[picked].mean()) if picked else None,
                                  "objective_name": "mean complexity x quality of kept rows"})
        return picked
