"""k-center greedy (farthest-point) selection over sentence embeddings: distribution-aware, covers outliers."""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.algorithms.kcenter import covering_radius, kcenter_greedy
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.registry import SettingsModel


class KCenterSettings(SettingsModel):
    start: Literal["random", "mean"] = Field("random", description="first pick: seeded random, or the sample "
                                             "nearest the mean")


@register
class KCenterFilter(SampleFilter):
    name = "kcenter"
    description = "k-center greedy: each pick is the sample farthest from those kept (distribution-aware)"
    needs_embeddings = True
    Settings = KCenterSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: KCenterSettings, context: FilterContext | None = None) -> list[int]:
        emb = self.embeddings_for(embeddings, samples)
        order = kcenter_greedy(emb, n_select, seed=seed, start=settings.start)
        if context is not None:  # blocked matrix products: cheaper than the greedy's n_select mat-vecs
            context.stats.update({"objective": covering_radius(emb, order),
                                  "objective_name": "covering radius (max distance to the nearest kept row)"})
        return order
