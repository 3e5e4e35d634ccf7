"""How well a cheap ranking agrees with grid search: top-1 agreement (strict, and tolerant of the reference's
ties), Kendall tau, Spearman rho, the time saved, the fine-tuning method chosen per model (the paper's Table 7),
and which candidates only one run ranked. `check_selection` refuses documents that are not a selection.json."""
from __future__ import annotations

import math
import warnings
from typing import Any

from scipy.stats import kendalltau, spearmanr


class SelectionFormatError(ValueError):
    """A document that is not a usable selection.json; the message names the entry and field."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_selection(doc: Any) -> None:
    """Raise SelectionFormatError unless `doc` has the selection.json fields compare reads, of the right types."""
    if not isinstance(doc, dict) or not isinstance(doc.get("ranking"), list):
        raise SelectionFormatError("not a selection.json (no 'ranking' list)")
    for i, row in enumerate(doc["ranking"]):
        if not isinstance(row, dict):
            raise SelectionFormatError(f"ranking[{i}]: expected an object, got {type(row).__name__}")
        if not isinstance(row.get("candidate"), str):
            raise SelectionFormatError(f"ranking[{i}].candidate: expected a name (string)")
        if not isinstance(row.get("status", "failed"), str):
            raise SelectionFormatError(f"ranking[{i}].status: expected a string")
        if row.get("status") == "ok" and not _number(row.get("score")):
            raise SelectionFormatError(f"ranking[{i}].score: status ok needs a finite number, got {row.get('score')!r}")
    if doc.get("selected") is not None and not isinstance(doc["selected"], str):
        raise SelectionFormatError("selected: expected a candidate name or null")
    for key in ("cost", "methods"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise SelectionFormatError(f"{key}: expected an object")
    cost = doc.get("cost") or {}
    for key in ("train_seconds", "gpu_hours"):
        values = cost.get(key)
        if values is not None and not (isinstance(values, dict)
                                       and all(v is None or _number(v) for v in values.values())):
            raise SelectionFormatError(f"cost.{key}: expected an object of numbers")
    if cost.get("total_seconds") is not None and not _number(cost["total_seconds"]):
        raise SelectionFormatError("cost.total_seconds: expected a finite number")
    per_model = (doc.get("methods") or {}).get("per_model")
    if per_model is not None and not (isinstance(per_model, dict)
                                      and all(isinstance(v, dict) for v in per_model.values())):
        raise SelectionFormatError("methods.per_model: expected an object of objects")


def _finite(value: float) -> float | None:
    """NaN (e.g. tau over constant scores) is not a number JSON can carry: None instead."""
    return value if math.isfinite(value) else None


def _status(doc: dict[str, Any]) -> dict[str, str]:
    return {r["candidate"]: r.get("status", "failed") for r in doc["ranking"]}


def coverage(cheap: dict[str, Any], reference: dict[str, Any]) -> dict[str, list[str]]:
    """Candidates absent from one run, and those present in both but failed in one (never silently dropped)."""
    a, b = _status(cheap), _status(reference)
    return {
        "missing_in_cheap": sorted(set(b) - set(a)),
        "missing_in_reference": sorted(set(a) - set(b)),
        "failed_in_cheap": sorted(c for c in set(a) & set(b) if a[c] != "ok"),
        "failed_in_reference": sorted(c for c in set(a) & set(b) if b[c] != "ok"),
    }


def method_agreement(cheap: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any] | None:
    """Per model trained both ways in both runs: does the cheap run choose the reference's method?
    None when neither run chose methods (training.method was not both)."""
    ma = (cheap.get("methods") or {}).get("per_model") or {}
    mb = (reference.get("methods") or {}).get("per_model") or {}
    if not ma and not mb:
        return None
    models = sorted(m for m in set(ma) & set(mb) if ma[m].get("chosen") and mb[m].get("chosen"))
    per_model = {m: {"cheap": ma[m]["chosen"], "reference": mb[m]["chosen"],
                     "agree": ma[m]["chosen"] == mb[m]["chosen"]} for m in models}
    agreed = sum(v["agree"] for v in per_model.values())
    sel_a, sel_b = cheap.get("methods") or {}, reference.get("methods") or {}
    return {
        "models": models,
        "per_model": per_model,
        "agreement_rate": agreed / len(models) if models else None,
        "selected_agree": (sel_a.get("selected_model") is not None
                           and (sel_a.get("selected_model"), sel_a.get("selected_method"))
                           == (sel_b.get("selected_model"), sel_b.get("selected_method"))),
        "not_compared": sorted((set(ma) | set(mb)) - set(models)),
    }


def compare_selections(cheap: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Compare two selection.json documents over the candidates ranked (status ok) in both."""
    a = {r["candidate"]: r["score"] for r in cheap["ranking"] if r.get("status") == "ok"}
    b = {r["candidate"]: r["score"] for r in reference["ranking"] if r.get("status") == "ok"}
    common = sorted(set(a) & set(b))
    pick, truth = cheap.get("selected"), reference.get("selected")
    tolerated = {truth, *(reference.get("tied_with_winner") or [])} if truth is not None else set()
    out: dict[str, Any] = {
        "cheap_mode": cheap.get("mode"), "reference_mode": reference.get("mode"),
        "cheap_selected": pick, "reference_selected": truth,
        "candidates": common,
        "top1_agree": pick is not None and pick == truth,
        # tolerant: the pick is the reference's winner or tied with it (its bootstrap interval of the gap
        # to the winner includes 0), so the reference cannot tell the two apart
        "tolerant_top1_agree": pick is not None and pick in tolerated,
        "kendall_tau": None, "spearman_rho": None,
        **coverage(cheap, reference),
    }
    if len(common) >= 2:
        xa, xb = [a[c] for c in common], [b[c] for c in common]
        with warnings.catch_warnings():  # constant scores: undefined (NaN), reported as None below
            warnings.simplefilter("ignore")
            out["kendall_tau"] = _finite(float(kendalltau(xa, xb).statistic))
            out["spearman_rho"] = _finite(float(spearmanr(xa, xb).statistic))
    methods = method_agreement(cheap, reference)
    if methods is not None:
        out["methods"] = methods
    ta = (cheap.get("cost") or {}).get("total_seconds")
    tb = (reference.get("cost") or {}).get("total_seconds")
    if ta and tb:
        out["wall_time_ratio"] = tb / ta
    sa = sum(v or 0 for v in ((cheap.get("cost") or {}).get("train_seconds") or {}).values())
    sb = sum(v or 0 for v in ((reference.get("cost") or {}).get("train_seconds") or {}).values())
    if sa and sb:
        out["train_time_ratio"] = sb / sa
    ga = sum(v or 0 for v in ((cheap.get("cost") or {}).get("gpu_hours") or {}).values())
    gb = sum(v or 0 for v in ((reference.get("cost") or {}).get("gpu_hours") or {}).values())
    if ga and gb:
        out["gpu_hours"] = {"cheap": ga, "reference": gb}
    if ta and tb:
        out["seconds"] = {"cheap": ta, "reference": tb}
    out["warnings"] = reference_warnings(reference)
    return out


