"""Perplexity-based compression of one text, one answer, one sample (LLMLingua / LongLLMLingua style).

Budgets are in the scorer's TOKENS (the unit training cost follows): a rate r keeps about r of a part's
tokens. Selection works on whole words (whitespace-separated, punctuation attached) so that the output is
clean text any candidate's tokenizer reads: each word costs the scorer tokens it owns and is ranked by its
NLL per token, and the budget is filled greedily (budget.select_by_density). The kept words are re-joined
with a single space, or a newline where the dropped/kept gap held one. A rate >= 1 returns the text as is.

Instruction and question: iterative, segment by segment, each segment scored conditioned on the context and
the COMPRESSED prefix through one KV-cached stream (scorer.KVStream): linear in the row's length. The budget
is cumulative, so a segment that could not spend its share passes it on. Answer: question-related
perplexity, `conditional` -log p(a_i | Q, a_<i) or `contrastive` NLL(a_i | a_<i) - NLL(a_i | Q, a_<i).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Literal, Protocol, Sequence

import numpy as np

from damoc.compression.budget import select_by_density, solve_part_rates
from damoc.data.schema import Sample

_WORD = re.compile(r"\S+")


class WordScorer(Protocol):
    """What the compressor needs from a scorer (PerplexityScorer, or a stub in tests)."""

    tokenizer: object
    max_length: int

    def word_nll(self, words: Sequence[str], context: str = "") -> np.ndarray: ...


def split_words(text: str) -> tuple[list[str], list[str]]:
    """Words and the whitespace after each (the last gap may be empty)."""
    matches = list(_WORD.finditer(text))
    words = [m.group() for m in matches]
    gaps = [text[m.end():nxt.start()] for m, nxt in zip(matches, matches[1:])]
    if matches:
        gaps.append(text[matches[-1].end():])
    return words, gaps


def join_kept(words: Sequence[str], gaps: Sequence[str], keep: np.ndarray) -> str:
    """Kept words joined by a space, or by a newline if the original span between them had one."""
    parts: list[str] = []
    pending_newline = False
    for word, gap, kept in zip(words, gaps, keep):
        if kept:
            if parts:
                parts.append("\n" if pending_newline else " ")
            parts.append(word)
            pending_newline = False
        pending_newline = pending_newline or "\n" in gap
    return "".join(parts)


PARTS = ("instruction", "input", "output")
AnswerScoring = Literal["conditional", "contrastive"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """The budget controller's settings.

    rate: kept fraction of a sample's tokens (unit `tokens`: the scorer's; `words`: whitespace words).
    A per-part rate fixes that part; parts left None share the rate solved so that the sample as a whole
    keeps `rate` (budget.solve_part_rates), never below min_rate. The instruction is protected (1.0) by default.
    """

    rate: float
    instruction_rate: float | None = 1.0
    question_rate: float | None = None
    answer_rate: float | None = None
    unit: Literal["tokens", "words"] = "tokens"
    min_rate: float = 0.05

    def part_rates(self, part_tokens: dict[str, int], keep_whole_below: int = 0) -> dict[str, float]:
        """Per-part rates. keep_whole_below > 0: a free part of at most that many units is kept whole (rate 1)
        and its cut moved to the other free parts, shortest part first, as long as some free part remains and
        the sample still meets `rate` (no part pushed under min_rate)."""
        fixed = {"instruction": self.instruction_rate, "input": self.question_rate, "output": self.answer_rate}
        rates = solve_part_rates(self.rate, part_tokens, fixed, self.min_rate)
        if keep_whole_below <= 0:
            return rates
        want = self.rate * sum(part_tokens.values())
        short = sorted((n, p) for p, n in part_tokens.items() if fixed.get(p) is None and 0 < n <= keep_whole_below)
        for _, part in short:
            trial = {**fixed, part: 1.0}
            if not any(trial.get(p) is None and n > 0 for p, n in part_tokens.items()):
                break  # the last free part must carry the cut
            solved = solve_part_rates(self.rate, part_tokens, trial, self.min_rate)
            if abs(sum(solved[p] * n for p, n in part_tokens.items()) - want) > 1e-6 * max(1.0, want):
                break  # the others cannot absorb this part's cut
            fixed, rates = trial, solved
        return rates


def _costs(scorer: WordScorer, words: Sequence[str], gaps: Sequence[str], lead: str, unit: str):
    from damoc.compression.scorer import word_token_ids

    ids = word_token_ids(scorer.tokenizer, words, gaps, lead)
    costs = np.array([len(x) for x in ids], dtype=np.int64)
    return ids, (costs if unit == "tokens" else np.ones(len(words), dtype=np.int64))


def _segments(costs: np.ndarray, segment_words: int, max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive word ranges of at most segment_words words and (unless one word alone is longer)
    max_tokens tokens."""
    out, start, tokens = [], 0, 0
    for i, cost in enumerate(costs):
        if i > start and (i - start >= segment_words or tokens + cost > max_tokens):
            out.append((start, i))
            start, tokens = i, 0
        tokens += int(cost)
    if start < len(costs):
        out.append((start, len(costs)))
    return out


