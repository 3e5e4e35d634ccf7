"""Perplexity-based compression of one text, one answer, one sample (LLMLingua / LongLLMLingua style).

Word level: a text is split into whitespace-separated words (punctuation stays attached), words are scored
by the scorer's summed token NLL (see scorer.py) and the budget keeps the most surprising ones, in order.
The kept words are re-joined with a single space, or a newline where the dropped/kept gap held one, so
line structure survives. A rate >= 1 returns the text untouched.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Protocol, Sequence

import numpy as np

from damoc.compression.budget import keep_mask, segments
from damoc.data.schema import Sample

_WORD = re.compile(r"\S+")


class WordScorer(Protocol):
    """What the compressor needs from a scorer (PerplexityScorer, or a stub in tests)."""

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


def _join_context(context: str, compressed_prefix: str) -> str:
    return "\n".join(part for part in (context, compressed_prefix) if part)


def compress_text(scorer: WordScorer, text: str, rate: float, segment_words: int = 200,
                  context: str = "") -> str:
    """Iterative compression: each segment is scored conditioned on context + the COMPRESSED prefix.

    Conditioning on what was kept (not the original) is LLMLingua's point: a word made predictable only by
    words that were dropped is still informative in the compressed text.
    """
    if rate >= 1.0:
        return text
    words, gaps = split_words(text)
    keep = np.zeros(len(words), dtype=bool)
    for start, end in segments(len(words), segment_words):
        prefix = join_kept(words[:start], gaps[:start], keep[:start])
        scores = scorer.word_nll(words[start:end], context=_join_context(context, prefix))
        keep[start:end] = keep_mask(scores, rate)
    return join_kept(words, gaps, keep)


def answer_scores(scorer: WordScorer, question: str, words: Sequence[str], contrastive: bool = False) -> np.ndarray:
    """Question-related importance of answer words.

    Plain: s_i = -log p(a_i | Q, a_<i). Contrastive: s_i = NLL(a_i | a_<i) - NLL(a_i | Q, a_<i), high for
    words the question makes predictable, i.e. the words that answer it.
    """
    conditioned = scorer.word_nll(words, context=question + "\n" if question else "")
    if not contrastive:
        return conditioned
    return scorer.word_nll(words) - conditioned


def compress_answer(scorer: WordScorer, question: str, answer: str, rate: float,
                    contrastive: bool = False) -> str:
    """Keep the budget's share of the answer's words ranked by answer_scores (one global budget)."""
    if rate >= 1.0:
        return answer
    words, gaps = split_words(answer)
    if not words:
        return ""
    return join_kept(words, gaps, keep_mask(answer_scores(scorer, question, words, contrastive), rate))


def compress_sample(scorer: WordScorer, sample: Sample, rate: float, segment_words: int = 200,
                    contrastive: bool = False) -> Sample:
    """Compress each field to the rate; the id is kept.

    Instruction then input are compressed as one iterative stream (the compressed instruction conditions
    the input); the output is scored against the ORIGINAL instruction + input, the full question.
    """
    if rate >= 1.0:
        return sample
    instruction = compress_text(scorer, sample.instruction, rate, segment_words)
    input_ = compress_text(scorer, sample.input, rate, segment_words, context=instruction)
    question = "\n".join(part for part in (sample.instruction, sample.input) if part)
    output = compress_answer(scorer, question, sample.output, rate, contrastive)
    return dataclasses.replace(sample, instruction=instruction, input=input_, output=output)
