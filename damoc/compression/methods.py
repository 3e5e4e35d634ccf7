"""The compression-method registry: `compression.method` names one entry, `compression.method_options.NAME`
holds its own settings (validated against the entry's `Settings`).

- damoc: the stage as the paper runs it (compressor.compress_sample: iterative token-level compression,
  question-related answer scoring, gate-driven rewriting).
- llmlingua: LLMLingua (Jiang et al. 2023) as a baseline (llmlingua_mode.py).
- longllmlingua: LongLLMLingua (Jiang et al. 2024) as a baseline (longllmlingua_mode.py).

Importing this module must not import torch (the config validates names against it); entries import their
model code lazily.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from damoc.data.schema import Sample
from damoc.registry import Registry, SettingsModel


class CompressionMethod(Protocol):
    """One way of compressing a sample to a Budget (compressor.Budget)."""

    Settings: type[BaseModel]
    description: str

    def compress_sample(self, scorer: Any, sample: Sample, budget: Any, *, settings: BaseModel, segment_words: int,
                        answer_scoring: str, instruction_cache: dict, counters: dict[str, int]) -> Sample: ...

    def allows_rewrite(self, settings: BaseModel) -> bool:
        """Whether compression.rewrite applies (the published baselines have no gate-driven rewriting)."""
        ...


METHODS: Registry[CompressionMethod] = Registry("compression method")


class DamocMethod:
    """Today's stage, unchanged: compressor.compress_sample (answer scored by compression.answer_scoring)."""

    description = ("iterative token-level compression on the compressed prefix, question-related answer scoring, gate-"
                   "driven rewriting (the paper)")

    class Settings(SettingsModel):
        pass

    def compress_sample(self, scorer, sample, budget, *, settings, segment_words, answer_scoring,
                        instruction_cache, counters) -> Sample:
        from damoc.compression.compressor import compress_sample

        return compress_sample(scorer, sample, budget, segment_words, answer_scoring, instruction_cache)

    def allows_rewrite(self, settings) -> bool:
        return True


METHODS.register("damoc", DamocMethod())

# Registration side effects: the baselines add themselves to METHODS.
from damoc.compression import llmlingua_mode, longllmlingua_mode  # noqa: E402,F401
