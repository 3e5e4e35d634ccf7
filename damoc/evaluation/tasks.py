"""The registry of task types: each names the metric candidates are ranked by and how it is computed.

A task type scores rows one by one (:attr:`TaskType.rows`: per-row values of each reported metric, key
``score`` the ranking metric); :meth:`TaskType.score` is their mean. ``kind`` says how predictions are made:
``generate`` (greedy generation) or ``choice`` (no generation: the option with the highest per-token
log-likelihood given the prompt is the prediction, see :mod:`damoc.evaluation.loglik`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from damoc.registry import Registry

RowsFn = Callable[[Sequence[str], Sequence[str]], dict[str, list[float]]]
TaskKind = Literal["generate", "choice"]


@dataclass(frozen=True)
class TaskType:
    name: str
    metric: str
    description: str
    rows: RowsFn
    """(predictions, references) -> per-row metric values, same order; key 'score' is the ranking metric."""
    kind: TaskKind = "generate"
    """generate: predictions are greedy generations; choice: the best option of each row by log-likelihood."""

    def row_scores(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        """Per-row values of every reported metric (key 'score': the ranking metric)."""
        if len(predictions) != len(references):
            raise ValueError(f"{self.name}: {len(predictions)} predictions for {len(references)} references")
        return self.rows(predictions, references)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """Mean metric values over the rows (0.0 for no rows); key 'score' is the ranking metric."""
        rows = self.row_scores(predictions, references)
        return {key: (sum(values) / len(values) if values else 0.0) for key, values in rows.items()}


TASKS: Registry[TaskType] = Registry("task type")


def register_task(task: TaskType) -> TaskType:
    return TASKS.register(task.name, task)


def _qa_long(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    from damoc.evaluation.metrics import bertscore_f1, rouge_l

    rl = rouge_l(predictions, references)
    bs = bertscore_f1(predictions, references)
    return {"score": [(b + r) / 2 for b, r in zip(bs, rl)], "bertscore_f1": bs, "rouge_l": rl}


def _extractive_qa(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    from damoc.evaluation.metrics import squad_f1

    f1 = [squad_f1(p, r) for p, r in zip(predictions, references)]
    return {"score": f1, "squad_f1": f1}


def _summarisation(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    from damoc.evaluation.metrics import rouge_n_l

    scores = rouge_n_l(predictions, references)
    return {"score": scores["rouge_l"], **scores}


def _multiple_choice(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    # predictions are the chosen options' texts
    correct = [float(p.strip() == r.strip()) for p, r in zip(predictions, references)]
    return {"score": correct, "accuracy": correct}


register_task(TaskType("qa_long", "bertscore_rougel",
                       "long-answer domain Q&A, scored by (BERTScore F1 + ROUGE-L F1) / 2", _qa_long))
register_task(TaskType("extractive_qa", "squad_f1", "reading comprehension, scored by SQuAD token F1",
                       _extractive_qa))
register_task(TaskType("summarisation", "rouge_l",
                       "summarisation, scored by ROUGE-L F1 (ROUGE-1 and ROUGE-2 F1 reported too)", _summarisation))
register_task(TaskType("multiple_choice", "accuracy",
                       "multiple-choice questions (data.fields.options names the options column), scored by "
                       "accuracy; the prediction is the option with the highest per-token log-likelihood "
                       "given the prompt (cloze style, no generation)", _multiple_choice, kind="choice"))
