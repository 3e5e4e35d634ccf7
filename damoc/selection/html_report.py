"""report.html: the selection as one self-contained page (inline CSS and inline SVG plots, no scripts, no URLs).

Shown by the KFP UI as the rank task's HTML artifact, beside the Markdown report (same content: the shared
figures come from damoc.selection.report). Sections: warnings, the pick (ties, saving against grid search —
measured against a grid-search run, or estimated and labelled so — and GPU-hours), the ranking table (the
ranked value, its bootstrap interval, who is tied with the winner, flags and errors), a plot of the ranking
with its intervals, the winner's example answers beside the references (when it generated any), the saving
and cost per stage (optionally beside a reference run), data and candidate stages, and layer similarity per
candidate where pruning measured it. Every piece of text that comes from a run (candidate names, errors,
flags, statistics) goes through html.escape.
"""
from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

from damoc.selection import report as shared

WINNER, TIED, OTHER, FAILED, REFERENCE = "#1b7f3b", "#d98f00", "#3465a4", "#b3261e", "#9aa5b1"

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px;color:#1f2328;
  background:#fff;font-size:14px;line-height:1.45}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
  padding-bottom:4px}h3{font-size:14px;margin:16px 0 4px}
.summary{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
.summary dt{color:#57606a}.summary dd{margin:0;font-weight:600}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;
  vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums;
  white-space:nowrap}td.name{white-space:nowrap}
tr.winner td{background:#e9f6ee}tr.tied td{background:#fff6e0}tr.failed td{background:#fdeceb}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:12px;font-weight:600;color:#fff;
  white-space:nowrap}.b-winner{background:#1b7f3b}.b-tied{background:#d98f00}.b-failed{background:#b3261e}
.flag{color:#8a5a00}.error{color:#b3261e}.note{color:#57606a;font-size:12px}
ul.flags{margin:2px 0;padding-left:18px}svg{display:block;margin:6px 0;max-width:100%}
svg text{font-family:inherit;font-size:12px;fill:#1f2328}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:320px}
.sims{display:flex;flex-wrap:wrap;gap:4px 28px}.sims figure{margin:0}.sims h3{margin-top:4px}
.warning{background:#fff6e0;border-left:4px solid #d98f00;padding:6px 10px;margin:6px 0}
td.text{max-width:360px}
.legend span{margin-right:14px;white-space:nowrap}.sw{display:inline-block;width:10px;height:10px;
  margin-right:4px;border-radius:2px;vertical-align:middle}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _seconds(value: Any) -> str:
    return _fmt(float(value), 1) if _finite(value) else _fmt(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _prune_stats(selection: Mapping[str, Any], name: str) -> dict[str, Any]:
    cand = ((selection.get("stats") or {}).get("candidates") or {}).get(name) or {}
    return (cand.get("prune") or {}).get("stats") or {}


def _layers(selection: Mapping[str, Any], name: str, detail: Mapping[str, Any]) -> str | None:
    return shared.layers_of(selection, name, {name: detail})


def _flags(row: Mapping[str, Any], detail: Mapping[str, Any]) -> list[str]:
    return shared.flags_of(row, {row.get("candidate"): detail})


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(f'<span><i class="sw" style="background:{c}"></i>{_e(t)}</span>'
                                          for c, t in items) + "</p>"


def _ranking_plot(selection: Mapping[str, Any]) -> str:
    """Horizontal dot plot: one row per ranked candidate, its score as a dot, its interval as a line."""
    intervals = (selection.get("uncertainty") or {}).get("intervals") or {}
    tied = set(selection.get("tied_with_winner") or [])
    rows = [r for r in selection.get("ranking") or [] if r.get("status") == "ok" and _finite(r.get("score"))]
    if not rows:
        return '<p class="note">No candidate was scored: nothing to plot.</p>'
    values = [float(r["score"]) for r in rows]
    for r in rows:
        iv = intervals.get(r["candidate"])
        if iv and all(_finite(v) for v in iv):
            values += [float(iv[0]), float(iv[1])]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 0.01)
    lo, hi = lo - pad, hi + pad
    label_w, plot_w, row_h, top = 190, 760, 30, 14
    height = top + row_h * len(rows) + 54

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg role="img" aria-label="ranking with intervals" width="{label_w + plot_w + 30}" '
             f'height="{height}" viewBox="0 0 {label_w + plot_w + 30} {height}">']
    axis_y = top + row_h * len(rows) + 4
    for i in range(6):  # grid and ticks
        v = lo + (hi - lo) * i / 5
        parts.append(f'<line x1="{x(v):.1f}" y1="{top - 6}" x2="{x(v):.1f}" y2="{axis_y}" stroke="#e5e8eb"/>'
                     f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle">{v:.3f}</text>')
    winner = selection.get("selected")
    for i, r in enumerate(rows):
        name, y = r["candidate"], top + row_h * i + row_h / 2
        color = WINNER if name == winner else TIED if name in tied else OTHER
        parts.append(f'<text x="{label_w - 10}" y="{y + 4:.1f}" text-anchor="end">{_e(r["rank"])}. {_e(name)}'
                     "</text>")
        iv = intervals.get(name)
        if iv and all(_finite(v) for v in iv):
            parts.append(f'<line x1="{x(iv[0]):.1f}" y1="{y:.1f}" x2="{x(iv[1]):.1f}" y2="{y:.1f}" '
                         f'stroke="{color}" stroke-width="3" stroke-linecap="round" opacity="0.55"/>')
        parts.append(f'<circle cx="{x(float(r["score"])):.1f}" cy="{y:.1f}" r="6" fill="{color}">'
                     f'<title>{_e(name)}: {_fmt(r["score"])}</title></circle>')
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#57606a"/>')
    parts.append(f'<text class="axis-label" x="{label_w + plot_w / 2:.1f}" y="{axis_y + 36}" text-anchor="middle">'
                 f"{_e(_axis_label(selection))}</text>")
    parts.append("</svg>")
    legend = [(WINNER, "winner"), (TIED, "tied with the winner"), (OTHER, "behind the winner")]
    note = "" if intervals else ('<p class="note">No bootstrap intervals (the evaluation reported no per-row '
                                 "values): scores only.</p>")
    return note + "".join(parts) + _legend(legend)


def _axis_label(selection: Mapping[str, Any]) -> str:
    unc = selection.get("uncertainty") or {}
    what = ("reference log-likelihood per token" if selection.get("rank_by") == "loglik"
            else f"{selection.get('metric') or 'score'}")
    conf = unc.get("confidence")
    tail = f" — dot: mean over eval rows, line: {shared.fmt_percent(conf, 0)} bootstrap interval" if unc else ""
    return f"{what} (higher is better){tail}"


def _bar_chart(series: Sequence[tuple[str, Sequence[tuple[str, float]]]], unit: str, label_w: int = 110) -> str:
    """Horizontal grouped bars: one group per label, one bar per series (name, [(label, value)])."""
    labels: list[str] = []
    for _, values in series:
        labels += [label for label, _ in values if label not in labels]
    data = [dict(values) for _, values in series]
    top_value = max([v for d in data for v in d.values() if _finite(v)] + [1e-9])
    colors = [OTHER, REFERENCE, TIED]
    plot_w, bar_h, gap = 640, 14, 10
    group_h = bar_h * len(series) + gap
    height = group_h * len(labels) + 10
    parts = [f'<svg role="img" aria-label="bar chart" width="{label_w + plot_w + 120}" height="{height}" '
             f'viewBox="0 0 {label_w + plot_w + 120} {height}">']
    for i, label in enumerate(labels):
        y0 = 5 + group_h * i
        parts.append(f'<text x="{label_w - 8}" y="{y0 + group_h / 2:.1f}" text-anchor="end">{_e(label)}</text>')
        for j, d in enumerate(data):
            value = d.get(label)
            if not _finite(value):
                continue
            w = max(float(value) / top_value * plot_w, 1.0)
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                         f'fill="{colors[j % len(colors)]}"><title>{_e(series[j][0])} {_e(label)}: '
                         f'{_fmt(float(value), 3)} {_e(unit)}</title></rect>'
                         f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h - 4}">{_fmt(float(value), 1)} {_e(unit)}'
                         "</text>")
    parts.append("</svg>")
    legend = _legend([(colors[j % len(colors)], name) for j, (name, _) in enumerate(series)]) if len(series) > 1 else ""
    return "".join(parts) + legend


def _similarity_plot(stats: Mapping[str, Any]) -> str:
    """One bar per layer: cos(h_in, h_out); pruned layers in red; the pruning threshold as a dashed line."""
    sims = [float(s) if _finite(s) else None for s in stats.get("similarities") or []]
    pruned = {int(i) for i in stats.get("pruned_layers") or [] if _finite(i)}
    threshold = stats.get("threshold")
    bar_w, gap, plot_h, left, bottom = 34, 8, 120, 40, 22
    width = left + (bar_w + gap) * len(sims) + 20
    height = plot_h + bottom + 10

    def y(v: float) -> float:
        return 5 + plot_h * (1.0 - max(min(v, 1.0), 0.0))

    parts = [f'<svg role="img" aria-label="layer similarity" width="{max(width, 260)}" height="{height}" '
             f'viewBox="0 0 {max(width, 260)} {height}">']
    for v in (0.0, 0.5, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - 10}" y2="{y(v):.1f}" stroke="#e5e8eb"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i, s in enumerate(sims):
        x0 = left + gap / 2 + (bar_w + gap) * i
        if s is not None:
            color = FAILED if i in pruned else OTHER
            parts.append(f'<rect x="{x0:.1f}" y="{y(s):.1f}" width="{bar_w}" height="{y(0.0) - y(s):.1f}" '
                         f'fill="{color}"><title>layer {i}: {s:.3f}{" (pruned)" if i in pruned else ""}</title>'
                         "</rect>")
        parts.append(f'<text x="{x0 + bar_w / 2:.1f}" y="{plot_h + 22}" text-anchor="middle">{i}</text>')
    if _finite(threshold):
        ty = y(float(threshold))
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{width - 10}" y2="{ty:.1f}" stroke="{TIED}" '
                     f'stroke-dasharray="5,4" stroke-width="2"><title>threshold {float(threshold):.2f}</title>'
                     "</line>")
    parts.append("</svg>")
    return "".join(parts)


def _ranking_table(selection: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]]) -> str:
    unc = selection.get("uncertainty") or {}
    intervals = unc.get("intervals") or {}
    tied = set(selection.get("tied_with_winner") or [])
    train_seconds = (selection.get("cost") or {}).get("train_seconds") or {}
    other = shared.second_column(selection)
    conf = unc.get("confidence")
    head = ["rank", "candidate", shared.signal_name(selection),
            f"{shared.fmt_percent(conf, 0)} interval" if conf is not None else "interval", "vs winner"]
    head += [other[0]] if other else []
    head += ["status", "train s", "layers (kept/total)", "flags / error"]
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in selection.get("ranking") or []:
        name = row["candidate"]
        detail = details.get(name) or {}
        iv = intervals.get(name)
        if row.get("status") != "ok":
            css, badge = "failed", '<span class="badge b-failed">failed</span>'
        elif name == selection.get("selected"):
            css, badge = "winner", '<span class="badge b-winner">winner</span>'
        elif name in tied or row.get("tied_with_winner"):
            css, badge = "tied", '<span class="badge b-tied">tied with winner</span>'
        else:
            css, badge = "", ""
        notes = []
        if row.get("error"):
            notes.append(f'<div class="error">{_e(row["error"])}</div>')
        flags = _flags(row, detail)
        if flags:  # in full under "Flags"; here the first words, the whole text as a tooltip
            notes.append('<ul class="flags">' + "".join(f'<li class="flag" title="{_e(f)}">{_e(_short(f))}</li>'
                                                        for f in flags) + "</ul>")
        cells = [
            f'<td class="num">{_e(_fmt(row.get("rank")))}</td>', f'<td class="name"><b>{_e(name)}</b></td>',
            f'<td class="num">{_e(_fmt(row.get("score")))}</td>',
            f'<td class="num">{_e(_fmt(iv[0]))} – {_e(_fmt(iv[1]))}</td>' if iv else "<td>—</td>",
            f"<td>{badge}</td>"]
        if other:
            cells.append(f'<td class="num">{_e(_fmt(row.get(other[1])))}</td>')
        cells += [f"<td>{_e(row.get('status', ''))}</td>",
            f'<td class="num">{_e(_seconds(train_seconds.get(name)))}</td>',
            f'<td class="num">{_e(_layers(selection, name, detail) or "—")}</td>', f"<td>{''.join(notes)}</td>"]
        out.append(f'<tr class="{css}" data-candidate="{_e(name)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _summary(selection: Mapping[str, Any], saving: Mapping[str, Any] | None) -> str:
    items = [("Selected", selection.get("selected") or "none — every candidate failed"),
             ("Mode", selection.get("mode", "")),
             ("Ranked by", shared.ranked_by(selection)),
             ("Tied with the winner", shared.ties_text(selection))]
    if shared.uncertainty_text(selection):
        items.append(("Uncertainty", shared.uncertainty_text(selection)))
    if shared.confidence_text(selection.get("confidence")):
        items.append(("How sure", shared.confidence_text(selection.get("confidence"))))
    items.append(("Total wall time", f"{shared.fmt_seconds((selection.get('cost') or {}).get('total_seconds'))} s"))
    if saving:
        items.append(("Saving against grid search", shared.saving_text(saving)))
    items.append(("GPU-hours", shared.gpu_text(selection, saving)))
    warnings = "".join(f'<p class="warning"><b>Warning:</b> {_e(w)}</p>' for w in selection.get("warnings") or [])
    return warnings + '<dl class="summary">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) \
        + "</dl>"


def _saving_section(saving: Mapping[str, Any] | None) -> str:
    """This run against grid search: two bars (seconds), measured or estimated, and GPU-hours when recorded."""
    if not saving:
        return '<p class="note">No grid-search comparison: this is the grid-search run, or there are no timings.</p>'
    grid = "grid search" + (" (measured)" if saving["kind"] == "measured" else " (estimated)")
    series = [("this run", [("seconds", float(saving["seconds"]))]),
              (grid, [("seconds", float(saving["grid_seconds"]))])]
    saved = float(saving["saved_seconds"])
    out = [f'<p class="saving" data-kind="{_e(saving["kind"])}"><b>{_e(shared.factor_text(saving["factor"]))}</b> '
           f"than grid search, {_e(saving['kind'])}: {_e(shared.fmt_seconds(abs(saved)))} s "
           f"{'saved' if saved >= 0 else 'more'}.</p>", _bar_chart(series, "s", label_w=180)]
    if saving.get("grid_gpu_hours") is not None and saving.get("gpu_hours"):
        out.append(_bar_chart([("this run", [("GPU-hours", float(saving["gpu_hours"]))]),
                               (grid, [("GPU-hours", float(saving["grid_gpu_hours"]))])], "GPU-h", label_w=180))
    if saving["kind"] == "estimated":
        out.append(f'<p class="note">Estimated — no grid-search run was given: {_e(saving["basis"])}. Run '
                   "<code>damoc run … --mode grid_search</code> and <code>damoc compare</code> for the measured "
                   "figure.</p>")
    return "".join(out)


def _examples_section(selection: Mapping[str, Any]) -> list[str]:
    examples = shared.winner_examples(selection)
    if not examples:
        return []
    winner = selection.get("selected")
    rows = "".join(f'<tr><td class="text">{_e(shared.shorten(x.get("input"), 240))}</td>'
                   f'<td class="text">{_e(shared.shorten(x.get("reference"), 240))}</td>'
                   f'<td class="text">{_e(shared.shorten(x.get("prediction"), 240))}</td></tr>' for x in examples)
    return [f"<h2>Example answers of {_e(winner)}</h2>",
            f'<p class="note">{_e(shared.examples_caption(selection))}</p>'
            f"<table><thead><tr><th>question</th><th>reference</th><th>{_e(winner)}'s answer</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"]


def _table_html(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
            + "</tbody></table>")


def _stages_section(selection: Mapping[str, Any]) -> list[str]:
    out = []
    data_rows = shared.data_stage_rows(selection)
    if data_rows:
        out += ["<h2>Data stages</h2>", _table_html(["stage", "status", "seconds", "result"], data_rows)]
    cand_rows = shared.candidate_stage_rows(selection)
    if cand_rows:
        out += ["<h2>Candidate stages</h2>", _table_html(["candidate", "prune", "train", "evaluate"], cand_rows)]
    return out


def _cost_section(selection: Mapping[str, Any], reference: Mapping[str, Any] | None) -> str:
    stage_seconds = (selection.get("cost") or {}).get("stage_seconds") or {}
    if not stage_seconds:
        return '<p class="note">No stage timings.</p>'
    mine = [(k, float(v)) for k, v in stage_seconds.items() if _finite(v)]
    series: list[tuple[str, Sequence[tuple[str, float]]]] = [(str(selection.get("mode") or "this run"), mine)]
    ref_seconds: dict[str, Any] = {}
    if reference:
        ref_seconds = (reference.get("cost") or {}).get("stage_seconds") or {}
        series.append((f"{reference.get('mode') or 'reference'} (reference)",
                       [(k, float(v)) for k, v in ref_seconds.items() if _finite(v)]))
    out = [_bar_chart(series, "s"), '<p class="note">Per-candidate stages (prune, train, evaluate) are summed over '
           "candidates, which may run in parallel.</p>"]
    head = ["stage", "seconds"] + (["reference seconds"] if reference else [])
    rows = []
    for stage in dict.fromkeys(list(stage_seconds) + list(ref_seconds)):
        cells = [f"<td>{_e(stage)}</td>", f'<td class="num">{_e(_seconds(stage_seconds.get(stage)))}</td>']
        if reference:
            cells.append(f'<td class="num">{_e(_seconds(ref_seconds.get(stage)))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out.append("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
               + "".join(rows) + "</tbody></table>")
    return "".join(out)


def _similarity_section(selection: Mapping[str, Any]) -> str:
    names = [r["candidate"] for r in selection.get("ranking") or []]
    blocks = []
    for name in names:
        stats = _prune_stats(selection, name)
        if not stats.get("similarities"):
            continue
        pruned = stats.get("pruned_layers") or []
        blocks.append(f'<figure class="sim"><h3>{_e(name)}</h3>'
                      f"<p class=\"note\">{_e(len(stats['similarities']))} layers; pruned: "
                      f"{_e(', '.join(map(str, pruned)) or 'none')}; threshold {_e(_fmt(stats.get('threshold'), 2))}"
                      f"</p>{_similarity_plot(stats)}</figure>")
    if not blocks:
        return '<p class="note">No layer similarities measured (pruning off, skipped or not applicable).</p>'
    return ('<p class="note">cos(h<sub>in</sub>, h<sub>out</sub>) per layer on the calibration text: layers whose '
            "output barely differs from their input are pruned.</p>"
            + _legend([(OTHER, "kept"), (FAILED, "pruned"), (TIED, "threshold")])
            + '<div class="sims">' + "".join(blocks) + "</div>")


def _flags_section(selection: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]]) -> str:
    items = []
    for row in selection.get("ranking") or []:
        flags = _flags(row, details.get(row["candidate"]) or {})
        if flags:
            items.append(f"<li><b>{_e(row['candidate'])}</b><ul class=\"flags\">"
                         + "".join(f'<li class="flag">{_e(f)}</li>' for f in flags) + "</ul></li>")
    return "<ul>" + "".join(items) + "</ul>" if items else '<p class="note">No caveats on any score.</p>'


