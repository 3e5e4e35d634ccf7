"""Per-candidate outcomes carried inside model artifacts: stats so far, a failure marker, a model reference."""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

STATS_FILE = "damoc_stats.json"      # stats of every step so far for this candidate
FAILURE_FILE = "damoc_failure.json"  # present when an earlier step failed: later steps pass it on
MODEL_REF_FILE = "damoc_model_ref.json"  # the step kept the input model as is: points at it instead of a copy


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))


def read_stats(model_dir: Path) -> dict[str, Any]:
    return _read_json(Path(model_dir) / STATS_FILE) or {}


def write_stats(model_dir: Path, stats: dict[str, Any]) -> None:
    _write_json(Path(model_dir) / STATS_FILE, stats)


def read_failure(model_dir: Path) -> dict[str, Any] | None:
    return _read_json(Path(model_dir) / FAILURE_FILE)


def write_failure(model_dir: Path, stage: str, error: BaseException | str) -> dict[str, Any]:
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        detail = "".join(traceback.format_exception(error))[-4000:]
    else:
        message, detail = error, ""
    doc = {"stage": stage, "error": message, "traceback": detail}
    _write_json(Path(model_dir) / FAILURE_FILE, doc)
    return doc


def read_model_ref(model_dir: Path) -> dict[str, Any] | None:
    return _read_json(Path(model_dir) / MODEL_REF_FILE)


def write_model_ref(model_dir: Path, source: str) -> None:
    _write_json(Path(model_dir) / MODEL_REF_FILE, {"source": source})
