"""Stage 2: token compression of the (filtered) training samples, then a BERTScore quality gate.

Design: compression works at WORD level (whitespace-separated words keep punctuation attached) so the output
is clean text that any candidate's tokenizer can read; the scorer LM's token NLLs are summed per word via the
fast tokenizer's offset mapping (scorer.py). Instruction and input are compressed iteratively, each segment
conditioned on the already compressed prefix (LLMLingua); the output by question-conditioned perplexity
(LongLLMLingua), see compressor.py.

Budgets are in the scorer's tokens, split per part (budget controller: compressor.Budget). Samples whose
compression scores below the gate go to the iterative rewriting loop (rewriters.py: an OpenAI-compatible
server such as vLLM, or an in-process model) and, if still failing, train on their ORIGINAL text (or their
best attempt: gate_failure). `dataset_kwargs(cfg.compression)` turns the run configuration into the keyword
arguments of `compress_dataset`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from typing import TYPE_CHECKING

from damoc.data.schema import Sample

if TYPE_CHECKING:
    from damoc.compression.scorer import PerplexityScorer

_LAZY = {"compress_answer": "compressor", "compress_sample": "compressor", "compress_text": "compressor",
         "Budget": "compressor", "gate_scores": "gate", "PerplexityScorer": "scorer"}


def __getattr__(name: str):
    # Lazy: importing damoc.compression.rewriters (the config does) must not pull in torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"damoc.compression.{_LAZY[name]}"), name)
    raise AttributeError(name)

__all__ = ["Budget", "PerplexityScorer", "Rewriter", "compress_answer", "compress_dataset", "compress_sample",
           "compress_text", "dataset_kwargs", "gate_scores", "resolve_gate_failures"]

Rewriter = Callable[[list[Sample], list[Sample], list[Sample]], list[Sample | None]]
"""(originals, their failed compressions, passed compressions usable as examples) -> one revised compression
per failure, or None to give up on it. The rewriter may loop internally (re-scoring with gate_scores and
feeding failed attempts back as negative examples); its revisions are re-gated here once more."""


def resolve_gate_failures(originals: Sequence[Sample], compressed: Sequence[Sample], scores: Sequence[float],
                          threshold: float, rewriter: Rewriter | None = None,
                          bertscore_model: str | None = None, gate=None) -> tuple[list[Sample], list[str]]:
    """Final samples and each one's fate: 'passed', 'rewritten' or 'fell_back' (original text kept).

    This is where the LLM rewriter plugs in: without one, every sample below the threshold falls back.
    """
    if gate is None:
        from damoc.compression.gate import gate_scores

        gate = lambda o, c: gate_scores(o, c, bertscore_model)  # noqa: E731
    final = list(compressed)
    fate = ["passed" if s >= threshold else "fell_back" for s in scores]
    failed = [i for i, f in enumerate(fate) if f == "fell_back"]
    if rewriter is not None and failed:
        examples = [compressed[i] for i, f in enumerate(fate) if f == "passed"]
        revisions = rewriter([originals[i] for i in failed], [compressed[i] for i in failed], examples)
        revised = [(i, r) for i, r in zip(failed, revisions) if r is not None]
        if revised:
            new_scores = gate([originals[i] for i, _ in revised], [r for _, r in revised])
            for (i, revision), score in zip(revised, new_scores):
                if score >= threshold:
                    final[i], fate[i] = revision, "rewritten"
    for i, f in enumerate(fate):
        if f == "fell_back":
            final[i] = originals[i]
    return final, fate


PARTS = ("instruction", "input", "output")


def _word_count(sample: Sample) -> int:
    return len(sample.text.split())


def dataset_kwargs(compression) -> dict[str, Any]:
    """compress_dataset keyword arguments from a CompressionConfig (everything but scorer_model, progress and
    tokenizer_paths, which the workflow step supplies)."""
    c = compression
    return dict(method=c.method, method_options=c.method_options.get(c.method),
                rate=c.rate, bertscore_threshold=c.bertscore_threshold, segment_words=c.segment_words,
                budget_unit=c.budget_unit, instruction_rate=c.instruction_rate, question_rate=c.question_rate,
                answer_rate=c.answer_rate, answer_scoring=c.answer_scoring, bertscore_model=c.gate_model,
                gate_layer=c.gate_layer, gate_window_words=c.gate_window_words, gate_failure=c.gate_failure,
                rewriter=c.rewriter if c.rewrite else None,
                rewriter_options=c.rewriter_options.get(c.rewriter) if c.rewrite else None,
                rewrite_rounds=c.rewrite_rounds, rewrite_examples=c.rewrite_examples,
                rewrite_length_tolerance=c.rewrite_length_tolerance)


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    import numpy as np

    q = np.quantile(np.asarray(values, dtype=np.float64), [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return dict(zip(("min", "p10", "p25", "p50", "p75", "p90", "max"), map(float, q)))


HISTOGRAM_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)


def _histogram(values: Sequence[float], threshold: float) -> list[dict[str, float]]:
    """BERTScore counts per bin [lo, hi) (the last bin includes 1.0); the gate threshold is always an edge."""
    import numpy as np

    edges = sorted(set(HISTOGRAM_EDGES) | {float(threshold)})
    counts, _ = np.histogram(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0), bins=edges)
    return [{"lo": lo, "hi": hi, "count": int(c)} for lo, hi, c in zip(edges, edges[1:], counts)]


def _tokenizer_counter(path: str, trust_remote_code: bool) -> Callable[[str], int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def _part_counts(count: Callable[[str], int], samples: Sequence[Sample]) -> dict[str, int]:
    return {part: sum(count(getattr(s, part)) for s in samples) for part in PARTS}


def compress_dataset(samples: Sequence[Sample], *, scorer_model: str, rate: float, bertscore_threshold: float,
                     segment_words: int = 200, trust_remote_code: bool = False, progress: bool = False,
                     contrastive: bool = False, rewriter: Rewriter | str | object | None = None,
                     bertscore_model: str | None = None, budget_unit: str = "tokens",
                     instruction_rate: float | None = 1.0, question_rate: float | None = None,
                     answer_rate: float | None = None, answer_scoring: str | None = None,
                     gate_layer: int | None = None, gate_window_words: int = 200, gate_failure: str = "original",
                     rewriter_options: dict | None = None, rewrite_rounds: int = 2, rewrite_examples: int = 3,
                     rewrite_length_tolerance: float = 0.1, tokenizer_paths: dict[str, str] | None = None,
                     seed: int = 0, rewrite_system_prompt: str | None = None, method: str = "damoc",
                     method_options: dict | None = None) -> tuple[list[Sample], dict]:
    """Compress every sample to the token budget, gate by BERTScore, rewrite failures; returns (samples, stats).

    rewriter: None; a backend name (`openai`, `local`; settings in rewriter_options); a backend object
    (`generate(conversations)`); or an old-style `Rewriter` callable (one pass, re-gated here).
    tokenizer_paths: {name: tokenizer dir} (the candidates'); stats then report the token ratio in each.
    rate >= 1.0 with no per-part rate below 1 is the identity (no scoring, no gate).
    method: a registered compression method (methods.METHODS: damoc, llmlingua, longllmlingua) with its
    settings in method_options; a method that does not allow rewriting ignores `rewriter`.
    """
    from damoc.compression.compressor import Budget
    from damoc.compression.gate import gate_scores
    from damoc.compression.methods import METHODS
    from damoc.registry import validate_settings

    entry = METHODS.get(method)
    settings = validate_settings(entry, method_options, method)
    if not entry.allows_rewrite(settings):
        rewriter = None
    counters: dict[str, int] = {}

    started = time.perf_counter()
    samples = list(samples)
    scoring = answer_scoring or ("contrastive" if contrastive else "conditional")
    budget = Budget(rate=rate, instruction_rate=instruction_rate, question_rate=question_rate,
                    answer_rate=answer_rate, unit=budget_unit)  # type: ignore[arg-type]
    identity = rate >= 1.0 and all(r in (None, 1.0) for r in (instruction_rate, question_rate, answer_rate))
    gate = lambda o, c: gate_scores(o, c, bertscore_model, gate_layer, gate_window_words)  # noqa: E731
    rounds: list[dict] = []
    attempts = errors = 0
    compress_seconds = 0.0
    if identity:
        count = _tokenizer_counter(scorer_model, trust_remote_code)
        final, scores, fate = samples, [1.0] * len(samples), ["passed"] * len(samples)
        final_scores = scores
    else:
        from damoc.compression.scorer import PerplexityScorer

        scorer = PerplexityScorer(scorer_model, trust_remote_code=trust_remote_code)
        count = scorer.count_tokens
        iterator = samples
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(samples, desc="compress", unit="sample")
        instructions: dict = {}
        t0 = time.perf_counter()
        compressed = [entry.compress_sample(scorer, s, budget, settings=settings, segment_words=segment_words,
                                            answer_scoring=scoring, instruction_cache=instructions,
                                            counters=counters) for s in iterator]
        compress_seconds = time.perf_counter() - t0
        scores = gate(samples, compressed)
        final_scores = list(scores)
        if rewriter is not None and not isinstance(rewriter, str) and not hasattr(rewriter, "generate"):
            final, fate = resolve_gate_failures(samples, compressed, scores, bertscore_threshold, rewriter,  # type: ignore[arg-type]
                                                gate=gate)
        else:
            final = list(compressed)
            fate = ["passed" if s >= bertscore_threshold else "failed" for s in scores]
            failed = [i for i, f in enumerate(fate) if f == "failed"]
            if rewriter is not None and failed:
                from damoc.compression.rewriters import build_backend, rewrite_failures

                backend = build_backend(rewriter, rewriter_options, default_model=scorer_model) \
                    if isinstance(rewriter, str) else rewriter
                examples = [compressed[i] for i, f in enumerate(fate) if f == "passed"]
                outcome = rewrite_failures(backend, [samples[i] for i in failed], [compressed[i] for i in failed],
                                           [scores[i] for i in failed], examples, gate, bertscore_threshold,
                                           rewrite_rounds, rewrite_examples, rewrite_length_tolerance, seed,
                                           rewrite_system_prompt)
                rounds, attempts = outcome.rounds, outcome.attempts
                errors = int(getattr(backend, "errors", 0))
                for j, i in enumerate(failed):
                    final[i], final_scores[i] = outcome.samples[j], outcome.scores[j]
                    if outcome.passed[j]:
                        fate[i] = "rewritten"
            for i, f in enumerate(fate):
                if f == "failed":
                    if gate_failure == "best_attempt":
                        fate[i] = "best_attempt"
                    else:
                        final[i], final_scores[i], fate[i] = samples[i], 1.0, "fell_back"
    parts_in, parts_out = _part_counts(count, samples), _part_counts(count, final)
    tokens_in, tokens_out = sum(parts_in.values()), sum(parts_out.values())
    words_in = sum(map(_word_count, samples))
    words_out = sum(map(_word_count, final))
    n = len(samples)
    per_tokenizer = {}
    for name, path in (tokenizer_paths or {}).items():
        counter = _tokenizer_counter(path, trust_remote_code)
        p_in, p_out = _part_counts(counter, samples), _part_counts(counter, final)
        t_in, t_out = sum(p_in.values()), sum(p_out.values())
        per_tokenizer[name] = {"tokens_in": t_in, "tokens_out": t_out, "token_ratio": t_out / t_in if t_in else 1.0,
                               "parts": {p: p_out[p] / p_in[p] if p_in[p] else 1.0 for p in PARTS}}
    stats = {
        "n": n,
        "passed_gate": fate.count("passed"),
        "rewritten": fate.count("rewritten"),
        "fell_back": fate.count("fell_back"),
        "best_attempt": fate.count("best_attempt"),
        "still_failing": fate.count("fell_back") + fate.count("best_attempt"),
        "gate_pass_rate_before_rewrite": fate.count("passed") / n if n else 1.0,
        "gate_pass_rate": (fate.count("passed") + fate.count("rewritten")) / n if n else 1.0,
        "mean_bertscore": sum(scores) / len(scores) if scores else 1.0,
        "bertscore_quantiles": _quantiles(scores),
        "bertscore_histogram": _histogram(scores, bertscore_threshold),
        "final_bertscore_quantiles": _quantiles(final_scores),
        "rewrite_rounds": [{**r, "share_rewritten": r["passed"] / n if n else 0.0} for r in rounds],
        "rewrite_attempts": attempts,
        "rewrite_errors": errors,
        "words_in": words_in,
        "words_out": words_out,
        "word_ratio": words_out / words_in if words_in else 1.0,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "token_ratio": tokens_out / tokens_in if tokens_in else 1.0,
        "parts": {part: {"tokens_in": parts_in[part], "tokens_out": parts_out[part],
                         "token_ratio": parts_out[part] / parts_in[part] if parts_in[part] else 1.0}
                  for part in PARTS},
        "tokenizers": per_tokenizer,
        "method": method,
        "method_settings": settings.model_dump(mode="json"),
        "method_stats": counters,
        "rate": rate,
        "budget_unit": budget_unit,
        "part_rates": {"instruction": instruction_rate, "input": question_rate, "output": answer_rate},
        "answer_scoring": scoring,
        "threshold": bertscore_threshold,
        "compress_seconds": compress_seconds,
        "tokens_per_second": tokens_in / compress_seconds if compress_seconds else None,
        "seconds": time.perf_counter() - started,
    }
    return final, stats
