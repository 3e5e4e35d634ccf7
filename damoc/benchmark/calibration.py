"""Calibration of the reported confidence: of the picks reported with a given bootstrap p_best, how many were grid
search's winner (strict) or within its seed spread (tolerant).

Inputs are the benchmark's own structures: a recipe run's `candidates` (with per-row values, as cached under
$DAMOC_HOME/bench/results) and the ground-truth summary of the same task (damoc.benchmark.agreement). Nothing here
simulates: without cached runs there is no table.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from damoc.selection.uncertainty import bootstrap_p_best

ROW_SIGNALS = {"metric": ("score", "row_scores"), "loglik": ("loglik", "row_loglik")}
EDGES = (0.0, 0.5, 0.7, 0.9, 1.0)


def run_confidence(candidates: Mapping[str, Mapping[str, Any]], signal: str, *, samples: int = 1000,
                   sure_at: float = 0.9) -> dict[str, Any] | None:
    """The pick of one recipe run by `signal` (highest mean, ties by name, as the report picks) and its p_best."""
    key, rows_key = ROW_SIGNALS[signal]
    rows = {name: c.get(rows_key) for name, c in candidates.items()
            if c.get("status", "ok") == "ok" and c.get(key) is not None and c.get(rows_key)}
    if not rows:
        return None
    pick = sorted(rows, key=lambda name: (-float(candidates[name][key]), name))[0]
    return bootstrap_p_best(rows, pick, samples=samples, sure_at=sure_at)


def calibration_entries(truth: Mapping[str, Mapping[str, Any]], results: Mapping[str, Mapping[str, Any]],
                        signals: Sequence[str] = ("metric", "loglik"), **options: Any) -> list[dict[str, Any]]:
    """One entry per (recipe, task, signal): p_best of the pick and whether grid search agrees.

    truth: {task: ground_truth_summary}; results: {recipe: {task: run}}."""
    entries = []
    for recipe, by_task in sorted(results.items()):
        for task, run in sorted(by_task.items()):
            if task not in truth:
                continue
            for signal in signals:
                conf = run_confidence(run.get("candidates", {}), signal, **options)
                if conf is None or conf["p_best"] is None:
                    continue
                pick = conf["selected"]
                entries.append({"recipe": recipe, "task": task, "signal": signal, "pick": pick,
                                "p_best": conf["p_best"], "strict": pick == truth[task]["best"],
                                "tolerant": pick in truth[task]["tolerated"]})
    return entries


def calibration_table(entries: Sequence[Mapping[str, Any]], edges: Sequence[float] = EDGES,
                      sure_at: float = 0.9) -> dict[str, Any]:
    """Picks per p_best bin [edges[i], edges[i+1]) (the last bin includes 1.0), with the mean p_best and the share
    that grid search confirms, plus the same for the picks reported as sure (p_best >= sure_at)."""
    if list(edges) != sorted(edges) or len(edges) < 2:
        raise ValueError(f"edges must be increasing, got {list(edges)}")

    def summary(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        n = len(group)
        return {"picks": n, "mean_p_best": sum(e["p_best"] for e in group) / n if n else None,
                "strict_share": sum(bool(e["strict"]) for e in group) / n if n else None,
                "tolerant_share": sum(bool(e["tolerant"]) for e in group) / n if n else None}

    bins = []
    for i, (low, high) in enumerate(zip(edges, edges[1:])):
        last = i == len(edges) - 2
        group = [e for e in entries if low <= e["p_best"] < high or (last and e["p_best"] == high)]
        bins.append({"p_best_from": low, "p_best_to": high, **summary(group)})
    return {"bins": bins, "sure": {"sure_at": sure_at, **summary([e for e in entries if e["p_best"] >= sure_at])},
            "all": summary(list(entries))}


def entries_from_report_rows(rows: Sequence[Mapping[str, Any]], signals: Sequence[str] = ("metric", "loglik"),
                             skip_recipes: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """From the benchmark report's rows (select.json `evaluation.rows`): entries by the p_best each task stored
    (`p_best`, reports since issue 19) and by the older tie flag (`sure` = no rival tied at 90%: p_best 1.0,
    else 0.0), so the published results calibrate the confidence they carry."""
    by_p: list[dict[str, Any]] = []
    by_tie: list[dict[str, Any]] = []
    for row in rows:
        if row.get("signal") not in signals or row.get("recipe") in skip_recipes:
            continue
        for task, res in (row.get("tasks") or {}).items():
            if res.get("pick") is None:
                continue
            base = {"recipe": row["recipe"], "task": task, "signal": row["signal"], "pick": res["pick"],
                    "strict": bool(res.get("strict_top1")), "tolerant": bool(res.get("tolerant_top1"))}
            if res.get("p_best") is not None:
                by_p.append({**base, "p_best": float(res["p_best"])})
            if "ties" in res:
                by_tie.append({**base, "p_best": 0.0 if res["ties"] else 1.0})
    return {"p_best": by_p, "tie_flag": by_tie}
