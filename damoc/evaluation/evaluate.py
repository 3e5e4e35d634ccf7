"""Evaluate a checkpoint on a task: predict (generate, or pick an option), score per row, keep a few examples.

Besides the task's metric, every evaluation reports the log-likelihood of the reference answers in the
training encoding (:func:`damoc.evaluation.loglik.reference_logliks`), a low-noise ranking signal, and the
per-row values of both (``row_scores``, ``row_loglik``) for paired comparisons between candidates.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from damoc.data.schema import Sample
from damoc.evaluation.degenerate import degenerate_stats
from damoc.evaluation.generate import generate_with
from damoc.evaluation.loglik import choice_predictions, reference_logliks
from damoc.hf import load_causal_lm, load_tokenizer


def _check_choice_rows(samples: Sequence[Sample], task: str) -> None:
    for sample in samples:
        if len(sample.options) < 2:
            raise ValueError(
                f"task {task!r} scores multiple-choice rows, but eval sample {sample.id!r} (the eval file's row "
                f"with that id) has {len(sample.options)} options: data.fields.options must name the column "
                "holding each row's options (a list, or a JSON list string, with the row's output among them)")
        if sample.output.strip() not in sample.options:
            raise ValueError(f"eval sample {sample.id!r}: its output {sample.output.strip()!r} is not one of its "
                             f"options {list(sample.options)!r}")


def _token_counts(tok, samples: Sequence[Sample], max_length: int, chat_template: bool) -> dict[str, int]:
    """Prompt and answer tokens of the rows as scored (for the FLOPs accounting, damoc.cost.eval_flops)."""
    from damoc.training.finetune import IGNORE_INDEX, encode_example

    prompt = answer = 0
    for s in samples:
        ex = encode_example(tok, s, max_length, chat_template)
        n_answer = sum(1 for x in ex["labels"] if x != IGNORE_INDEX)
        prompt, answer = prompt + len(ex["input_ids"]) - n_answer, answer + n_answer
    return {"prompt_tokens": prompt, "answer_tokens": answer,
            "choice_options": round(sum(len(s.options) for s in samples) / len(samples)) if samples else 0}


def evaluate_model(model_path: str | Path, samples: Sequence[Sample], task: str, *, max_new_tokens: int = 64,
                   batch_size: int = 16, trust_remote_code: bool = False, progress: bool = False,
                   n_examples: int = 3, max_length: int = 256, predict: bool = True,
                   chat_template: bool = True) -> dict[str, Any]:
    """Score the checkpoint at ``model_path`` on ``samples`` for the registered task type ``task``.

    Returns the task's mean metrics (key ``score``: the ranking metric) and ``samples``, ``eval_seconds``,
    ``examples`` (first ``n_examples`` rows: input, reference, prediction[, options]), ``row_scores`` (the
    ranking metric per row, in sample order; their mean is ``score``), ``row_loglik`` (per row, the mean
    log-likelihood per token of the reference answer + EOS given the prompt, encoded as fine-tuning encodes
    it with ``max_length`` tokens) and ``loglik`` (their mean). Choice tasks generate nothing: each row's
    prediction is its option with the highest per-token log-likelihood. ``predict=False`` skips predicting
    altogether (one forward pass per row): only ``loglik``/``row_loglik`` are reported, ``score`` is None.
    """
    from damoc.evaluation.tasks import TASKS

    task_type = TASKS.get(task)
    started = time.perf_counter()
    if task_type.kind == "choice":
        _check_choice_rows(samples, task)
    tok = load_tokenizer(model_path, trust_remote_code)
    model = load_causal_lm(model_path, trust_remote_code).eval()
    if not predict:
        row_loglik = reference_logliks(model, tok, samples, max_length, batch_size, chat_template)
        n = len(samples)
        return {"score": None, "samples": n, "eval_seconds": round(time.perf_counter() - started, 3),
                "examples": [], "loglik": sum(row_loglik) / n if n else None, "row_loglik": row_loglik,
                **_token_counts(tok, samples, max_length, chat_template)}
    if task_type.kind == "choice":
        picks = choice_predictions(model, tok, samples, max_length, batch_size, chat_template=chat_template)
        predictions = [s.options[i] for s, i in zip(samples, picks)]
    else:
        predictions = generate_with(model, tok, samples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    max_prompt_tokens=max_length, chat_template=chat_template, progress=progress)
    row_loglik = reference_logliks(model, tok, samples, max_length, batch_size, chat_template)
    references = [s.output for s in samples]
    rows = task_type.row_scores(predictions, references)
    n = len(samples)
    scores = {key: (sum(values) / n if n else 0.0) for key, values in rows.items()}
    examples = []
    for s, p in zip(samples[:n_examples], predictions[:n_examples]):
        example: dict[str, Any] = {"input": s.input[:200], "reference": s.output[:200], "prediction": p[:200]}
        if s.options:
            example["options"] = [o[:100] for o in s.options]
        examples.append(example)
    return {
        **scores,
        "samples": n,
        "eval_seconds": round(time.perf_counter() - started, 3),
        "examples": examples,
        "row_scores": [float(v) for v in rows["score"]],
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        **degenerate_stats(predictions, generated=task_type.kind != "choice"),  # mostly empty/identical answers
        "loglik": sum(row_loglik) / n if n else None,
        "row_loglik": row_loglik,
        **_token_counts(tok, samples, max_length, chat_template),
    }
