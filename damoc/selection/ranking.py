"""Rank candidates by their evaluation score; failed candidates are listed, never ranked."""
from __future__ import annotations

from typing import Any, Sequence

OK, FAILED = "ok", "failed"


def rank_results(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each result has at least candidate, status and (when ok) score. Higher score ranks first;
    equal scores share order by candidate name so the ranking is deterministic."""
    ok = sorted((r for r in results if r.get("status") == OK and r.get("score") is not None),
                key=lambda r: (-float(r["score"]), r["candidate"]))
    failed = sorted((r for r in results if r not in ok), key=lambda r: r["candidate"])
    ranking = [{"candidate": r["candidate"], "score": float(r["score"]), "rank": i, "status": OK}
               for i, r in enumerate(ok, start=1)]
    ranking += [{"candidate": r["candidate"], "score": None, "rank": None, "status": FAILED,
                 "error": r.get("error", "no score reported")} for r in failed]
    return ranking


def build_selection(*, mode: str, metric: str, results: Sequence[dict[str, Any]],
                    stage_seconds: dict[str, float], total_seconds: float,
                    stats: dict[str, Any]) -> dict[str, Any]:
    """The selection.json document (contract: see README, 'Outputs')."""
    ranking = rank_results(results)
    selected = ranking[0]["candidate"] if ranking and ranking[0]["status"] == OK else None
    train_seconds = {r["candidate"]: float(r.get("train_seconds") or 0.0) for r in results}
    return {
        "mode": mode,
        "metric": metric,
        "selected": selected,
        "ranking": ranking,
        "cost": {"stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
                 "train_seconds": {k: round(v, 3) for k, v in train_seconds.items()},
                 "total_seconds": round(total_seconds, 3)},
        "stats": stats,
    }
