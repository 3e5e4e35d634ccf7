"""Rank candidates by their evaluation score; failed candidates are listed, never ranked."""
from __future__ import annotations

import math
from typing import Any, Sequence

from damoc.results import CandidateResult, StageResult
from damoc.selection.uncertainty import bootstrap_p_best, paired_bootstrap

OK, FAILED = "ok", "failed"
ROW_KEYS = ("row_scores", "row_loglik")  # per-row values: used for the bootstrap, too long for the report
RANK_KEYS = {"metric": "row_scores", "loglik": "row_loglik"}


def _evaluate_stats(result: CandidateResult) -> dict[str, Any]:
    stage = result.stages.get("evaluate")
    return stage.stats if stage is not None else {}


def rank_results(results: Sequence[CandidateResult]) -> list[dict[str, Any]]:
    """Higher score ranks first; equal scores share order by candidate name so the ranking is deterministic.
    Below every healthy candidate: those with degenerate answers (mostly empty or identical; selectable only
    with a warning, see `selectable`), then those whose training diverged (never selected); both flagged."""
    ok = sorted((r for r in results if r.status == OK and r.score is not None and math.isfinite(float(r.score))),
                key=lambda r: (r.diverged(), r.degenerate() is not None, -float(r.score), r.candidate))
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
        entry.update(_health(r))
        ranking.append(entry)
    ranking += [{"candidate": r.candidate, "score": None, "rank": None, "status": FAILED,
                 "error": r.error or (_diverged_text(r) if r.diverged() else "no score reported"), **_health(r)}
                for r in failed]
    return ranking


def _diverged_text(result: CandidateResult) -> str:
    stats = result.stages["train"].stats
    return (f"training diverged (loss {stats.get('loss_start')} at the first step, {stats.get('train_loss')} "
            "over the run): lower training.learning_rate")


def _health(result: CandidateResult) -> dict[str, Any]:
    """The ranking entry's flags and marks: diverged (never selected), degenerate (selected only with a warning)."""
    flags = list(result.flags)
    out: dict[str, Any] = {}
    if result.diverged():
        out["diverged"] = True
        if not any(f.startswith("training diverged") for f in flags):
            flags.append(_diverged_text(result))
    reason = result.degenerate()
    if reason:
        out["degenerate"] = reason
        flags.append(f"degenerate answers: {reason}; its score does not measure the candidate")
    if flags:
        out["flags"] = flags
    return out


def selectable(ranking: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry to select: the best ranked one unless its training diverged (then none is: the ranking puts
    diverged candidates last)."""
    top = ranking[0] if ranking and ranking[0]["status"] == OK else None
    return None if top is None or top.get("diverged") else top


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


def selection_confidence(results: Sequence[CandidateResult], ranking: list[dict[str, Any]], selected: str | None, *,
                         rank_by: str, samples: int, sure_at: float) -> dict[str, Any] | None:
    """The bootstrap probability that the pick ranks first among the healthy ranked candidates; None without a
    pick or its per-row values."""
    healthy = {e["candidate"] for e in ranking if e["status"] == OK and not e.get("diverged")}
    rows = {r.candidate: _evaluate_stats(r).get(RANK_KEYS[rank_by]) for r in results if r.candidate in healthy}
    rows = {name: values for name, values in rows.items() if values}
    if selected not in rows:
        return None
    return bootstrap_p_best(rows, selected, samples=samples, sure_at=sure_at)


def _without_rows(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in ROW_KEYS}


def method_selection(ranking: list[dict[str, Any]],
                     variants: dict[str, tuple[str, str | None]]) -> dict[str, Any] | None:
    """Which fine-tuning method won per model (training.method: both), and the overall pick (model + method).

    `variants` maps each candidate to (model, method). A model's method is its better-ranked variant (the
    ranking already puts diverged runs last); with one variant failed the other is chosen, noted as such.
    None when no model was trained both ways."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in ranking:
        model, method = variants.get(entry["candidate"], (entry["candidate"], None))
        if method is not None:
            by_model.setdefault(model, {})[method] = entry
    per_model: dict[str, Any] = {}
    for model, entries in sorted(by_model.items()):
        if len(entries) < 2:
            continue
        ranked = sorted((e["rank"], m) for m, e in entries.items() if e["status"] == OK)
        chosen = ranked[0][1] if ranked else None
        row: dict[str, Any] = {"chosen": chosen, "scores": {m: e["score"] for m, e in sorted(entries.items())},
                               "candidates": {m: e["candidate"] for m, e in sorted(entries.items())}}
        if len(ranked) == len(entries):
            others = [entries[m]["score"] for _, m in ranked[1:]]
            row["margin"] = entries[chosen]["score"] - max(others)
        elif chosen is not None:
            row["note"] = "chosen by default: " + ", ".join(m for m, e in sorted(entries.items())
                                                            if e["status"] != OK) + " failed"
        per_model[model] = row
    if not per_model:
        return None
    top = ranking[0] if ranking and ranking[0]["status"] == OK else None
    model, method = variants.get(top["candidate"], (top["candidate"], None)) if top else (None, None)
    return {"per_model": per_model, "selected_model": model, "selected_method": method}


