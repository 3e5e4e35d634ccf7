"""Per-candidate state carried inside model artifacts: the CandidateResult so far and a model reference."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from damoc import atomic
from damoc.results import CandidateResult

RESULT_FILE = "damoc_result.json"    # the candidate's CandidateResult so far (stages run, failure if any)
MODEL_REF_FILE = "damoc_model_ref.json"  # the step kept the input model as is: points at it instead of a copy


def read_result(model_dir: Path, candidate: str) -> CandidateResult:
    path = Path(model_dir) / RESULT_FILE
    if path.is_file():
        return CandidateResult.model_validate_json(path.read_text())
    return CandidateResult(candidate=candidate)


def write_result(model_dir: Path, result: CandidateResult) -> None:
    atomic.write_text(Path(model_dir) / RESULT_FILE, result.model_dump_json(indent=2))


def read_model_ref(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / MODEL_REF_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_model_ref(model_dir: Path, source: str) -> None:
    atomic.write_text(Path(model_dir) / MODEL_REF_FILE, json.dumps({"source": source}, indent=2))
