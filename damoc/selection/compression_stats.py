"""The compress stage's statistics for the run report (issue 7 item 6), as markdown or HTML.

Input: the stats dict of damoc.compression.compress_dataset. Shown: token ratio per part (scorer tokens) and
per candidate tokenizer (whole sample and per part), the gate pass rate before rewriting, the share rewritten
in each round, the share still failing, the BERTScore distribution (quantiles and histogram, before rewriting)
and the compression method's own counters. Keys a run did not record (identity compression, older runs) are
left out, never invented. One list of sections feeds both renderers, so they always show the same numbers.
"""
from __future__ import annotations

import html
from typing import Any, Mapping

PARTS = (("instruction", "instruction"), ("input", "question/context"), ("output", "answer"))
QUANTILES = ("min", "p10", "p25", "p50", "p75", "p90", "max")
Section = tuple[str, list[str], list[list[Any]]]  # title, headers, rows


def _ratio(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else (
        f"{value:,.0f}" if isinstance(value, float) else "—")


def _share(part: Any, whole: Any) -> str:
    return f"{part / whole:.1%}" if isinstance(part, (int, float)) and whole else "—"


def _bar(count: int, most: int, width: int = 20) -> str:
    return "#" * round(width * count / most) if most else ""


def sections(stats: Mapping[str, Any]) -> tuple[list[str], list[Section]]:
    """(summary lines, tables) of the stats that are present."""
    n = stats.get("n", 0)
    summary = [f"method {stats.get('method', 'damoc')}, rate {stats.get('rate', '—')} "
               f"({stats.get('budget_unit', 'tokens')}), {_count(n)} samples: kept {_ratio(stats.get('token_ratio'))} of "
               f"the scorer's tokens, {_ratio(stats.get('word_ratio'))} of the words"]
    if "gate_pass_rate_before_rewrite" in stats:
        still = stats.get("still_failing", 0)
        before = stats["gate_pass_rate_before_rewrite"]
        summary.append(f"gate (BERTScore F1 >= {stats.get('threshold', '—')}): {before:.1%} passed before rewriting, "
                       f"{stats.get('gate_pass_rate', 0):.1%} after; {still} still failing "
                       f"({_share(still, n)}): {stats.get('fell_back', 0)} on their original text, "
                       f"{stats.get('best_attempt', 0)} on their best attempt")
    tables: list[Section] = []
    parts = stats.get("parts") or {}
    if parts:
        tables.append(("Token ratio per part (scorer tokens)", ["part", "tokens in", "tokens out", "ratio"],
                       [[label, _count(parts[k]["tokens_in"]), _count(parts[k]["tokens_out"]),
                         _ratio(parts[k]["token_ratio"])]
                        for k, label in PARTS if k in parts]))
    tokenizers = stats.get("tokenizers") or {}
    if tokenizers:
        tables.append(("Token ratio per candidate tokenizer", ["tokenizer", "tokens in", "tokens out", "ratio"]
                       + [label for _, label in PARTS],
                       [[name, _count(t["tokens_in"]), _count(t["tokens_out"]), _ratio(t["token_ratio"])]
                        + [_ratio((t.get("parts") or {}).get(k)) for k, _ in PARTS]
                        for name, t in sorted(tokenizers.items())]))
    rounds = stats.get("rewrite_rounds") or []
    if rounds:
        tables.append(("Rewriting per round", ["round", "tried", "answered", "too long", "passed",
                                               "share of samples rewritten"],
                       [[r.get("round", i + 1), _count(r.get("tried")), _count(r.get("answered")),
                         _count(r.get("too_long")), _count(r.get("passed")), _share(r.get("passed", 0), n)]
                        for i, r in enumerate(rounds)]))
    quantiles = stats.get("bertscore_quantiles") or {}
    if quantiles:
        rows = [["before rewriting"] + [_ratio(quantiles.get(q)) for q in QUANTILES]]
        final = stats.get("final_bertscore_quantiles") or {}
        if final:
            rows.append(["trained on"] + [_ratio(final.get(q)) for q in QUANTILES])
        tables.append(("BERTScore F1 quantiles", ["scores"] + list(QUANTILES), rows))
    histogram = stats.get("bertscore_histogram") or []
    if histogram:
        most = max(b["count"] for b in histogram)
        last = len(histogram) - 1
        tables.append(("BERTScore F1 histogram (before rewriting)", ["BERTScore", "samples", ""],
                       [[f"[{b['lo']:.2f}, {b['hi']:.2f}{']' if i == last else ')'}", _count(b["count"]),
                         _bar(b["count"], most)] for i, b in enumerate(histogram)]))
    method_stats = stats.get("method_stats") or {}
    if method_stats:
        tables.append((f"Method {stats.get('method', '')}", ["counter", "value"],
                       [[k, v] for k, v in sorted(method_stats.items())]))
    return summary, tables


def markdown(stats: Mapping[str, Any]) -> str:
    """The compression statistics as a markdown block (no top-level heading: the report places it)."""
    summary, tables = sections(stats)
    lines = [f"- {line}" for line in summary]
    for title, headers, rows in tables:
        lines += ["", f"**{title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_fragment(stats: Mapping[str, Any]) -> str:
    """The same statistics as an HTML fragment (every value escaped)."""
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    summary, tables = sections(stats)
    out = ["<ul>"] + [f"<li>{e(line)}</li>" for line in summary] + ["</ul>"]
    for title, headers, rows in tables:
        out.append(f"<h4>{e(title)}</h4><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers)
                   + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows]
        out.append("</tbody></table>")
    return "\n".join(out) + "\n"