def _methods_section(selection: Mapping[str, Any]) -> list[str]:
    """training.method: both — which fine-tuning method won per model (nothing otherwise)."""
    methods = selection.get("methods") or {}
    if not methods.get("per_model"):
        return []
    rows = "".join(f"<tr><td>{_e(m)}</td><td>{_fmt(r['scores'].get('full'))}</td><td>{_fmt(r['scores'].get('lora'))}"
                   f"</td><td>{_e(r.get('chosen') or '—')}</td><td>{_fmt(r.get('margin'))}</td>"
                   f"<td>{_e(r.get('note', ''))}</td></tr>" for m, r in methods["per_model"].items())
    pick = (f"<p>Selected: <b>{_e(methods['selected_model'])}</b> with {_e(methods['selected_method'])} "
            "fine-tuning.</p>" if methods.get("selected_method") else "")
    return ["<h2>Fine-tuning method per model</h2>", pick + "<table><thead><tr><th>model</th><th>full</th>"
            "<th>lora</th><th>chosen</th><th>margin</th><th>notes</th></tr></thead><tbody>" + rows
            + "</tbody></table>"]


def _compression_section(selection: Mapping[str, Any]) -> list[str]:
    from damoc.selection.compression_stats import html_fragment
    from damoc.selection.report import compress_stats

    stats = compress_stats(dict(selection))
    return ["<h2>Token compression</h2>", html_fragment(stats)] if stats else []


