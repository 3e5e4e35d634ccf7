"""Task metrics: SQuAD token F1 (official normalisation), ROUGE-1/2/L F1, BERTScore F1 (all-MiniLM-L6-v2)."""
from __future__ import annotations

import collections
import re
import string
from functools import lru_cache
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 official normalisation: lower, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per pair (rouge-score, Porter stemmer)."""
    scorer = _rouge()
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


@lru_cache(maxsize=1)
def _rouge_all():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_n_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 per pair (rouge-score, Porter stemmer), keys rouge1/rouge2/rouge_l."""
    scorer = _rouge_all()
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rouge_l": []}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        out["rouge1"].append(scores["rouge1"].fmeasure)
        out["rouge2"].append(scores["rouge2"].fmeasure)
        out["rouge_l"].append(scores["rougeL"].fmeasure)
    return out


@lru_cache(maxsize=2)
def _bert_scorer(model_path: str):
    import bert_score

    return bert_score.BERTScorer(model_type=model_path, num_layers=6, lang="en", device="cpu")


def bertscore_f1(candidates: Sequence[str], references: Sequence[str], model_path: str | None = None,
                 batch_size: int = 64) -> list[float]:
    """BERTScore F1 per pair (no baseline rescaling), with all-MiniLM-L6-v2 layer 6 by default."""
    if not candidates:
        return []
    from damoc.hf import default_embedding_model

    scorer = _bert_scorer(model_path or default_embedding_model())
    # BERTScore of an empty candidate is undefined; score it as 0.
    idx = [i for i, c in enumerate(candidates) if c.strip()]
    scores = [0.0] * len(candidates)
    if idx:
        _, _, f1 = scorer.score([candidates[i] for i in idx], [references[i] for i in idx],
                                batch_size=batch_size)
        for i, value in zip(idx, f1.tolist()):
            scores[i] = float(value)
    return scores


def task_scores(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean metric values for a registered task type; key 'score' is the one candidates are ranked by."""
    from damoc.evaluation.tasks import TASKS

    return TASKS.get(task).score(predictions, references)


def task_row_scores(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-row metric values for a registered task type (same order; key 'score': the ranking metric)."""
    from damoc.evaluation.tasks import TASKS

    return TASKS.get(task).row_scores(predictions, references)
