"""LESS (Xia et al. 2024): select the training samples whose gradients point where a target set's do
(quality-aware, target-aware) — simplified so it runs on CPU in a filtering step.

What LESS does: warm up LoRA on a random 5% of the data for a few epochs, save checkpoints; at each one
compute per-example Adam-preconditioned LoRA gradients, project them with a random Rademacher matrix to
d = 8192 dims, L2-normalise; score a training sample by the learning-rate-weighted sum over checkpoints of
its cosine similarity to the target (validation) examples' gradients; keep the top.

What this module does (honest list of the simplifications):
- no warm-up and one checkpoint: gradients are taken at the scorer LM as it is (the run's scorer, the first
  candidate's base checkpoint by default, or `scorer_model`);
- no LoRA: the per-example gradient is that of the mean answer-token loss w.r.t. the full weights of the
  last `layers` transformer blocks only (the "last layer(s)");
- no Adam preconditioning: plain (SGD) gradients;
- the projection is a seeded sparse Rademacher (CountSketch) map to `projection_dim` dims — each gradient
  coordinate goes to one output dim with a random sign — a Johnson-Lindenstrauss projection costing O(P)
  per example instead of O(P x d), then L2 normalisation (its index and sign arrays take 16 bytes per
  gradient coordinate: ~3 GB for one block of a 7B model — fine for the small scorers this is meant for);
- score = cosine similarity to the mean of the target set's normalised projected gradients (= mean cosine
  to the target examples). The target set is the run's eval/validation samples when the caller passes them
  (FilterContext.target_samples); otherwise a seeded held-out slice of `target_fraction` of the training
  rows, which is then ranked after every other row (they trivially resemble themselves). The pipeline's filter
  step passes no target samples, deliberately: rows of the evaluation set must not steer which training rows are
  kept, or the ranking would be scored on the data that chose the proxies' training set.
Deterministic per seed (projection and held-out slice are seeded; the model runs in eval mode).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.filtering.base import FilterContext, SampleFilter, register
from damoc.filtering.scoring import ScorerSettings, load_scorer, scorer_path


class LessSettings(ScorerSettings):
    projection_dim: int = Field(8192, ge=8, description="dimension of the random projection of each gradient "
                                "(the paper: 8192)")
    layers: int = Field(1, ge=1, description="gradients of the last this many transformer blocks")
    target_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="held-out share of the training rows used as "
                                   "the target set when the run passes no eval samples")


def _blocks(model: Any) -> list[Any]:
    """The transformer blocks: the largest torch.nn.ModuleList in the model (model.layers, h, ...)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError("less: cannot find the transformer blocks of the scorer model")
    return max(lists, key=lambda m: (sum(p.numel() for p in m.parameters()), len(m)))


def projected_gradients(model: Any, tok: Any, samples: Sequence[Sample], params: list[Any], dim: int,
                        seed: int, max_length: int) -> np.ndarray:
    """One L2-normalised CountSketch projection of d(mean answer NLL)/d(params) per sample, float64 (n, dim)."""
    import torch

    from damoc.training.prompt import format_prompt

    total = sum(p.numel() for p in params)
    rng = np.random.default_rng(seed)
    bucket = torch.from_numpy(rng.integers(0, dim, size=total))
    sign = torch.from_numpy(rng.integers(0, 2, size=total).astype(np.float64) * 2 - 1)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    out = np.zeros((len(samples), dim))
    for i, smp in enumerate(samples):
        q = tok(format_prompt(smp.instruction, smp.input), add_special_tokens=False)["input_ids"]
        a = tok(smp.output, add_special_tokens=False)["input_ids"][:max(1, max_length - len(bos) - 1)]
        q = q[max(0, len(q) - (max_length - len(bos) - len(a))):]
        ids = bos + q + a
        start = max(1, len(bos) + len(q))
        if len(ids) - start < 1:
            continue  # no answer token to score: zero gradient, similarity 0
        input_ids = torch.tensor([ids])
        labels = input_ids.clone()
        labels[0, :start] = -100
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=input_ids, labels=labels).loss
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                          for g, p in zip(grads, params)])
        proj = torch.zeros(dim, dtype=torch.float64).index_add_(0, bucket, flat * sign)
        norm = float(proj.norm())
        out[i] = (proj / norm).numpy() if norm > 0 else 0.0
    return out


@register
class LessFilter(SampleFilter):
    name = "less"
    description = ("LESS (simplified): projected last-block gradients of a scorer LM, most similar to the "
                   "target set's (quality-aware)")
    needs_scorer = True
    Settings = LessSettings

    def select(self, n_select: int, *, embeddings: np.ndarray | None, samples: Sequence[Sample], seed: int,
               settings: LessSettings, context: FilterContext | None = None) -> list[int]:
        n = len(samples)
        model, tok = load_scorer(scorer_path(self.name, settings, context))
        params = [p for b in list(_blocks(model))[-settings.layers:] for p in b.parameters()]
        held_out: np.ndarray = np.zeros(0, dtype=np.int64)
        if context is not None and context.target_samples:
            targets = list(context.target_samples)
        else:
            n_target = max(1, round(settings.target_fraction * n))
            held_out = np.sort(np.random.default_rng(seed).permutation(n)[:n_target])
            targets = [samples[i] for i in held_out]
        states = [p.requires_grad for p in model.parameters()]
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            grads = projected_gradients(model, tok, samples, params, settings.projection_dim, seed,
                                        settings.max_length)
            target = projected_gradients(model, tok, targets, params, settings.projection_dim, seed,
                                         settings.max_length).mean(axis=0)
        finally:
            for p, s in zip(model.parameters(), states):
                p.requires_grad_(s)
        scores = grads @ target
        is_held = np.zeros(n, dtype=bool)
        is_held[held_out] = True
        picked = [int(i) for i in np.lexsort((np.arange(n), -scores, is_held))[:n_select]]
        if context is not None:
            context.stats.update({"less_target": "eval samples" if not len(held_out) else
                                  f"{len(held_out)} held-out training rows",
                                  "objective": float(scores[picked].mean()) if picked else None,
                                  "objective_name": "mean gradient similarity of kept rows to the target"})
        return picked
