"""Rank candidates by their evaluation score; failed candidates are listed, never ranked."""
from __future__ import annotations

import math
from typing import Any, Sequence

from damoc.results import CandidateResult, StageResult
from damoc.selection.uncertainty import paired_bootstrap

OK, FAILED = "ok", "failed"
ROW_KEYS = ("row_scores", "row_loglik")  # per-row values: used for the bootstrap, too long for the report
RANK_KEYS = {"metric": "row_scores", "loglik": "row_loglik"}


def _evaluate_stats(result: CandidateResult) -> dict[str, Any]:
    stage = result.stages.get("evaluate")
    return stage.stats if stage is not None else {}


def _diverged(result: CandidateResult) -> bool:
    train = result.stages.get("train")
    return train is not None and train.stats.get("loss_is_finite") is False


def rank_results(results: Sequence[CandidateResult]) -> list[dict[str, Any]]:
    """Higher score ranks first; equal scores share order by candidate name so the ranking is deterministic.
    A candidate whose training diverged is ranked below every healthy one (flagged), never selected silently."""
    ok = sorted((r for r in results if r.status == OK and r.score is not None and math.isfinite(float(r.score))),
                key=lambda r: (_diverged(r), -float(r.score), r.candidate))
    ok_names = {r.candidate for r in ok}
    failed = sorted((r for r in results if r.candidate not in ok_names), key=lambda r: r.candidate)
    ranking = []
    for i, r in enumerate(ok, start=1):
        ev = _evaluate_stats(r)
        entry: dict[str, Any] = {"candidate": r.candidate, "score": float(r.score), "rank": i, "status": OK}
        if ev.get("score") is not None:
            entry["metric_score"] = float(ev["score"])
        if ev.get("loglik") is not None:
            entry["loglik"] = float(ev["loglik"])
        if r.flags:
            entry["flags"] = list(r.flags)
        ranking.append(entry)
    ranking += [{"candidate": r.candidate, "score": None, "rank": None, "status": FAILED,
                 "error": r.error or "no score reported"} for r in failed]
    return ranking


def selection_uncertainty(results: Sequence[CandidateResult], ranking: list[dict[str, Any]], *, rank_by: str,
                          confidence: float, samples: int) -> dict[str, Any] | None:
    """Paired bootstrap of the ranked candidates' per-row values; None without a winner or per-row values."""
    if not ranking or ranking[0]["status"] != OK:
        return None
    key = RANK_KEYS[rank_by]
    rows = {r.candidate: _evaluate_stats(r).get(key) for r in results if r.status == OK}
    rows = {name: values for name, values in rows.items() if values}
    winner = ranking[0]["candidate"]
    if winner not in rows:
        return None
    return paired_bootstrap(rows, winner, confidence=confidence, samples=samples)


def _without_rows(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in ROW_KEYS}


MIN_TRAIN_ROWS, MIN_EVAL_ROWS = 50, 30


def data_warnings(stage_results: Sequence[StageResult]) -> list[str]:
    """Too little data for a ranking to mean much: said in the selection and the report."""
    prepare = next((s for s in stage_results if s.stage == "prepare"), None)
    if prepare is None:
        return []
    out = []
    train, evals = prepare.stats.get("train_samples"), prepare.stats.get("eval_samples")
    if train is not None and train < MIN_TRAIN_ROWS:
        out.append(f"only {train} training rows: proxies barely learn the task, the ranking is mostly noise")
    if evals is not None and evals < MIN_EVAL_ROWS:
        out.append(f"only {evals} evaluation rows: differences between candidates are within sampling noise "
                   "(see tied_with_winner)")
    return out


def build_selection(*, mode: str, metric: str, results: Sequence[CandidateResult],
                    stage_results: Sequence[StageResult], stage_seconds: dict[str, float],
                    total_seconds: float, rank_by: str = "metric", tie_confidence: float = 0.9,
                    bootstrap_samples: int = 1000) -> dict[str, Any]:
    """The selection.json document (contract: see README, 'Outputs')."""
    ranking = rank_results(results)
    selected = ranking[0]["candidate"] if ranking and ranking[0]["status"] == OK else None
    uncertainty = selection_uncertainty(results, ranking, rank_by=rank_by, confidence=tie_confidence,
                                        samples=bootstrap_samples)
    if uncertainty is not None:
        tied = set(uncertainty["tied_with_winner"])
        for entry in ranking:
            if entry["candidate"] in tied:
                entry["tied_with_winner"] = True
    stats: dict[str, Any] = {s.stage: s.model_dump(mode="json", exclude_none=True) for s in stage_results}
    stats["candidates"] = {
        r.candidate: {name: {**s.model_dump(mode="json", exclude={"traceback", "stats"}, exclude_none=True),
                             "stats": _without_rows(s.stats)} for name, s in r.stages.items()}
        for r in results}
    return {
        "mode": mode,
        "metric": metric,
        "rank_by": rank_by,
        "warnings": data_warnings(stage_results),
        "selected": selected,
        "tied_with_winner": uncertainty["tied_with_winner"] if uncertainty else [],
        "uncertainty": uncertainty,
        "ranking": ranking,
        "cost": {"stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
                 "train_seconds": {r.candidate: round(r.seconds("train"), 3) for r in results},
                 "total_seconds": round(total_seconds, 3)},
        "stats": stats,
    }
