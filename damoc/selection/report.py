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


def render_report(selection: dict[str, Any], candidate_details: dict[str, dict[str, Any]] | None = None) -> str:
    details = candidate_details or {}
    cost = selection["cost"]
    lines = [f"# DaMoC selection — mode `{selection['mode']}`", ""]
    lines.append(f"**Selected:** `{selection['selected']}`  " if selection["selected"] else
                 "**Selected:** none — every candidate failed  ")
    lines += [f"**Metric:** `{selection['metric']}` (higher is better)  ",
              f"**Total wall time:** {cost['total_seconds']:.1f} s", "", "## Ranking", ""]
    rows = []
    for r in selection["ranking"]:
        d = details.get(r["candidate"], {})
        rows.append([r["rank"], r["candidate"], r["score"], r["status"],
                     cost["train_seconds"].get(r["candidate"]), d.get("layers"), r.get("error", "")[:120]])
    lines += _table(["rank", "candidate", "score", "status", "train s", "layers (kept/total)", "error"], rows)
    lines += ["", "## Cost (seconds per stage)", ""]
    lines += _table(["stage", "seconds"], [[k, v] for k, v in cost["stage_seconds"].items()])
    lines += ["", "## Stage statistics", ""]
    for stage, stats in selection["stats"].items():
        lines += [f"### {stage}", "", "```json", json.dumps(stats, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines) + "\n"
