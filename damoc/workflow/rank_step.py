"""Fan-in: rank every candidate's result, write selection.json and report.md (locally or to s3://)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from damoc import storage
from damoc.config import RunConfig
from damoc.selection.ranking import build_selection
from damoc.selection.report import render_report


def _as_dict(item: dict[str, Any] | str) -> dict[str, Any]:
    return json.loads(item) if isinstance(item, str) else item


def _layers(details: dict[str, Any]) -> str | None:
    prune = details.get("prune") or {}
    if prune.get("skipped") or "num_layers_after" not in prune:
        return None
    return f"{prune['num_layers_after']}/{prune['num_layers_before']}"


def rank_step(cfg: RunConfig, results: Sequence[dict[str, Any] | str], stage_stats: dict[str, dict[str, Any]],
              started_at: float, selection_out: Path, report_out: Path, output_uri: str = "") -> dict[str, Any]:
    parsed = [_as_dict(r) for r in results]
    by_name = {r["candidate"]: r for r in parsed}
    # A candidate missing from the fan-in (its task never reported) is a failure, not a silent drop.
    for cand in cfg.candidates:
        by_name.setdefault(cand.name, {"candidate": cand.name, "status": "failed", "error": "no result reported"})
    parsed = [by_name[c.name] for c in cfg.candidates]
    stage_seconds = {name: float(s.get("seconds", 0.0)) for name, s in stage_stats.items()}
    for stage, key in (("prune", "prune_seconds"), ("train", "train_seconds"), ("evaluate", "eval_seconds")):
        stage_seconds[stage] = sum(float(r.get(key) or 0.0) for r in parsed)
    stats: dict[str, Any] = dict(stage_stats)
    stats["candidates"] = {r["candidate"]: r.get("details", {}) for r in parsed}
    selection = build_selection(mode=cfg.mode, metric=cfg.metric, results=parsed, stage_seconds=stage_seconds,
                                total_seconds=time.time() - started_at, stats=stats)
    details = {r["candidate"]: {"layers": _layers(r.get("details", {}))} for r in parsed}
    report = render_report(selection, details)
    selection_text = json.dumps(selection, indent=2, default=str)
    Path(selection_out).parent.mkdir(parents=True, exist_ok=True)
    Path(selection_out).write_text(selection_text)
    Path(report_out).write_text(report)
    if output_uri:
        base = output_uri.rstrip("/")
        storage.write_text(f"{base}/selection.json", selection_text)
        storage.write_text(f"{base}/report.md", report)
    return selection
