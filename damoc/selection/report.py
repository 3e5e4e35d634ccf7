"""report.md: the ranking table and each stage's statistics, readable in the KFP UI and on disk."""
from __future__ import annotations

import json
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines


def compress_stats(selection: dict[str, Any]) -> dict[str, Any] | None:
    """The compress stage's statistics when it ran (not skipped, failed or absent), else None."""
    stage = (selection.get("stats") or {}).get("compress") or {}
    return stage.get("stats") if stage.get("status") == "ok" and stage.get("stats") else None


def render_report(selection: dict[str, Any], candidate_details: dict[str, dict[str, Any]] | None = None) -> str:
    details = candidate_details or {}
    cost = selection["cost"]
    lines = [f"# DaMoC selection — mode `{selection['mode']}`", ""]
    lines.append(f"**Selected:** `{selection['selected']}`  " if selection["selected"] else
                 "**Selected:** none — every candidate failed  ")
    methods = selection.get("methods")
    if methods and methods.get("selected_method"):
        lines.append(f"**Selected model and method:** `{methods['selected_model']}` with "
                     f"{methods['selected_method']} fine-tuning  ")
    for warning in selection.get("warnings") or []:
        lines.append(f"**Warning:** {warning}  ")
    tied = selection.get("tied_with_winner") or []
    unc = selection.get("uncertainty")
    if selection["selected"] and unc:
        lines.append(f"**Tied with the winner** (paired bootstrap over {unc['rows']} eval rows, "
                     f"{unc['confidence']:.0%} interval of the gap includes 0): "
                     + (", ".join(f"`{c}`" for c in tied) if tied else "none — the lead is outside the noise") + "  ")
    rank_by = selection.get("rank_by", "metric")
    lines += [f"**Metric:** `{selection['metric']}` (higher is better); ranked by "
              f"{'the metric' if rank_by == 'metric' else 'reference log-likelihood per token'}  ",
              f"**Total wall time:** {cost['total_seconds']:.1f} s", "", "## Ranking", ""]
    rows = []
    for r in selection["ranking"]:
        d = details.get(r["candidate"], {})
        interval = (unc or {}).get("intervals", {}).get(r["candidate"])
        note = "; ".join(([r["error"][:120]] if r.get("error") else []) + list(d.get("flags") or r.get("flags") or []))
        rows.append([r["rank"], r["candidate"], r["score"],
                     f"{interval[0]:.4f} – {interval[1]:.4f}" if interval else None,
                     "tied" if r.get("tied_with_winner") else ("winner" if r["rank"] == 1 else ""),
                     r.get("metric_score"), r.get("loglik"), r["status"],
                     cost["train_seconds"].get(r["candidate"]), d.get("layers"), note])
    lines += _table(["rank", "candidate", "score", "interval", "vs winner", "metric", "loglik", "status",
                     "train s", "layers (kept/total)", "notes"], rows)
    if methods:
        lines += ["", "## Fine-tuning method per model (full vs LoRA)", ""]
        lines += _table(["model", "full", "lora", "chosen", "margin", "notes"],
                        [[m, r["scores"].get("full"), r["scores"].get("lora"), r["chosen"], r.get("margin"),
                          r.get("note", "")] for m, r in methods["per_model"].items()])
    compress = compress_stats(selection)
    if compress:
        from damoc.selection.compression_stats import markdown

        lines += ["", "## Token compression", "", markdown(compress).rstrip()]
    lines += ["", "## Cost (seconds per stage)", ""]
    basis = cost.get("stage_seconds_basis") or {}
    lines += _table(["stage", "seconds", "basis"],
                    [[k, v, basis.get(k)] for k, v in cost["stage_seconds"].items()])
    lines += ["", "## Stage statistics", ""]
    for stage, stats in selection["stats"].items():
        lines += [f"### {stage}", "", "```json", json.dumps(stats, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines) + "\n"
