"""A TrainerCallback that records a learning curve: at chosen optimizer steps, the mean per-token
log-likelihood of the eval references (``damoc.evaluation.loglik.reference_logliks``, the same encoding and
quantity evaluation reports as ``loglik``) under the model being trained.

No generation; ``torch.no_grad`` (``span_logprobs`` runs under inference mode) with the model in eval mode
(dropout off), then back to train mode. At the last step the model is the one ``finetune`` saves, so the last
point equals the evaluation's ``loglik`` of the saved checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from transformers import TrainerCallback

from damoc.data.schema import Sample


@dataclass(frozen=True)
class CurvePoint:
    step: int
    tokens_seen: int    # training tokens consumed so far (an epoch's tokens x epochs done; exact at epoch ends)
    loglik: float       # mean over eval rows of the reference's mean per-token log-likelihood
    seconds: float      # time this evaluation took
    scored_tokens: int  # answer tokens (+ EOS) scored by this evaluation


def even_steps(total: int, k: int) -> list[int]:
    """k optimizer steps evenly spread over a `total`-step run, the last one at `total` (fewer if total < k)."""
    if total < 1 or k < 1:
        raise ValueError(f"curve points: need total steps >= 1 and k >= 1, got total={total}, k={k}")
    return sorted({max(1, round(i * total / k)) for i in range(1, k + 1)})


class LoglikCurveCallback(TrainerCallback):
    """Records :class:`CurvePoint` s in ``self.points``.

    steps: the optimizer steps to evaluate at; or k: that many steps evenly spread over the run (resolved at
    train begin, from the Trainer's max_steps). train_tokens: tokens in one epoch of the training set (for
    ``tokens_seen``). The other arguments are those of ``reference_logliks``.
    """

    def __init__(self, tokenizer, samples: Sequence[Sample], *, steps: Sequence[int] | None = None,
                 k: int | None = None, max_length: int = 256, batch_size: int = 16, chat_template: bool = True,
                 train_tokens: int = 0):
        if (steps is None) == (k is None):
            raise ValueError("LoglikCurveCallback: give exactly one of steps= or k=")
        if not samples:
            raise ValueError("LoglikCurveCallback: no eval samples")
        self.tok = tokenizer
        self.samples = list(samples)
        self.k = k
        self.steps: set[int] = set(steps or [])
        self.max_length, self.batch_size, self.chat_template = max_length, batch_size, chat_template
        self.train_tokens = train_tokens
        self.total_steps = 0
        self.points: list[CurvePoint] = []
        self._scored = self._count_scored()

    def _count_scored(self) -> int:
        from damoc.training.finetune import IGNORE_INDEX, encode_example

        return sum(sum(1 for x in encode_example(self.tok, s, self.max_length, self.chat_template)["labels"]
                       if x != IGNORE_INDEX) for s in self.samples)

    def on_train_begin(self, args, state, control, **kwargs):
        self.total_steps = int(state.max_steps)
        if self.k is not None:
            self.steps = set(even_steps(self.total_steps, self.k))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = int(state.global_step)
        if step not in self.steps or any(p.step == step for p in self.points):
            return
        self.points.append(self.measure(model, step, state))

    def measure(self, model, step: int, state) -> CurvePoint:
        import torch

        from damoc.evaluation.loglik import reference_logliks

        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                rows = reference_logliks(model, self.tok, self.samples, self.max_length, self.batch_size,
                                         self.chat_template)
        finally:
            model.train(was_training)
        epochs_done = step / max(1, state.max_steps) * float(state.num_train_epochs or 1)
        return CurvePoint(step=step, tokens_seen=round(self.train_tokens * epochs_done),
                          loglik=sum(rows) / len(rows), seconds=time.perf_counter() - started,
                          scored_tokens=self._scored)

    def records(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.points]
