"""Stage 2: token compression of the (filtered) training samples, then a BERTScore quality gate.

Design: compression works at WORD level (whitespace-separated words keep punctuation attached) so the output
is clean text that any candidate's tokenizer can read; the scorer LM's token NLLs are summed per word via the
fast tokenizer's offset mapping (scorer.py). Instruction and input are compressed iteratively, each segment
conditioned on the already compressed prefix (LLMLingua); the output by question-conditioned perplexity
(LongLLMLingua), see compressor.py.

Samples whose compression scores below the gate are handed to a `Rewriter` (the vLLM rewriting loop, a later
issue; none yet) and, if still failing or with no rewriter, fall back to their ORIGINAL text.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from typing import TYPE_CHECKING

from damoc.data.schema import Sample

if TYPE_CHECKING:
    from damoc.compression.scorer import PerplexityScorer

_LAZY = {"compress_answer": "compressor", "compress_sample": "compressor", "compress_text": "compressor",
         "gate_scores": "gate", "PerplexityScorer": "scorer"}


def __getattr__(name: str):
    # Lazy: importing damoc.compression.rewriters (the config does) must not pull in torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"damoc.compression.{_LAZY[name]}"), name)
    raise AttributeError(name)

__all__ = ["PerplexityScorer", "Rewriter", "compress_answer", "compress_dataset", "compress_sample",
           "compress_text", "gate_scores", "resolve_gate_failures"]

Rewriter = Callable[[list[Sample], list[Sample], list[Sample]], list[Sample | None]]
"""(originals, their failed compressions, passed compressions usable as examples) -> one revised compression
per failure, or None to give up on it. The rewriter may loop internally (re-scoring with gate_scores and
feeding failed attempts back as negative examples); its revisions are re-gated here once more."""


def resolve_gate_failures(originals: Sequence[Sample], compressed: Sequence[Sample], scores: Sequence[float],
                          threshold: float, rewriter: Rewriter | None = None,
                          bertscore_model: str | None = None) -> tuple[list[Sample], list[str]]:
    """Final samples and each one's fate: 'passed', 'rewritten' or 'fell_back' (original text kept).

    This is where the LLM rewriter plugs in: without one, every sample below the threshold falls back.
    """
    from damoc.compression.gate import gate_scores

    final = list(compressed)
    fate = ["passed" if s >= threshold else "fell_back" for s in scores]
    failed = [i for i, f in enumerate(fate) if f == "fell_back"]
    if rewriter is not None and failed:
        examples = [compressed[i] for i, f in enumerate(fate) if f == "passed"]
        revisions = rewriter([originals[i] for i in failed], [compressed[i] for i in failed], examples)
        revised = [(i, r) for i, r in zip(failed, revisions) if r is not None]
        if revised:
            new_scores = gate_scores([originals[i] for i, _ in revised], [r for _, r in revised], bertscore_model)
            for (i, revision), score in zip(revised, new_scores):
                if score >= threshold:
                    final[i], fate[i] = revision, "rewritten"
    for i, f in enumerate(fate):
        if f == "fell_back":
            final[i] = originals[i]
    return final, fate


def _word_count(sample: Sample) -> int:
    return len(sample.text.split())


def _token_count(count: Callable[[str], int], sample: Sample) -> int:
    return sum(count(field) for field in (sample.instruction, sample.input, sample.output))


def compress_dataset(samples: Sequence[Sample], *, scorer_model: str, rate: float, bertscore_threshold: float,
                     segment_words: int = 200, trust_remote_code: bool = False, progress: bool = False,
                     contrastive: bool = False, rewriter: Rewriter | None = None,
                     bertscore_model: str | None = None) -> tuple[list[Sample], dict]:
    """Compress every sample, gate by BERTScore, resolve failures; returns (samples, stats).

    rate >= 1.0 is the identity (no scoring, no gate; the scorer's tokenizer alone counts tokens).
    """
    from damoc.compression.compressor import compress_sample
    from damoc.compression.gate import gate_scores
    from damoc.compression.scorer import PerplexityScorer

    started = time.perf_counter()
    samples = list(samples)
    if rate >= 1.0:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(scorer_model, trust_remote_code=trust_remote_code)
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0  # noqa: E731
        final, scores, fate = samples, [1.0] * len(samples), ["passed"] * len(samples)
    else:
        scorer = PerplexityScorer(scorer_model, trust_remote_code=trust_remote_code)
        count = scorer.count_tokens
        iterator = samples
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(samples, desc="compress", unit="sample")
        compressed = [compress_sample(scorer, s, rate, segment_words, contrastive) for s in iterator]
        scores = gate_scores(samples, compressed, bertscore_model)
        final, fate = resolve_gate_failures(samples, compressed, scores, bertscore_threshold, rewriter,
                                            bertscore_model)
    words_in = sum(map(_word_count, samples))
    words_out = sum(map(_word_count, final))
    tokens_in = sum(_token_count(count, s) for s in samples)
    tokens_out = sum(_token_count(count, s) for s in final)
    stats = {
        "n": len(samples),
        "passed_gate": fate.count("passed"),
        "rewritten": fate.count("rewritten"),
        "fell_back": fate.count("fell_back"),
        "mean_bertscore": sum(scores) / len(scores) if scores else 1.0,
        "words_in": words_in,
        "words_out": words_out,
        "word_ratio": words_out / words_in if words_in else 1.0,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "token_ratio": tokens_out / tokens_in if tokens_in else 1.0,
        "rate": rate,
        "threshold": bertscore_threshold,
        "seconds": time.perf_counter() - started,
    }
    return final, stats
