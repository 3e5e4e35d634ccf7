"""How well a cheap ranking agrees with grid search: top-1 agreement, Kendall tau, Spearman rho."""
from __future__ import annotations

from typing import Any

from scipy.stats import kendalltau, spearmanr


def compare_selections(cheap: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Compare two selection.json documents over the candidates ranked (status ok) in both."""
    a = {r["candidate"]: r["score"] for r in cheap["ranking"] if r["status"] == "ok"}
    b = {r["candidate"]: r["score"] for r in reference["ranking"] if r["status"] == "ok"}
    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {
        "candidates": common,
        "top1_agree": cheap.get("selected") is not None and cheap.get("selected") == reference.get("selected"),
        "kendall_tau": None, "spearman_rho": None,
    }
    if len(common) >= 2:
        xa, xb = [a[c] for c in common], [b[c] for c in common]
        out["kendall_tau"] = float(kendalltau(xa, xb).statistic)
        out["spearman_rho"] = float(spearmanr(xa, xb).statistic)
    ta = cheap.get("cost", {}).get("total_seconds")
    tb = reference.get("cost", {}).get("total_seconds")
    if ta and tb:
        out["wall_time_ratio"] = tb / ta
    sa = sum(cheap.get("cost", {}).get("train_seconds", {}).values())
    sb = sum(reference.get("cost", {}).get("train_seconds", {}).values())
    if sa and sb:
        out["train_time_ratio"] = sb / sa
    return out
