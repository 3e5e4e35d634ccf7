"""Quality gate: BERTScore F1 of each compressed sample against its original (instruction+input+output)."""
from __future__ import annotations

from typing import Sequence

from damoc.data.schema import Sample
from damoc.evaluation.metrics import bertscore_f1


def gate_scores(originals: Sequence[Sample], compressed: Sequence[Sample],
                model_path: str | None = None) -> list[float]:
    """BERTScore F1 (compressed as candidate, original as reference) per sample pair."""
    if len(originals) != len(compressed):
        raise ValueError(f"{len(originals)} originals vs {len(compressed)} compressed samples")
    return bertscore_f1([c.text for c in compressed], [o.text for o in originals], model_path=model_path)