def reference_warnings(reference: dict[str, Any]) -> list[str]:
    """Agreement means something only against the ground truth: a grid_search run."""
    mode = reference.get("mode")
    if mode == "grid_search":
        return []
    what = f"a '{mode}' run" if isinstance(mode, str) else "a run of unknown mode (no 'mode' field)"
    return [f"the reference is {what}, not grid_search: this compares two cheap rankings, not one with the "
            "ground truth (make one with: damoc run CONFIG --mode grid_search --out DIR)"]


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_summary(result: dict[str, Any], cheap_name: str, reference_name: str) -> str:
    """compare_selections' result for people: one line per measure."""
    pick, truth = result.get("cheap_selected"), result.get("reference_selected")
    n = len(result["candidates"])
    lines = [f"{cheap_name} vs {reference_name}: {n} candidate(s) ranked in both"]
    if pick is None or truth is None:
        top1 = f"n/a (selected: {pick or 'none'} vs {truth or 'none'})"
    else:
        top1 = f"{'agree' if result['top1_agree'] else 'differ'} ({pick} vs {truth})"
    lines.append(f"  top-1:           {top1}")
    tolerant = "n/a" if pick is None or truth is None else (
        "yes" + (" (tied with the reference's winner)" if not result["top1_agree"] else "")
        if result["tolerant_top1_agree"] else "no (not tied with the reference's winner)")
    lines.append(f"  tolerant top-1:  {tolerant}")
    lines.append(f"  Kendall \u03c4:       {_f(result['kendall_tau'])}")
    lines.append(f"  Spearman \u03c1:      {_f(result['spearman_rho'])}")
    saving = []
    if "seconds" in result:
        s = result["seconds"]
        saving.append(f"wall time {result['wall_time_ratio']:.1f}x less ({s['cheap']:,.1f} s vs "
                      f"{s['reference']:,.1f} s, {1 - s['cheap'] / s['reference']:.0%} saved)")
    if "train_time_ratio" in result:
        saving.append(f"training {result['train_time_ratio']:.1f}x less")
    if "gpu_hours" in result:
        g = result["gpu_hours"]
        saving.append(f"GPU-hours {g['cheap']:.3g} vs {g['reference']:.3g}")
    lines.append(f"  savings:         {'; '.join(saving) if saving else 'n/a (no cost figures)'}")
    methods = result.get("methods")
    if methods and methods["models"]:
        agreed = sum(v["agree"] for v in methods["per_model"].values())
        lines.append(f"  method choice:   {agreed}/{len(methods['models'])} models agree"
                     + ("; selected model and method agree" if methods["selected_agree"] else ""))
    for key, label in (("missing_in_cheap", f"missing in {cheap_name}"),
                       ("missing_in_reference", f"missing in {reference_name}"),
                       ("failed_in_cheap", f"failed in {cheap_name}"),
                       ("failed_in_reference", f"failed in {reference_name}")):
        if result.get(key):
            lines.append(f"  {label}: {', '.join(result[key])}")
    return "\n".join(lines)
