"""`compression.method: longllmlingua` — LongLLMLingua (Jiang et al., ACL 2024) as a baseline.

Per sample the budget controller splits the target between the parts (compressor.Budget; a part of at most
`keep_whole_below` tokens kept whole, its cut moved to the longer part: see llmlingua_mode). The question of
a part is what precedes it in the ORIGINAL sample: the instruction for the question/context, instruction +
question for the answer (the instruction itself, having none, is compressed like LLMLingua's fine stage).
Each part with a question is compressed in LongLLMLingua's three steps:
1. question-aware coarse ranking: its sentences ranked by the NLL of the question given the sentence,
   -log p(question | sentence) per question token (lower = more related; `restrictive_statement` is appended
   to the question as in the paper); the best-ranked are kept whole until they hold `coarse_factor` x the
   part's budget, the others are dropped;
2. dynamic compression ratio: kept sentence k (rank k among K) keeps r_k = b + delta (1 - 2k/(K-1)) of its
   tokens (clipped to [0, 1]), b solved so that the part meets its budget (coarse.dynamic_rates);
3. question-aware fine scoring: word importance s_i = NLL(x_i | x_<i) - NLL(x_i | question, x_<i) (contrastive
   perplexity: high where the question makes the word predictable), each sentence filled to its r_k.
Document reordering is not applied: training samples keep their order. No gate-driven rewriting by default.
Deterministic. The fine stage scores the coarse-kept text in one pass per condition (not the iterative
compressed-prefix stream).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import Field

from damoc.compression.coarse import BaselineSettings, dynamic_rates, keep_by_rank, sentence_costs
from damoc.compression.methods import METHODS
from damoc.data.schema import Sample


class LongLLMLinguaMethod:
    description = ("LongLLMLingua baseline: sentences ranked by p(question given sentence), dynamic per-sentence "
                   "ratios, contrastive question-aware token scores; no rewriting")

    class Settings(BaselineSettings):  # its coarse stage ranks sentences by their relation to the question
        dynamic_ratio: float = Field(0.3, ge=0.0, le=1.0, description="delta of the dynamic compression ratio: "
                                     "the best-ranked kept sentence keeps up to 2 x delta more of its tokens "
                                     "than the worst (0: one uniform rate)")
        restrictive_statement: str = Field("", description="text appended to the question when ranking "
                                           "sentences (the paper: 'We can get the answer to this question in the "
                                           "given documents.'); empty: none")

    def compress_sample(self, scorer, sample, budget, *, settings, segment_words, answer_scoring,
                        instruction_cache, counters) -> Sample:
        from damoc.compression.coarse import rates_and_instruction
        from damoc.compression.compressor import compress_text

        rates, instruction = rates_and_instruction(
            "longllmlingua", scorer, sample, budget, instruction_cache,
            lambda text, rate: compress_text(scorer, text, rate, segment_words, unit=budget.unit),
            settings.keep_whole_below)
        prompt = "\n".join(p for p in (sample.instruction, sample.input) if p)
        input_ = compress_part(scorer, sample.input, rates["input"], sample.instruction, budget.unit, settings,
                               counters)
        output = compress_part(scorer, sample.output, rates["output"], prompt, budget.unit, settings, counters)
        return dataclasses.replace(sample, instruction=instruction, input=input_, output=output)

    def allows_rewrite(self, settings) -> bool:
        return settings.allow_rewrite


def relevance(scorer, question: str, segments: list[str]) -> np.ndarray:
    """-log p(question | segment) per question token, for each segment (lower = more related)."""
    from damoc.compression.compressor import count_units, split_words

    q_words = split_words(question)[0]
    n_tokens = max(1, count_units(scorer, " ".join(q_words)))
    return np.array([scorer.word_nll(q_words, context=seg + "\n").sum() / n_tokens for seg in segments])


def compress_part(scorer, text: str, rate: float, question: str, unit: str,
                  settings: LongLLMLinguaMethod.Settings, counters: dict[str, int]) -> str:
    """Question-aware coarse ranking, dynamic per-sentence rates, contrastive token selection."""
    from damoc.compression.budget import select_by_density
    from damoc.compression.compressor import answer_scores, join_kept

    if rate >= 1.0 or not text.strip():
        return text
    split = sentence_costs(scorer, text, rate, unit, counters)
    words, gaps, costs, target, spans = split.words, split.gaps, split.costs, split.target, split.spans
    seg_costs = np.array([costs[s:e].sum() for s, e in spans], dtype=np.int64)
    query = " ".join(p for p in (question, settings.restrictive_statement) if p)
    if query and len(spans) > 1:
        order = np.argsort(relevance(scorer, query, [" ".join(words[s:e]) for s, e in spans]), kind="stable")
    else:
        order = np.arange(len(spans))
    keep = keep_by_rank(order, seg_costs, settings.coarse_factor * target)
    counters["segments_dropped"] = counters.get("segments_dropped", 0) + int((~keep).sum())
    kept_order = [int(i) for i in order if keep[i]]  # kept sentences, best first
    rank = np.empty(len(spans), dtype=np.float64)
    rank[kept_order] = np.arange(len(kept_order))
    kept_idx = np.flatnonzero(keep)  # text order
    seg_rates = dynamic_rates(rank[kept_idx], seg_costs[kept_idx], target, settings.dynamic_ratio)
    kept_words = [w for i in kept_idx for w in words[spans[i][0]:spans[i][1]]]
    scores = answer_scores(scorer, question, kept_words, "contrastive" if question else "conditional")
    mask = np.zeros(len(words), dtype=bool)
    pos = 0
    wanted = got = 0.0
    for i, r in zip(kept_idx, seg_rates):  # cumulative budget: a sentence's unspent share passes on
        s, e = spans[i]
        wanted += r * float(seg_costs[i])
        sel = select_by_density(scores[pos:pos + e - s], costs[s:e], wanted - got)
        mask[s:e] = sel
        got += float(costs[s:e][sel].sum())
        pos += e - s
    if not mask.any():
        mask[spans[kept_idx[0]][0]] = True
    return join_kept(words, gaps, mask)


METHODS.register("longllmlingua", LongLLMLinguaMethod())
