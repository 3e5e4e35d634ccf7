"""The cost model: FLOPs per stage from token and parameter counts, measured after a run or projected before it.

Seconds on a shared box are noisy; FLOPs are not. The usual estimates: a forward pass costs 2 x params per
token, a training step 6 x params per token (forward + backward; also used for LoRA, as an upper bound).
Encoders (MiniLM, 22.7M parameters) embed for filtering and score the BERTScore gate. Generation with a KV
cache costs one forward token per new token; `max_new_tokens` is the (upper-bound) number generated.

Two users: the benchmark (damoc.benchmark.flops re-exports the per-stage functions and applies them to the
statistics every stage reports) and `damoc estimate` (:func:`estimate`), which applies the SAME functions to
projected statistics — parameter counts from each candidate's config (no weights loaded), token counts of a
sample of the data through each candidate's tokenizer, and the recipe's kept fractions — before anything runs.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2
WORD_PIECES_PER_WORD = 1.3
# Assumed sustained training throughput of one GPU: an H100 SXM's dense bf16 peak is ~989 TFLOP/s; LLM
# fine-tuning typically sustains 35-45% of it (model FLOPs utilisation), so 400 TFLOP/s per GPU.
DEFAULT_GPU_TFLOPS = 400.0
PAPER_GATE_PASS = 0.92  # the paper: ~92% of compressed samples pass the 0.9 gate on perplexity alone


# --------------------------------------------------------------------------------------------------------
# per-stage FLOPs (from a stage's statistics; the benchmark applies them to measured ones)

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


def gpu_hours(flops: float, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> float:
    return flops / (gpu_tflops * 1e12) / 3600.0


# --------------------------------------------------------------------------------------------------------
# parameter counts from a config (no weights)

@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    layer_params: int  # parameters of one decoder layer (the mean over the numbered blocks)

    def after_pruning(self, dropped: int) -> int:
        return self.params - dropped * self.layer_params


_BLOCK = re.compile(r"\.(\d+)\.")


def shape_from_config(config) -> ModelShape:
    """Parameter count of the causal LM a transformers config describes, built on the meta device (no memory,
    no weights); tied embeddings counted once, as `model.parameters()` (and so fine-tuning's stats) does."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    blocks: dict[str, int] = {}
    for name, p in model.named_parameters():
        match = _BLOCK.search(name)
        if match:
            blocks[match.group(1)] = blocks.get(match.group(1), 0) + p.numel()
    layers = len(blocks) or int(getattr(config, "num_hidden_layers", 0) or 0)
    return ModelShape(params, layers, (sum(blocks.values()) // len(blocks)) if blocks else 0)


@lru_cache(maxsize=64)
def model_shape(path: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of the checkpoint at `path` (local dir or hub id in the local cache) from its config.json."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        from damoc.config import ConfigError

        raise ConfigError(f"candidate {path}: cannot read its config.json ({err}); give a local checkpoint "
                          "directory or a hub id available offline") from None
    return shape_from_config(config)


def shape_from_dict(config: Mapping[str, Any]) -> ModelShape:
    """A model described by a config dict (model_type + the architecture's fields), e.g. for a projection."""
    from transformers import AutoConfig

    fields = dict(config)
    return shape_from_config(AutoConfig.for_model(fields.pop("model_type"), **fields))


# --------------------------------------------------------------------------------------------------------
# projection

@dataclass(frozen=True)
class CandidateInputs:
    """What the projection needs about one candidate: its shape and its mean tokens per row."""

    name: str
    shape: ModelShape
    train_tokens: float  # mean tokens per training row, as fine-tuning encodes it (truncated at max_length)
    overhead_tokens: float  # of those, the prompt template's (BOS, chat template, EOS): not compressed
    eval_prompt_tokens: float  # mean per eval row
    eval_answer_tokens: float
    prunable: bool = False
    dropped_layers: int | None = None  # known layers dropped (e.g. measured); None: the recipe's prune_share


@dataclass(frozen=True)
class Recipe:
    """The kept fractions and sizes the projection applies (what the run would do, or what is assumed)."""

    train_rows: int
    eval_rows: int
    epochs: float
    batch_size: int
    max_steps: int | None = None
    filter_ratio: float = 1.0
    filter_embeds: bool = False
    compression_kept: float = 1.0  # expected kept fraction of a row's text tokens (1: no compression)
    prune_share: float = 0.0  # share of layers dropped on prunable candidates
    calibration_rows: int = 0
    predict: bool = True
    max_new_tokens: int = 64
    choice_options: int = 0
    train_words_per_row: float = 0.0  # for the filter's embedding and the gate
    scorer_params: int = 0
    scorer_tokens_per_row: float = 0.0


def _train_steps(rows: int, recipe: Recipe) -> int:
    if recipe.max_steps:
        return recipe.max_steps
    return max(1, math.ceil(recipe.epochs * math.ceil(rows / recipe.batch_size)))


def project(cands: Sequence[CandidateInputs], recipe: Recipe, *, damoc: bool = True) -> dict[str, Any]:
    """FLOPs per stage (data stages once, candidate stages per candidate) of a DaMoC run (damoc=True) or of
    grid search (all rows, uncompressed, unpruned) with the same training and evaluation settings."""
    rows = max(1, round(recipe.filter_ratio * recipe.train_rows)) if damoc else recipe.train_rows
    kept = recipe.compression_kept if damoc else 1.0
    data: dict[str, float] = {}
    if damoc and recipe.filter_ratio < 1.0 and recipe.filter_embeds:
        data["filter"] = filter_flops({"stats": {"embed_texts": recipe.train_rows}},
                                      round(recipe.train_rows * recipe.train_words_per_row))
    if damoc and kept < 1.0:
        words_in = rows * recipe.train_words_per_row
        data["compress"] = compress_flops({"stats": {
            "tokens_in": rows * recipe.scorer_tokens_per_row, "words_in": words_in,
            "words_out": words_in * kept}}, recipe.scorer_params)
    per_candidate: dict[str, dict[str, float]] = {}
    for c in cands:
        if not (damoc and c.prunable):
            dropped = 0
        else:
            dropped = c.dropped_layers if c.dropped_layers is not None else round(recipe.prune_share * c.shape.layers)
        params = c.shape.after_pruning(dropped)
        row_tokens = c.overhead_tokens + kept * (c.train_tokens - c.overhead_tokens)
        steps = _train_steps(rows, recipe)
        stages = {
            "train": train_flops({"samples": rows, "tokens": rows * row_tokens, "steps": steps, "params": params},
                                 recipe.batch_size),
            "evaluate": eval_flops(params, round(recipe.eval_rows * c.eval_prompt_tokens),
                                   round(recipe.eval_rows * c.eval_answer_tokens), recipe.eval_rows,
                                   recipe.max_new_tokens, recipe.predict or not damoc,  # GS needs the metric
                                   recipe.choice_options),
        }
        if dropped or (damoc and c.prunable and recipe.calibration_rows):
            stages["prune"] = prune_flops({"status": "ok", "stats": {"params_before": c.shape.params}},
                                          round(recipe.calibration_rows * c.train_tokens))
        per_candidate[c.name] = {**stages, "params": params, "layers_dropped": dropped}
    flops: dict[str, float] = dict(data)
    for stages in per_candidate.values():
        for key in ("prune", "train", "evaluate"):
            if key in stages:
                flops[key] = flops.get(key, 0.0) + stages[key]
    total = sum(flops.values())
    slowest = max((sum(v for k, v in s.items() if k in ("prune", "train", "evaluate"))
                   for s in per_candidate.values()), default=0.0)
    return {"flops": flops, "total_flops": total, "per_candidate": per_candidate, "train_rows": rows,
            "critical_path_flops": sum(data.values()) + slowest}


def with_time(projection: dict[str, Any], gpu_tflops: float) -> dict[str, Any]:
    """GPU-hours (all FLOPs at the assumed throughput) and wall hours with one GPU per candidate in parallel
    (the data stages, then the slowest candidate)."""
    return {**projection, "gpu_hours": gpu_hours(projection["total_flops"], gpu_tflops),
            "wall_hours": gpu_hours(projection["critical_path_flops"], gpu_tflops)}


def compare(cands: Sequence[CandidateInputs], recipe: Recipe, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> dict:
    """The DaMoC run and grid search side by side, with the saving (grid / DaMoC)."""
    run = with_time(project(cands, recipe, damoc=True), gpu_tflops)
    grid = with_time(project(cands, recipe, damoc=False), gpu_tflops)
    train_run, train_grid = run["flops"].get("train", 0.0), grid["flops"].get("train", 0.0)
    return {"damoc": run, "grid_search": grid, "recipe": asdict(recipe), "gpu_tflops": gpu_tflops,
            "saving": grid["total_flops"] / run["total_flops"] if run["total_flops"] else None,
            "saving_train": train_grid / train_run if train_run else None,
            "saving_wall": grid["wall_hours"] / run["wall_hours"] if run["wall_hours"] else None}
