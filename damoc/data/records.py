"""Normalised samples on disk (JSONL): the format passed between pipeline stages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from damoc import atomic
from damoc.data.schema import Sample


def write_samples(samples: Iterable[Sample], path: str | Path) -> int:
    """Write one JSON object per sample (``Sample.to_dict``: ``options`` only on multiple-choice rows)."""
    lines = [json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples]
    atomic.write_text(path, "".join(lines))  # never a half-written file under the real name
    return len(lines)


def read_samples(path: str | Path) -> list[Sample]:
    """Read samples written by :func:`write_samples` (records without ``options`` get none)."""
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(Sample(**json.loads(line)))
    return out
