"""Cost in FLOPs (tokens x parameters), from the statistics every stage already reports.

Seconds on a shared 2-core box are noisy; FLOPs are not. The usual estimates: a forward pass costs
2 x params per token, a training step 6 x params per token (forward + backward). Encoders (MiniLM, 22.7M
parameters) embed for filtering and score the BERTScore gate. Generation with a KV cache costs one forward
token per new token; `max_new_tokens` is used as the (upper-bound) number of generated tokens.
"""
from __future__ import annotations

from typing import Any, Mapping

MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2
WORD_PIECES_PER_WORD = 1.3


def train_flops(train_stats: Mapping[str, Any], batch_size: int) -> float:
    """6 x params x tokens processed (tokens per epoch scaled by the samples actually seen)."""
    samples, tokens, steps = train_stats.get("samples"), train_stats.get("tokens"), train_stats.get("steps")
    params = train_stats.get("params")
    if not samples or not tokens or not steps or not params:
        return 0.0
    seen = min(steps * batch_size, 10**12) / samples  # epochs actually run (last batch may be partial)
    return 6.0 * params * tokens * seen


def eval_flops(params: int, prompt_tokens: int, answer_tokens: int, rows: int, max_new_tokens: int,
               predict: bool, choice_options: int = 0) -> float:
    """Reference log-likelihood pass, plus generation (prompt + new tokens) or one pass per option."""
    loglik = 2.0 * params * (prompt_tokens + answer_tokens)
    if not predict:
        return loglik
    if choice_options:
        return loglik * (1 + choice_options)
    return loglik + 2.0 * params * (prompt_tokens + rows * max_new_tokens)


def filter_flops(filter_stats: Mapping[str, Any], train_words: int) -> float:
    """Embedding every training row once (methods that embed); scorer-based methods are not estimated."""
    if filter_stats.get("status") == "skipped" or not filter_stats.get("stats", {}).get("embed_texts"):
        return 0.0
    return 2.0 * MINILM_PARAMS * train_words * WORD_PIECES_PER_WORD


def compress_flops(compress_stats: Mapping[str, Any], scorer_params: int) -> float:
    """Perplexity scoring of every token by the scorer LM, plus the BERTScore gate on both texts."""
    stats = compress_stats.get("stats", {})
    if compress_stats.get("status") == "skipped" or not stats.get("tokens_in"):
        return 0.0
    tokens_in, tokens_out = stats["tokens_in"], stats.get("tokens_out", stats["tokens_in"])
    words = stats.get("words_in", tokens_in) + stats.get("words_out", tokens_out)
    return 2.0 * scorer_params * tokens_in + 2.0 * MINILM_PARAMS * words * WORD_PIECES_PER_WORD


def prune_flops(prune_stats: Mapping[str, Any], calibration_tokens: int) -> float:
    """One forward pass of the calibration rows through the chat model."""
    params = prune_stats.get("stats", {}).get("params_before")
    if prune_stats.get("status") != "ok" or not params:
        return 0.0
    return 2.0 * params * calibration_tokens
