"""Fan-in: rank every candidate's result, write selection.json, report.md and report.html (locally or to s3://).

Results come as CandidateResult objects, their JSON text, or paths of their JSON files (the pipeline's
per-candidate result artifacts). Files are read one at a time and trimmed to what ranking needs before the
next is read (`slim_result`): the per-row values of the ranking signal (the bootstrap pairs them) and short
examples; so the rank task's memory grows with candidates x rows of one float each, not with the answers.
The KFP rank task and the in-process runner both call `rank_step`: they write the same three files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

from damoc import atomic, storage
from damoc.config import RunConfig
from damoc.results import CandidateResult, StageResult
from damoc.selection.html_report import render_html
from damoc.selection.ranking import RANK_KEYS, ROW_KEYS, build_selection
from damoc.selection.report import render_report

CANDIDATE_STAGES = ("prune", "train", "evaluate")
EXAMPLE_CHARS = 2000  # longer texts in an example (input, reference, prediction) are cut here
ResultItem = CandidateResult | str | Path


def _truncate(value: object) -> object:
    if isinstance(value, str) and len(value) > EXAMPLE_CHARS:
        return value[:EXAMPLE_CHARS] + f"… [{len(value) - EXAMPLE_CHARS} more characters]"
    if isinstance(value, list):
        return [_truncate(v) for v in value]
    return value


def slim_result(result: CandidateResult, rank_by: str) -> CandidateResult:
    """Keep what the ranking and the reports use: the ranking signal's per-row values, examples cut short."""
    ev = result.stages.get("evaluate")
    if ev is not None:
        keep = RANK_KEYS[rank_by]
        for key in ROW_KEYS:
            if key != keep:
                ev.stats.pop(key, None)
        if isinstance(ev.stats.get("examples"), list):
            ev.stats["examples"] = [{k: _truncate(v) for k, v in ex.items()} if isinstance(ex, dict) else ex
                                    for ex in ev.stats["examples"]]
    return result


def load_result(item: ResultItem) -> CandidateResult:
    if isinstance(item, CandidateResult):
        return item
    if isinstance(item, Path):
        try:
            return CandidateResult.model_validate_json(item.read_bytes())
        except (OSError, ValueError) as err:
            raise ValueError(f"candidate result {item}: {err}") from err
    return CandidateResult.model_validate_json(item)


def load_results(items: Iterable[ResultItem], rank_by: str) -> list[CandidateResult]:
    return [slim_result(load_result(item), rank_by) for item in items]


def candidate_details(results: Sequence[CandidateResult]) -> dict[str, dict[str, object]]:
    """{"layers", "flags"} per candidate, for report.md and report.html."""
    return {r.candidate: {"layers": r.layers(), "flags": list(r.flags)} for r in results}


def rank_step(cfg: RunConfig, results: Iterable[ResultItem], stage_results: Sequence[StageResult],
              started_at: float, selection_out: Path, report_out: Path, output_uri: str = "",
              html_out: Path | None = None) -> dict:
    """Rank, then write selection.json, report.md and report.html (html_out, default beside report_out)."""
    by_name = {r.candidate: r for r in load_results(results, cfg.rank_by)}
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
    from damoc.estimate import selection_projection

    selection["projected_cost"] = selection_projection(cfg, parsed, stage_results)  # beside the measured FLOPs
    if cfg.evaluation.sequential:  # rows the decision needed (damoc.selection.sequential)
        from damoc.selection.sequential import for_results

        selection["sequential_eval"] = for_results(parsed, cfg.rank_by, block=cfg.evaluation.sequential_block,
                                                   confidence=cfg.evaluation.tie_confidence,
                                                   samples=cfg.evaluation.bootstrap_samples)
    details = candidate_details(parsed)
    report = render_report(selection, details)
    page = render_html(selection, details)
    selection_text = json.dumps(selection, indent=2, default=str)
    html_out = html_out or Path(report_out).with_name("report.html")
    atomic.write_text(selection_out, selection_text)
    atomic.write_text(report_out, report)
    atomic.write_text(html_out, page)
    if output_uri:
        base = output_uri.rstrip("/")
        storage.write_text(f"{base}/selection.json", selection_text)
        storage.write_text(f"{base}/report.md", report)
        storage.write_text(f"{base}/report.html", page)
    return selection