def _ensure_one(keep: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    if keep.size and not keep.any():
        keep[int(np.argmax(scores / np.maximum(costs, 1)))] = True
    return keep


def compress_text(scorer: WordScorer, text: str, rate: float, segment_words: int = 200,
                  context: str = "", unit: str = "tokens") -> str:
    """Iterative compression to `rate` of the text's tokens: each segment scored given context + the
    compressed prefix (KV-cached stream), the cumulative budget filled by NLL per token."""
    if rate >= 1.0 or not text.strip():
        return text
    from damoc.compression.scorer import open_stream

    words, gaps = split_words(text)
    lead = " " if context and not context[-1].isspace() else ""
    ids, costs = _costs(scorer, words, gaps, lead, unit)
    token_costs = np.array([len(x) for x in ids], dtype=np.int64)
    keep = np.zeros(len(words), dtype=bool)
    scores = np.zeros(len(words), dtype=np.float64)
    stream = open_stream(scorer, context)
    seen = kept = 0
    for start, end in _segments(token_costs, segment_words, max(8, scorer.max_length // 2)):
        seg_ids = [t for word in ids[start:end] for t in word]
        nll = stream.score(seg_ids)
        owners = np.repeat(np.arange(end - start), token_costs[start:end])
        seg_scores = np.zeros(end - start, dtype=np.float64)
        np.add.at(seg_scores, owners, nll)
        scores[start:end] = seg_scores
        seen += int(costs[start:end].sum())
        mask = select_by_density(seg_scores, costs[start:end], rate * seen - kept)
        keep[start:end] = mask
        kept += int(costs[start:end][mask].sum())
        stream.append([t for word, k in zip(ids[start:end], mask) if k for t in word])
    return join_kept(words, gaps, _ensure_one(keep, scores, costs))


def answer_scores(scorer: WordScorer, question: str, words: Sequence[str],
                  scoring: AnswerScoring | bool = "conditional") -> np.ndarray:
    """Question-related importance of answer words (summed over each word's tokens).

    conditional: s_i = -log p(a_i | Q, a_<i), LongLLMLingua's condition_in_question: words the question does
    not make predictable are kept. contrastive: s_i = NLL(a_i | a_<i) - NLL(a_i | Q, a_<i), the question-
    related perplexity of the paper: high for words the question makes predictable, i.e. those that answer it.
    """
    if isinstance(scoring, bool):  # older callers: contrastive=True/False
        scoring = "contrastive" if scoring else "conditional"
    conditioned = scorer.word_nll(words, context=question + "\n" if question else "")
    if scoring == "conditional":
        return conditioned
    if scoring == "contrastive":
        return scorer.word_nll(words) - conditioned
    raise ValueError(f"answer scoring must be conditional or contrastive, got {scoring!r}")


def compress_answer(scorer: WordScorer, question: str, answer: str, rate: float,
                    scoring: AnswerScoring | bool = "conditional", unit: str = "tokens") -> str:
    """Keep `rate` of the answer's tokens, words ranked by answer_scores per token (one global budget)."""
    if rate >= 1.0:
        return answer
    words, gaps = split_words(answer)
    if not words:
        return ""
    _, costs = _costs(scorer, words, gaps, "", unit)
    scores = answer_scores(scorer, question, words, scoring)
    keep = select_by_density(scores, costs, rate * int(costs.sum()))
    return join_kept(words, gaps, _ensure_one(keep, scores, costs))


def count_units(scorer: WordScorer, text: str, unit: str = "tokens") -> int:
    if unit == "words":
        return len(text.split())
    return len(scorer.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def compress_sample(scorer: WordScorer, sample: Sample, budget: Budget | float, segment_words: int = 200,
                    answer_scoring: AnswerScoring | bool = "conditional",
                    instruction_cache: dict | None = None) -> Sample:
    """Compress each part to its rate (Budget.part_rates for this sample); the id is kept.

    The compressed instruction conditions the question; the answer is scored against the ORIGINAL
    instruction + question. Identical instructions are compressed once (instruction_cache: text -> form),
    so every row, and evaluation, sees the same instruction.
    """
    if not isinstance(budget, Budget):
        budget = Budget(rate=float(budget), instruction_rate=None)
    if budget.rate >= 1.0 and all(r in (None, 1.0) for r in (budget.instruction_rate, budget.question_rate,
                                                           budget.answer_rate)):
        return sample
    tokens = {part: count_units(scorer, getattr(sample, part), budget.unit) for part in PARTS}
    rates = budget.part_rates(tokens)
    cache = instruction_cache if instruction_cache is not None else {}
    key = (sample.instruction, rates["instruction"], budget.unit)
    if key not in cache:
        cache[key] = compress_text(scorer, sample.instruction, rates["instruction"], segment_words,
                                   unit=budget.unit)
    instruction = cache[key]
    input_ = compress_text(scorer, sample.input, rates["input"], segment_words, context=instruction,
                           unit=budget.unit)
    question = "\n".join(part for part in (sample.instruction, sample.input) if part)
    output = compress_answer(scorer, question, sample.output, rates["output"], answer_scoring, budget.unit)
    return dataclasses.replace(sample, instruction=instruction, input=input_, output=output)
