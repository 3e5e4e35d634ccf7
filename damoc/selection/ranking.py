"""Rank candidates by their evaluation score; failed candidates are listed, never ranked."""
from __future__ import annotations

from typing import Any, Sequence

from damoc.results import CandidateResult, StageResult

OK, FAILED = "ok", "failed"


def rank_results(results: Sequence[CandidateResult]) -> list[dict[str, Any]]:
    """Higher score ranks first; equal scores share order by candidate name so the ranking is deterministic."""
    ok = sorted((r for r in results if r.status == OK and r.score is not None),
                key=lambda r: (-float(r.score), r.candidate))
    ok_names = {r.candidate for r in ok}
    failed = sorted((r for r in results if r.candidate not in ok_names), key=lambda r: r.candidate)
    ranking = [{"candidate": r.candidate, "score": float(r.score), "rank": i, "status": OK}
               for i, r in enumerate(ok, start=1)]
    ranking += [{"candidate": r.candidate, "score": None, "rank": None, "status": FAILED,
                 "error": r.error or "no score reported"} for r in failed]
    return ranking


def build_selection(*, mode: str, metric: str, results: Sequence[CandidateResult],
                    stage_results: Sequence[StageResult], stage_seconds: dict[str, float],
                    total_seconds: float) -> dict[str, Any]:
    """The selection.json document (contract: see README, 'Outputs')."""
    ranking = rank_results(results)
    selected = ranking[0]["candidate"] if ranking and ranking[0]["status"] == OK else None
    stats: dict[str, Any] = {s.stage: s.model_dump(mode="json", exclude_none=True) for s in stage_results}
    stats["candidates"] = {r.candidate: {name: s.model_dump(mode="json", exclude={"traceback"}, exclude_none=True)
                                         for name, s in r.stages.items()} for r in results}
    return {
        "mode": mode,
        "metric": metric,
        "selected": selected,
        "ranking": ranking,
        "cost": {"stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
                 "train_seconds": {r.candidate: round(r.seconds("train"), 3) for r in results},
                 "total_seconds": round(total_seconds, 3)},
        "stats": stats,
    }
