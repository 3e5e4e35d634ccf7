"""How well a cheap ranking agrees with grid search: top-1 agreement, Kendall tau, Spearman rho, the
fine-tuning method chosen per model (the paper's Table 7), and which candidates only one run ranked."""
from __future__ import annotations

from typing import Any

from scipy.stats import kendalltau, spearmanr


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
    a = {r["candidate"]: r["score"] for r in cheap["ranking"] if r["status"] == "ok"}
    b = {r["candidate"]: r["score"] for r in reference["ranking"] if r["status"] == "ok"}
    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {
        "candidates": common,
        "top1_agree": cheap.get("selected") is not None and cheap.get("selected") == reference.get("selected"),
        "kendall_tau": None, "spearman_rho": None,
        **coverage(cheap, reference),
    }
    if len(common) >= 2:
        xa, xb = [a[c] for c in common], [b[c] for c in common]
        out["kendall_tau"] = float(kendalltau(xa, xb).statistic)
        out["spearman_rho"] = float(spearmanr(xa, xb).statistic)
    methods = method_agreement(cheap, reference)
    if methods is not None:
        out["methods"] = methods
    ta = cheap.get("cost", {}).get("total_seconds")
    tb = reference.get("cost", {}).get("total_seconds")
    if ta and tb:
        out["wall_time_ratio"] = tb / ta
    sa = sum(cheap.get("cost", {}).get("train_seconds", {}).values())
    sb = sum(reference.get("cost", {}).get("train_seconds", {}).values())
    if sa and sb:
        out["train_time_ratio"] = sb / sa
    return out
