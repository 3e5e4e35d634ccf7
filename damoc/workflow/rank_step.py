"""Fan-in: rank every candidate's result, write selection.json and report.md (locally or to s3://)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from damoc import atomic, storage
from damoc.config import RunConfig
from damoc.results import CandidateResult, StageResult
from damoc.selection.ranking import build_selection
from damoc.selection.report import render_report

CANDIDATE_STAGES = ("prune", "train", "evaluate")


def _parse(item: CandidateResult | str) -> CandidateResult:
    return item if isinstance(item, CandidateResult) else CandidateResult.model_validate_json(item)


def rank_step(cfg: RunConfig, results: Sequence[CandidateResult | str], stage_results: Sequence[StageResult],
              started_at: float, selection_out: Path, report_out: Path, output_uri: str = "") -> dict:
    by_name = {r.candidate: r for r in map(_parse, results)}
    # A candidate missing from the fan-in (its task never reported) is a failure, not a silent drop.
    for cand in cfg.candidates:
        by_name.setdefault(cand.name, CandidateResult(candidate=cand.name, status="failed",
                                                      error="no result reported"))
    parsed = [by_name[c.name] for c in cfg.candidates]
    stage_seconds = {s.stage: s.seconds for s in stage_results}
    for stage in CANDIDATE_STAGES:  # summed over candidates (they may run in parallel)
        stage_seconds[stage] = sum(r.seconds(stage) for r in parsed)
    selection = build_selection(mode=cfg.mode, metric=cfg.metric, results=parsed, stage_results=stage_results,
                                stage_seconds=stage_seconds, total_seconds=time.time() - started_at,
                                rank_by=cfg.rank_by, tie_confidence=cfg.evaluation.tie_confidence,
                                bootstrap_samples=cfg.evaluation.bootstrap_samples,
                                summed_stages=CANDIDATE_STAGES,
                                variants={c.name: (c.model_name, c.training_method) for c in cfg.candidates})
    report = render_report(selection, {r.candidate: {"layers": r.layers(), "flags": r.flags} for r in parsed})
    selection_text = json.dumps(selection, indent=2, default=str)
    atomic.write_text(selection_out, selection_text)
    atomic.write_text(report_out, report)
    if output_uri:
        base = output_uri.rstrip("/")
        storage.write_text(f"{base}/selection.json", selection_text)
        storage.write_text(f"{base}/report.md", report)
    return selection
