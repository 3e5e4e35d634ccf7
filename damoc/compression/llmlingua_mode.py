"""`compression.method: llmlingua` — LLMLingua (Jiang et al., EMNLP 2023) as a baseline.

Per sample: the budget controller splits the target between instruction, question/context and answer
(compressor.Budget, as in the damoc mode); a part of at most `keep_whole_below` tokens is kept whole and its cut
moved to the longer part. Each part is then compressed in LLMLingua's two stages:
1. coarse (demonstration level; here sentence level): every sentence is scored ALONE by its perplexity
   (mean NLL per scorer token); the most perplexing sentences are kept whole until they hold `coarse_factor`
   x the part's budget (the paper's granular control coefficient k), the others are dropped;
2. fine: token-level compression down to the part's budget (compressor.compress_text: segment by segment,
   conditioned on the compressed prefix through one KV-cached stream), of the sentence that crossed the coarse
   budget only (`trim: crossing`) or of all kept text (`spread`).
Why these defaults: at equal kept ratio the llmlingua package scores higher BERTScore because it mostly leaves
short texts whole and cuts whole sentences (its token stage cuts only a text's first 200-token window); cuts
concentrated in few places keep the rest of the text contiguous (docs/benchmarks/compress.md).
The three parts form one prompt stream: the question is conditioned on the compressed instruction, the answer
on the compressed instruction + question. No question-aware scoring, and by default no gate-driven
rewriting (gate failures fall back as compression.gate_failure says). Deterministic: no sampling.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field

from damoc.compression.coarse import BaselineSettings, keep_by_rank, sentence_costs
from damoc.compression.methods import METHODS
from damoc.data.schema import Sample


class LLMLinguaMethod:
    description = ("LLMLingua baseline: budget controller, sentence-level pruning by perplexity, iterative token-level "
                   "compression; no question awareness, no rewriting")

    class Settings(BaselineSettings):
        coarse: bool = Field(True, description="sentence-level pruning by perplexity before the token level "
                             "(LLMLingua's demonstration-level stage)")
        trim: Literal["spread", "crossing"] = Field("crossing", description="where the token level cuts what the "
                                                    "kept sentences hold over the budget: spread (over all of "
                                                    "them, LLMLingua's iterative compression) or crossing (only "
                                                    "the lowest-ranked kept sentence, the one that crossed the "
                                                    "coarse budget, when it can absorb the cut: the other "
                                                    "sentences stay whole)")

    def compress_sample(self, scorer, sample, budget, *, settings, segment_words, answer_scoring,
                        instruction_cache, counters) -> Sample:
        from damoc.compression.coarse import rates_and_instruction

        rates, instruction = rates_and_instruction(
            "llmlingua", scorer, sample, budget, instruction_cache,
            lambda text, rate: compress_part(scorer, text, rate, "", budget.unit, segment_words, settings, counters),
            settings.keep_whole_below)
        input_ = compress_part(scorer, sample.input, rates["input"], instruction, budget.unit, segment_words,
                               settings, counters)
        prefix = "\n".join(p for p in (instruction, input_) if p)
        output = compress_part(scorer, sample.output, rates["output"], prefix, budget.unit, segment_words,
                               settings, counters)
        return dataclasses.replace(sample, instruction=instruction, input=input_, output=output)

    def allows_rewrite(self, settings) -> bool:
        return settings.allow_rewrite


def compress_part(scorer, text: str, rate: float, context: str, unit: str, segment_words: int,
                  settings: LLMLinguaMethod.Settings, counters: dict[str, int]) -> str:
    """Coarse sentence pruning by perplexity, then iterative token-level compression, to `rate` of the text."""
    from damoc.compression.compressor import compress_text, join_kept

    if rate >= 1.0 or not text.strip():
        return text
    split = sentence_costs(scorer, text, rate, unit, counters)
    words, gaps, ids, costs, target, spans = (split.words, split.gaps, split.ids, split.costs, split.target,
                                              split.spans)
    kept_cost = float(costs.sum())
    # a coarse budget that covers the whole text keeps every sentence: skip scoring them
    if settings.coarse and len(spans) > 1 and settings.coarse_factor * target < kept_cost:
        seg_costs = np.array([costs[s:e].sum() for s, e in spans], dtype=np.int64)
        ppl = np.array([scorer.word_nll(words[s:e]).sum() / max(1, sum(len(x) for x in ids[s:e]))
                        for s, e in spans])
        keep = keep_by_rank(np.argsort(-ppl, kind="stable"), seg_costs, settings.coarse_factor * target)
        counters["segments_dropped"] = counters.get("segments_dropped", 0) + int((~keep).sum())
        mask = np.zeros(len(words), dtype=bool)
        for (s, e), k in zip(spans, keep):
            mask[s:e] = k
        kept_cost = float(seg_costs[keep].sum())
        if settings.trim == "crossing":
            crossing = [int(i) for i in np.argsort(-ppl, kind="stable") if keep[i]][-1]
            if trim_crossing(scorer, words, gaps, mask, spans[crossing], kept_cost - target, context, unit,
                             segment_words):
                return join_kept(words, gaps, mask)
        text = join_kept(words, gaps, mask)
    return compress_text(scorer, text, min(1.0, target / kept_cost), segment_words, context=context, unit=unit)


def trim_crossing(scorer, words: list[str], gaps: list[str], mask: np.ndarray, span: tuple[int, int],
                  overshoot: float, context: str, unit: str, segment_words: int) -> bool:
    """Cut `overshoot` units from the one sentence `span` (token level, conditioned on the context and the kept
    text before it), updating `mask` in place; False, mask untouched, when that sentence is too short to absorb
    it (or nothing is to cut) and the whole kept text must share the cut."""
    from damoc.compression.compressor import _costs, compress_text, join_kept, split_words

    s, e = span
    cost = float(_costs(scorer, words[s:e], gaps[s:e], "", unit)[1].sum())
    if overshoot <= 0 or cost <= overshoot:
        return False
    prefix = "\n".join(p for p in (context, join_kept(words[:s], gaps[:s], mask[:s])) if p)
    kept = split_words(compress_text(scorer, join_kept(words[s:e], gaps[s:e], np.ones(e - s, dtype=bool)),
                                     (cost - overshoot) / cost, segment_words, context=prefix, unit=unit))[0]
    j = 0  # the kept words are a subsequence of the sentence's words
    for i in range(s, e):
        mask[i] = j < len(kept) and words[i] == kept[j]
        j += int(mask[i])
    return True


METHODS.register("llmlingua", LLMLinguaMethod())
