"""AlpaGasus (Chen et al. 2024): an LLM judge rates each (instruction, input, response) 0..5 for accuracy;
keep the samples rated >= `min_rating`, best first, and if they are fewer than the number to keep, go on
down the ratings (stats `rated_at_least_min` says how many passed). Quality-aware.

The judge is either an OpenAI-compatible chat-completions `endpoint` (the vLLM service; the reply's first
number is the rating, temperature 0) or an in-process causal LM `judge_model` (offline: the expected 0..5
rating from the log-likelihoods of the rating tokens after the AlpaGasus prompt). One of them must be set.
Ties are broken by the lower row index: deterministic for a deterministic judge.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field, model_validator

from damoc.data.schema import Sample
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import EndpointJudge, Judge, LocalJudge
from damoc.registry import SettingsModel


NO_JUDGE = ("alpagasus needs an LLM judge and none is configured: set filter.options.alpagasus.endpoint "
            "(an OpenAI-compatible server) or filter.options.alpagasus.judge_model (a local causal LM checkpoint)")


class AlpaGasusSettings(SettingsModel):
    judge_model: str | None = Field(None, description="in-process judge: a causal LM checkpoint (local dir or hub id)")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL (e.g. http://vllm:8000/v1); used "
                                 "instead of judge_model when set")
    endpoint_model: str | None = Field(None, description="model name sent to the endpoint; null: 'default'")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's "
                                    "API key (sent as a Bearer token when set)")
    min_rating: float = Field(4.5, ge=0.0, le=5.0, description="ratings at or above it pass (the paper: 4.5)")
    batch_size: int = Field(8, ge=1, description="prompts per forward pass of the in-process judge")
    max_length: int = Field(512, ge=8, description="prompt tokens for the in-process judge (keeps the last ones)")

    @model_validator(mode="after")
    def _judge_configured(self) -> "AlpaGasusSettings":
        if not (self.endpoint or self.judge_model):
            raise ValueError(NO_JUDGE)
        return self


def make_judge(settings: AlpaGasusSettings) -> Judge:
    if settings.endpoint:
        return EndpointJudge(settings.endpoint, settings.endpoint_model, api_key_env=settings.api_key_env)
    if settings.judge_model:
        return LocalJudge(settings.judge_model, batch_size=settings.batch_size, max_length=settings.max_length)
    raise ValueError(NO_JUDGE)


@register
class AlpaGasusFilter(SampleFilter):
    name = "alpagasus"
    description = "AlpaGasus: an LLM judge (endpoint or local LM) rates 0-5, keep >= 4.5 then best (quality-aware)"
    needs_judge = True
    Settings = AlpaGasusSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: AlpaGasusSettings, context: FilterContext | None = None) -> list[int]:
        judge = make_judge(settings)
        ratings = np.asarray(judge.rate(samples), dtype=np.float64)
        picked = [int(i) for i in np.lexsort((np.arange(len(ratings)), -ratings))[:n_select]]
        if context is not None:
            context.stats.update({"rated_at_least_min": int((ratings >= settings.min_rating).sum()),
                                  "objective": float(ratings[picked].mean()) if picked else None,
                                  "objective_name": "mean judge rating of kept rows"})
            if isinstance(judge, EndpointJudge):
                context.stats["judge_unparsable"] = judge.unparsable
        return picked
