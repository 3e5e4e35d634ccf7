"""Coarse-grained (segment-level) compression shared by the LLMLingua and LongLLMLingua modes.

A part's text is cut into segments (sentences: a word ending in . ! ? or followed by a line break); the
segments are ranked by a method's importance score, the top ones are kept whole until a coarse budget, the
rest are dropped; the token-level stage then cuts the kept text to the part's final budget. Pure functions
over costs and scores: no model involved.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from damoc.registry import SettingsModel

_END = (".", "!", "?")


def sentence_spans(words: list[str], gaps: list[str]) -> list[tuple[int, int]]:
    """[start, end) word ranges of the sentences: a segment ends after a word ending in . ! ? or a newline."""
    spans, start = [], 0
    for i, (word, gap) in enumerate(zip(words, gaps)):
        if word.endswith(_END) or "\n" in gap:
            spans.append((start, i + 1))
            start = i + 1
    if start < len(words):
        spans.append((start, len(words)))
    return spans


def keep_by_rank(order: np.ndarray, costs: np.ndarray, coarse_budget: float) -> np.ndarray:
    """Segments kept whole: taken in rank order (order[0] = most important) until they hold at least
    `coarse_budget` tokens; the one that crosses the budget is kept too (as LLMLingua's demonstration-level
    filter does), so the token stage, which can only cut, always has the part's budget to work with."""
    keep = np.zeros(len(costs), dtype=bool)
    used = 0.0
    for i in order:
        if used >= coarse_budget - 1e-9 and keep.any():
            break
        keep[i], used = True, used + float(costs[i])
    return keep


def dynamic_rates(ranks: np.ndarray, costs: np.ndarray, target: float, delta: float,
                  min_rate: float = 0.0) -> np.ndarray:
    """Per-segment kept fractions r_k = clip(b + delta * (1 - 2 rank_k / (K - 1)), min_rate, 1) with b solved
    (bisection) so that sum(r_k * cost_k) = target: better-ranked segments keep more (LongLLMLingua's dynamic
    compression ratio; delta = 0 gives one uniform rate)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    total = float(costs.sum())
    if total <= 0:
        return np.ones_like(costs)
    spread = delta * (1 - 2 * ranks / (len(ranks) - 1)) if len(ranks) > 1 else np.zeros_like(ranks)
    rates = lambda b: np.clip(b + spread, min_rate, 1.0)  # noqa: E731
    if target >= total:
        return np.ones_like(costs)
    lo, hi = -1.0 - abs(delta), 1.0 + abs(delta)
    for _ in range(60):  # kept(b) is monotone in b
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float((rates(mid) * costs).sum()) < target else (lo, mid)
    return rates(hi)


def rates_and_instruction(method: str, scorer, sample, budget, cache: dict, compress_instruction,
                          keep_whole_below: int = 0) -> tuple[dict, str]:
    """Per-part rates solved by the budget controller (short parts kept whole: Budget.part_rates), and the
    sample's instruction compressed once per distinct (method, instruction, rate, unit) — instructions repeated
    across rows are compressed once, so train and eval see one form. `compress_instruction(text, rate)` is the
    method's own compressor for it."""
    from damoc.compression.compressor import PARTS, count_units

    rates = budget.part_rates({p: count_units(scorer, getattr(sample, p), budget.unit) for p in PARTS},
                              keep_whole_below)
    key = (method, sample.instruction, rates["instruction"], budget.unit)
    if key not in cache:
        cache[key] = compress_instruction(sample.instruction, rates["instruction"])
    return rates, cache[key]


class BaselineSettings(SettingsModel):
    """Settings both LLMLingua-family baselines share."""

    coarse_factor: float = Field(1.0, ge=1.0, description="the coarse (sentence-level) stage keeps sentences up to "
                                 "this multiple of the part's token budget (the paper's k; its examples use 1.5 to "
                                 "2); the token level cuts the rest. 1.0: whole sentences carry the cut and the "
                                 "token level only trims the last one's overshoot, which keeps the text contiguous "
                                 "(mean BERTScore +0.01, gate pass about +0.2 against 1.5 on qa_long: "
                                 "docs/benchmarks/compress.md)")
    keep_whole_below: int = Field(64, ge=0, description="a question/context or answer of at most this many budget "
                                  "units (scorer tokens) is kept whole and its share of the cut moved to the "
                                  "sample's longer free part, when that part can absorb it (shortest first; the "
                                  "sample still meets its rate). Short texts lose the most meaning per cut word; "
                                  "the llmlingua package likewise leaves texts shorter than its 200-token window "
                                  "mostly uncut. 0: every part cut at the solved rate")
    allow_rewrite: bool = Field(False, description="let compression.rewrite rewrite gate failures (the published "
                                "method has no rewriting)")


@dataclass
class SentenceCosts:
    """A text split for coarse (sentence-level) compression: its words, the gaps between them, each word's
    token ids and budget cost, the cost to keep (`rate` of the whole) and the sentences as word spans."""

    words: list[str]
    gaps: list[str]
    ids: list
    costs: np.ndarray
    target: float
    spans: list[tuple[int, int]]


def sentence_costs(scorer, text: str, rate: float, unit: str, counters: dict[str, int]) -> SentenceCosts:
    from damoc.compression.compressor import _costs, split_words

    words, gaps = split_words(text)
    ids, costs = _costs(scorer, words, gaps, "", unit)
    spans = sentence_spans(words, gaps)
    counters["segments"] = counters.get("segments", 0) + len(spans)
    return SentenceCosts(words, gaps, ids, costs, rate * float(costs.sum()), spans)
