"""Question-answering metrics as the paper reports them: SQuAD exact match and token F1, ROUGE-L F1.

SQuAD: the official v1.1 evaluation script (``evaluate-v1.1.py``), reproduced exactly:

- normalisation, in this order: lower-case; delete every character of ``string.punctuation`` (ASCII only:
  curly quotes or en dashes stay); replace the whole words "a", "an", "the" by a space; collapse whitespace;
- EM: normalised prediction == normalised reference;
- F1: bag-of-tokens overlap of the normalised strings (whitespace tokens); 0 when nothing overlaps, which in v1.1
  includes an empty prediction and an empty reference (both empty: F1 0 but EM 1 — the v2.0 script changed F1
  to 1 there, for unanswerable questions; v1.1 has none);
- several reference answers (SQuAD dev has ~3 per question): the MAX over the references, per question.

Scores are fractions in [0, 1] (the official script prints 100x the mean).

ROUGE-L: the ``rouge-score`` package's sentence-level ROUGE-L (LCS) F-measure with the Porter stemmer (the
package's default tokeniser: lower-case, non-alphanumerics dropped), max over the references. It is a metric
of its own here, separate from the (BERTScore + ROUGE)/2 mix the paper uses for PubMedQA and BillSum.
"""
from __future__ import annotations

import collections
import re
import string
from functools import lru_cache
from typing import Sequence, Union

References = Union[str, Sequence[str]]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower, remove punctuation, remove articles, fix whitespace (in that order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _refs(refs: References) -> list[str]:
    if isinstance(refs, str):
        return [refs]
    out = list(refs)
    if not out:
        raise ValueError("at least one reference answer is required")
    if not all(isinstance(r, str) for r in out):
        raise TypeError("reference answers must be strings")
    return out


def _em_single(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1_single(prediction: str, reference: str) -> float:
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_em(pred: str, refs: References) -> float:
    """Exact match (0.0 or 1.0) of ``pred`` against the best of ``refs`` (one string or several), v1.1 rules."""
    return max(_em_single(pred, r) for r in _refs(refs))


def squad_f1(pred: str, refs: References) -> float:
    """Token F1 of ``pred`` against the best-matching reference in ``refs``, SQuAD v1.1 rules."""
    return max(_f1_single(pred, r) for r in _refs(refs))


def squad_scores(predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
    """Corpus EM and F1: the means over questions of :func:`squad_em` / :func:`squad_f1` (fractions)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0, "count": 0}
    n = len(predictions)
    return {"exact_match": sum(squad_em(p, r) for p, r in zip(predictions, references)) / n,
            "f1": sum(squad_f1(p, r) for p, r in zip(predictions, references)) / n,
            "count": n}


@lru_cache(maxsize=1)
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(pred: str, refs: References) -> float:
    """ROUGE-L F-measure (rouge-score, Porter stemmer) of ``pred`` against the best of ``refs``.

    0.0 when either side has no tokens after rouge-score's tokenisation.
    """
    scorer = _rouge_l_scorer()
    return max(scorer.score(r, pred)["rougeL"].fmeasure for r in _refs(refs))


def mean_rouge_l_f1(predictions: Sequence[str], references: Sequence[References]) -> float:
    """Mean over examples of :func:`rouge_l_f1` (0.0 for no examples)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return 0.0
    return sum(rouge_l_f1(p, r) for p, r in zip(predictions, references)) / len(predictions)
