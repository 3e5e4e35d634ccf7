"""Degenerate proxies: a candidate whose answers are mostly empty, or mostly one and the same text.

Such a model can still score a good reference log-likelihood (a fine-tuning run that blew up may put its mass on
EOS), so its score is not a measure of the candidate. The evaluation reports why (`degenerate`, a sentence, or
None); the ranking puts such candidates below every healthy one and the selection warns when one is chosen.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

EMPTY_SHARE = 0.5       # half or more of the answers empty
IDENTICAL_SHARE = 0.8   # four in five answers the very same text ...
MIN_ROWS_IDENTICAL = 10  # ... over at least this many rows (a handful of short answers may agree by chance)


def degenerate_reason(predictions: Sequence[str], *, generated: bool = True) -> str | None:
    """Why these answers are degenerate, or None. `generated`: free text (a choice task's picks may agree)."""
    n = len(predictions)
    if not n:
        return None
    texts = [p.strip() for p in predictions]
    empty = sum(1 for t in texts if not t)
    if empty / n >= EMPTY_SHARE:
        return f"{empty} of {n} answers are empty"
    if generated and n >= MIN_ROWS_IDENTICAL:
        text, count = Counter(texts).most_common(1)[0]
        if count / n >= IDENTICAL_SHARE:
            shown = text if len(text) <= 40 else text[:37] + "..."
            return f"{count} of {n} answers are the same text ({shown!r})"
    return None


def degenerate_stats(predictions: Sequence[str], *, generated: bool = True) -> dict[str, Any]:
    """The evaluation's figures: `identical_predictions` (the most common answer's count) and `degenerate`."""
    texts = [p.strip() for p in predictions]
    most = Counter(texts).most_common(1)[0][1] if texts else 0
    return {"identical_predictions": most, "degenerate": degenerate_reason(predictions, generated=generated)}
