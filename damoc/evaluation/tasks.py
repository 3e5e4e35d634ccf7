"""The registry of task types: each names the metric candidates are ranked by and how it is computed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from damoc.registry import Registry

ScoreFn = Callable[[Sequence[str], Sequence[str]], dict[str, float]]


@dataclass(frozen=True)
class TaskType:
    name: str
    metric: str
    description: str
    score: ScoreFn
    """(predictions, references) -> mean metric values; key 'score' is the ranking metric."""


TASKS: Registry[TaskType] = Registry("task type")


def register_task(task: TaskType) -> TaskType:
    return TASKS.register(task.name, task)


def _qa_long(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from damoc.evaluation.metrics import bertscore_f1, rouge_l

    n = max(len(predictions), 1)
    rl = sum(rouge_l(predictions, references)) / n
    bs = sum(bertscore_f1(predictions, references)) / n
    return {"score": (bs + rl) / 2, "bertscore_f1": bs, "rouge_l": rl}


def _extractive_qa(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from damoc.evaluation.metrics import squad_f1

    n = max(len(predictions), 1)
    f1 = sum(squad_f1(p, r) for p, r in zip(predictions, references)) / n
    return {"score": f1, "squad_f1": f1}


register_task(TaskType("qa_long", "bertscore_rougel",
                       "long-answer domain Q&A, scored by (BERTScore F1 + ROUGE-L F1) / 2", _qa_long))
register_task(TaskType("extractive_qa", "squad_f1", "reading comprehension, scored by SQuAD token F1",
                       _extractive_qa))