def render_html(selection: Mapping[str, Any], candidate_details: Mapping[str, Mapping[str, Any]] | None = None,
                *, reference: Mapping[str, Any] | None = None) -> str:
    """The HTML report of a selection document (damoc.selection.ranking.build_selection).

    candidate_details: optional per candidate {"layers": "kept/total", "flags": [...]} (as for report.md);
    reference: optional second selection (e.g. the grid-search run) whose stage costs are drawn beside these.
    """
    details = candidate_details or {}
    saving = shared.grid_saving(selection, reference)
    body = [
        f"<h1>DaMoC selection — {_e(selection.get('selected') or 'no winner')}</h1>", _summary(selection, saving),
        "<h2>Ranking</h2>", _ranking_table(selection, details),
        "<h2>Ranking with its uncertainty</h2>", _ranking_plot(selection),
        *_examples_section(selection),
        "<h2>Flags</h2>", _flags_section(selection, details),
        "<h2>Saving against grid search</h2>", _saving_section(saving),
        "<h2>Cost per stage</h2>", _cost_section(selection, reference),
        *_methods_section(selection),
        *_compression_section(selection),
        *_stages_section(selection),
        "<h2>Layer similarity</h2>", _similarity_section(selection),
        '<p class="note">Every figure of this report, and more, is in selection.json.</p>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>DaMoC selection — {_e(selection.get('selected') or 'no winner')}</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def candidate_details(results: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """{"layers", "flags"} per candidate from CandidateResults (or their JSON), as the rank task has them."""
    from damoc.results import CandidateResult

    out = {}
    for item in results:
        r = item if isinstance(item, CandidateResult) else CandidateResult.model_validate_json(item)
        out[r.candidate] = {"layers": r.layers(), "flags": list(r.flags)}
    return out
