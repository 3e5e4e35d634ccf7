"""Normalised samples on disk (JSONL): the format passed between pipeline stages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from damoc.data.schema import Sample


def write_samples(samples: Iterable[Sample], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    count = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)  # never leave a half-written file under the real name
    return count


def read_samples(path: str | Path) -> list[Sample]:
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(Sample(**json.loads(line)))
    return out
