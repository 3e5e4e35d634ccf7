"""Evaluate a checkpoint on a task: generate, score, keep a few examples for the report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from damoc.data.schema import Sample
from damoc.evaluation.generate import generate_answers
from damoc.evaluation.metrics import task_scores


def evaluate_model(model_path: str | Path, samples: Sequence[Sample], task: str, *, max_new_tokens: int = 64,
                   batch_size: int = 16, trust_remote_code: bool = False, progress: bool = False,
                   n_examples: int = 3) -> dict[str, Any]:
    started = time.perf_counter()
    predictions = generate_answers(model_path, samples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   trust_remote_code=trust_remote_code, progress=progress)
    references = [s.output for s in samples]
    scores = task_scores(task, predictions, references)
    return {
        **scores,
        "samples": len(samples),
        "eval_seconds": round(time.perf_counter() - started, 3),
        "examples": [{"input": s.input[:200], "reference": s.output[:200], "prediction": p[:200]}
                     for s, p in zip(samples[:n_examples], predictions[:n_examples])],
    }
