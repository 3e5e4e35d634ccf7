"""The numbers a KFP UI user sees on each task: flat {name: float} dicts for `dsl.Metrics.log_metric`.

Pure functions of the typed stage results (and of the selection document), so they are tested without KFP;
the components only loop over the dict and log each entry. Only finite numbers are returned (a NaN or an
infinity would break the Metrics artifact's JSON), booleans become 0/1 only where named here, and lists,
dicts and strings in a stage's statistics are left out (they are in selection.json and the reports).

Names:
  stage tasks (prepare, filter, compress): `seconds`, `ok`, `skipped`, every numeric statistic of the stage
    under its own name (`n_in`, `n_out`, `token_ratio`, ...), and `kept_rows` / `kept_fraction` where the
    stage drops rows (filter: rows selected; compress: rows that passed the BERTScore gate).
  candidate tasks (prune, fine-tune, evaluate): `ok`, `flags` (number of caveats), `score` and `loglik` once
    evaluated, `layers_total` / `layers_kept` / `layers_kept_fraction` once pruning has run (or was skipped
    with a known layer count), and `<stage>.seconds` plus `<stage>.<statistic>` for each stage shown.
  rank task: `score.<candidate>`, `loglik.<candidate>`, `interval_low.<candidate>` / `interval_high.<candidate>`
    (bootstrap interval of the ranked value), `flags.<candidate>`, `seconds.<stage>`, `total_seconds`,
    `candidates_ok`, `candidates_failed`, `tied_with_winner` (count).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from damoc.results import CandidateResult, StageResult

# Per-row lists and free text never become metrics; these scalar keys would only repeat a derived name.
_SKIP_KEYS = frozenset({"seconds"})


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, None, NaN, containers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _put(out: dict[str, float], name: str, value: Any) -> None:
    number = _number(value)
    if number is not None:
        out[name] = number


def _numeric_stats(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in stats.items():
        if key not in _SKIP_KEYS:
            _put(out, f"{prefix}{key}", value)
    return out


def stage_metrics(result: StageResult) -> dict[str, float]:
    """Metrics of one data stage (prepare, filter, compress)."""
    stats = result.stats or {}
    out = _numeric_stats(stats)
    out["seconds"] = float(result.seconds) if _number(result.seconds) is not None else 0.0
    out["ok"] = 1.0 if result.status == "ok" else 0.0
    out["skipped"] = 1.0 if result.status == "skipped" else 0.0
    if result.stage == "filter" and _number(stats.get("n_out")) is not None:
        out["kept_rows"] = float(stats["n_out"])
        if _number(stats.get("n_in")):
            out["kept_fraction"] = float(stats["n_out"]) / float(stats["n_in"])
    elif result.stage == "compress" and _number(stats.get("n")) is not None:
        kept = _number(stats.get("passed_gate"))
        if kept is not None:
            out["kept_rows"] = kept
            if stats["n"]:
                out["kept_fraction"] = kept / float(stats["n"])
    elif result.stage == "prepare":
        _put(out, "kept_rows", stats.get("train_samples"))
    return out


def _layers(result: CandidateResult) -> dict[str, float]:
    prune = result.stages.get("prune")
    if prune is None:
        return {}
    before, after = _number(prune.stats.get("num_layers_before")), _number(prune.stats.get("num_layers_after"))
    if before is None or after is None:
        return {}
    out = {"layers_total": before, "layers_kept": after}
    if before:
        out["layers_kept_fraction"] = after / before
    return out


def candidate_metrics(result: CandidateResult, stages: Iterable[str] | None = None) -> dict[str, float]:
    """Metrics of one candidate after a per-candidate task.

    stages: which stages' own figures to include (`<stage>.seconds`, `<stage>.<statistic>`); None: all the
    stages the result has been through (the evaluate task shows the candidate's whole way).
    """
    wanted = list(result.stages) if stages is None else [s for s in stages if s in result.stages]
    out: dict[str, float] = {"ok": 1.0 if result.status == "ok" else 0.0, "flags": float(len(result.flags))}
    _put(out, "score", result.score)
    evaluate = result.stages.get("evaluate")
    if evaluate is not None:
        _put(out, "loglik", evaluate.stats.get("loglik"))
    out.update(_layers(result))
    for name in wanted:
        stage = result.stages[name]
        out.update(_numeric_stats(stage.stats, f"{name}."))
        _put(out, f"{name}.seconds", stage.seconds)
        out[f"{name}.ok"] = 1.0 if stage.status == "ok" else 0.0
    return out


def selection_metrics(selection: Mapping[str, Any]) -> dict[str, float]:
    """Metrics of the rank task, from the selection document (damoc.selection.ranking.build_selection)."""
    out: dict[str, float] = {}
    intervals = (selection.get("uncertainty") or {}).get("intervals") or {}
    ranking = selection.get("ranking") or []
    for row in ranking:
        name = row["candidate"]
        _put(out, f"score.{name}", row.get("score"))
        _put(out, f"loglik.{name}", row.get("loglik"))
        interval = intervals.get(name)
        if interval:
            _put(out, f"interval_low.{name}", interval[0])
            _put(out, f"interval_high.{name}", interval[1])
        out[f"flags.{name}"] = float(len(row.get("flags") or []))
    cost = selection.get("cost") or {}
    for stage, seconds in (cost.get("stage_seconds") or {}).items():
        _put(out, f"seconds.{stage}", seconds)
    _put(out, "total_seconds", cost.get("total_seconds"))
    out["candidates_ok"] = float(sum(1 for r in ranking if r.get("status") == "ok"))
    out["candidates_failed"] = float(sum(1 for r in ranking if r.get("status") != "ok"))
    out["tied_with_winner"] = float(len(selection.get("tied_with_winner") or []))
    return out