def _train_stats(result: CandidateResult) -> dict[str, Any]:
    train = result.stages.get("train")
    return train.stats if train is not None else {}


def _gpu_hours(result: CandidateResult) -> float | None:
    """GPUs held x the train step's wall time (a cluster job reports its own); None when not known."""
    stats = _train_stats(result)
    if stats.get("gpu_hours") is not None:
        return float(stats["gpu_hours"])
    if stats.get("accelerators") is None:
        return None
    return round(stats["accelerators"] * result.seconds("train") / 3600, 6)


def _load_save(stats: dict[str, Any]) -> float | None:
    parts = [stats.get("load_seconds"), stats.get("save_seconds")]
    return None if None in parts else round(float(parts[0]) + float(parts[1]), 3)


def cost_summary(results: Sequence[CandidateResult], stage_seconds: dict[str, float], total_seconds: float,
                 summed_stages: Sequence[str]) -> dict[str, Any]:
    """selection.json `cost`. stage_seconds_basis says per stage whether its figure is one task's wall time
    ("wall") or a sum over candidates that may have run in parallel ("sum_over_candidates"). train_seconds is
    each candidate's train step (wall); train_runtime_seconds the trainer's own optimisation loop and
    train_load_save_seconds its loading and saving, apart; gpu_hours: GPUs held x train step (0 on CPU)."""
    return {"stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
            "stage_seconds_basis": {k: "sum_over_candidates" if k in summed_stages else "wall"
                                    for k in stage_seconds},
            "train_seconds": {r.candidate: round(r.seconds("train"), 3) for r in results},
            "train_runtime_seconds": {r.candidate: _train_stats(r).get("train_seconds") for r in results},
            "train_load_save_seconds": {r.candidate: _load_save(_train_stats(r)) for r in results},
            "gpu_hours": {r.candidate: _gpu_hours(r) for r in results},
            "total_seconds": round(total_seconds, 3)}


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


def compression_warnings(stage_results: Sequence[StageResult]) -> list[str]:
    """Compression fell back after an error (a broken scorer): every candidate trained on uncompressed rows."""
    compress = next((s for s in stage_results if s.stage == "compress"), None)
    if compress is None or not compress.stats.get("fallback"):
        return []
    return [f"compression fell back: {compress.reason}"]


def build_selection(*, mode: str, metric: str, results: Sequence[CandidateResult],
                    stage_results: Sequence[StageResult], stage_seconds: dict[str, float],
                    total_seconds: float, rank_by: str = "metric", tie_confidence: float = 0.9,
                    bootstrap_samples: int = 1000, summed_stages: Sequence[str] = (),
                    variants: dict[str, tuple[str, str | None]] | None = None) -> dict[str, Any]:
    """The selection.json document (contract: see README, 'Outputs'). `summed_stages`: the stage_seconds
    summed over candidates; `variants`: candidate -> (model, training method) for the method decision."""
    ranking = rank_results(results)
    top = selectable(ranking)
    selected = top["candidate"] if top else None
    warnings = data_warnings(stage_results)
    if top is not None and top.get("degenerate"):  # first: the report prints the warnings at its top
        warnings.insert(0, f"the selected candidate {selected} has degenerate answers ({top['degenerate']}): every "
                        "candidate's answers are degenerate or worse, so this choice is not a measure of fit")
    warnings += compression_warnings(stage_results)
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
        "warnings": warnings,
        "selected": selected,
        "tied_with_winner": uncertainty["tied_with_winner"] if uncertainty else [],
        "uncertainty": uncertainty,
        "confidence": selection_confidence(results, ranking, selected, rank_by=rank_by, samples=bootstrap_samples,
                                           sure_at=tie_confidence),
        "ranking": ranking,
        "methods": method_selection(ranking, variants or {}),
        "cost": cost_summary(results, stage_seconds, total_seconds, summed_stages),
        "stats": stats,
    }
