"""report.md: the selection for people, in tables (the same content as report.html; the data is selection.json).

Order: warnings, the pick (ranking signal, ties, saving against grid search, GPU-hours), the ranking, the
winner's example answers beside the references (only when the evaluation generated answers), flags, cost,
the fine-tuning method per model, token compression, data stages, candidate stages, layer similarity.
Numbers are formatted by kind: seconds with one decimal, ratios with three, shares as percentages, scores
with four decimals, counts with thousands separators. The figures both reports share are computed here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from damoc.selection.uncertainty import confidence_text

DASH = "—"
SCORE_DIGITS = 4
EXAMPLES = 3


# --------------------------------------------------------------------------- numbers, by kind

def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def fmt_score(value: Any, digits: int = SCORE_DIGITS) -> str:
    number = _num(value)
    if number is None:
        return DASH if value is None else str(value)
    return f"{number:.{digits}f}"


def fmt_seconds(value: Any) -> str:
    number = _num(value)
    return f"{number:,.1f}" if number is not None else DASH


def fmt_ratio(value: Any) -> str:
    number = _num(value)
    return f"{number:.3f}" if number is not None else DASH


def fmt_percent(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return f"{number:.{digits}%}" if number is not None else DASH


def fmt_count(value: Any) -> str:
    number = _num(value)
    return f"{int(number):,}" if number is not None else DASH


def fmt_hours(value: Any) -> str:
    number = _num(value)
    return f"{number:.3f}" if number is not None else DASH


def fmt_factor(value: Any) -> str:
    number = _num(value)
    return f"{number:.1f}×" if number is not None else DASH


# --------------------------------------------------------------------------- shared figures

def compress_stats(selection: Mapping[str, Any]) -> dict[str, Any] | None:
    """The compress stage's statistics when it ran (not skipped, failed or absent), else None."""
    stage = (selection.get("stats") or {}).get("compress") or {}
    return stage.get("stats") if stage.get("status") == "ok" and stage.get("stats") else None


def signal_name(selection: Mapping[str, Any]) -> str:
    """The name of what the ranking ranks by: 'loglik' or the metric's name."""
    return "loglik" if selection.get("rank_by") == "loglik" else str(selection.get("metric") or "score")


def ranked_by(selection: Mapping[str, Any]) -> str:
    if selection.get("rank_by") == "loglik":
        return (f"reference log-likelihood per token (higher is better); task metric "
                f"{selection.get('metric')}")
    return f"the task metric {selection.get('metric')} (higher is better)"


def second_column(selection: Mapping[str, Any]) -> tuple[str, str] | None:
    """(heading, ranking key) of the other figure, when the ranking carries it: the metric beside a loglik
    ranking, the loglik beside a metric ranking; never the ranked value twice."""
    key, heading = (("metric_score", str(selection.get("metric") or "metric")) if selection.get("rank_by") == "loglik"
                    else ("loglik", "loglik"))
    rows = [r for r in selection.get("ranking") or [] if r.get(key) is not None]
    if not rows or all(r.get(key) == r.get("score") for r in rows):
        return None
    return heading, key


def ties_text(selection: Mapping[str, Any]) -> str:
    """Who is tied with the winner, in words that never contradict the thin-data warning."""
    from damoc.selection.ranking import MIN_EVAL_ROWS

    unc = selection.get("uncertainty")
    tied = selection.get("tied_with_winner") or []
    if not selection.get("selected"):
        return DASH
    if not unc:
        return "not measured (the evaluation reported no per-row values)"
    rows = _num(unc.get("rows")) or 0
    if rows < 2:
        return f"not measurable with {int(rows)} eval row: every difference is within sampling noise"
    if tied:
        return ", ".join(map(str, tied)) + " (the interval of the gap to the winner includes 0)"
    if rows < MIN_EVAL_ROWS:
        return (f"none detected, but {int(rows)} eval rows are too few for the bootstrap to be trusted: "
                "treat the lead as within sampling noise")
    return "none — the lead is outside the sampling noise"


def uncertainty_text(selection: Mapping[str, Any]) -> str | None:
    unc = selection.get("uncertainty")
    if not unc:
        return None
    return (f"{unc.get('method', 'paired bootstrap')}: {fmt_count(unc.get('rows'))} rows, "
            f"{fmt_percent(unc.get('confidence'), 0)} interval, {fmt_count(unc.get('samples'))} resamples")


def _stage(selection: Mapping[str, Any], name: str) -> dict[str, Any]:
    return (selection.get("stats") or {}).get(name) or {}


def _cand_stage(selection: Mapping[str, Any], cand: str, stage: str) -> dict[str, Any]:
    return (((selection.get("stats") or {}).get("candidates") or {}).get(cand) or {}).get(stage) or {}


def gpu_hours(selection: Mapping[str, Any]) -> float | None:
    """GPU-hours of this run's training (None: no candidate recorded any)."""
    values = [_num(v) for v in ((selection.get("cost") or {}).get("gpu_hours") or {}).values()]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _grid_train_scale(selection: Mapping[str, Any], cand: str) -> float:
    """How much more training a grid-search run does for `cand`: all rows, uncompressed text, every layer."""
    scale = 1.0
    filt = _stage(selection, "filter")
    if filt.get("status") == "ok":
        n_in, n_out = _num((filt.get("stats") or {}).get("n_in")), _num((filt.get("stats") or {}).get("n_out"))
        if n_in and n_out:
            scale *= n_in / n_out
    comp = compress_stats(selection) or {}
    ratio = _num(comp.get("token_ratio"))
    if ratio and 0 < ratio < 1:
        scale *= 1 / ratio
    prune = _cand_stage(selection, cand, "prune")
    if prune.get("status") == "ok":
        before = _num((prune.get("stats") or {}).get("num_layers_before"))
        after = _num((prune.get("stats") or {}).get("num_layers_after"))
        if before and after:
            scale *= before / after
    return scale


def grid_saving(selection: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """This run's cost against grid search's: measured when `reference` is a grid-search run, else estimated.

    Estimated: grid search skips filtering, compression and pruning but trains every candidate on all rows,
    uncompressed, with all its layers; its training loop is this run's scaled by rows x tokens x layers
    (training time is about linear in each), loading/saving and evaluation as measured here. Compared on the
    sum of stage seconds (compute, not wall time: candidates may run in parallel). None for a grid-search run
    without a reference, or without timings."""
    cost = selection.get("cost") or {}
    total = _num(cost.get("total_seconds"))
    if reference is not None and reference.get("mode") == "grid_search":
        ref_total = _num((reference.get("cost") or {}).get("total_seconds"))
        if not total or ref_total is None:
            return None
        out = {"kind": "measured", "seconds": total, "grid_seconds": ref_total, "factor": ref_total / total,
               "saved_seconds": ref_total - total, "basis": "wall time of both runs"}
        ref_gpu, gpu = gpu_hours(reference), gpu_hours(selection)
        if ref_gpu is not None and gpu is not None:
            out.update(gpu_hours=gpu, grid_gpu_hours=ref_gpu)
        return out
    if selection.get("mode") == "grid_search":
        return None
    stage_seconds = {k: _num(v) or 0.0 for k, v in (cost.get("stage_seconds") or {}).items()}
    mine = sum(stage_seconds.values())
    if not mine:
        return None
    runtime = cost.get("train_runtime_seconds") or {}
    load_save = cost.get("train_load_save_seconds") or {}
    grid_train = 0.0
    grid_gpu = 0.0
    any_gpu = False
    for cand, train_s in (cost.get("train_seconds") or {}).items():
        train_s = _num(train_s) or 0.0
        loop, fixed = _num(runtime.get(cand)), _num(load_save.get(cand))
        if loop is None:
            loop, fixed = train_s, 0.0
        scale = _grid_train_scale(selection, cand)
        grid_train += loop * scale + (fixed or 0.0)
        gpu = _num(((cost.get("gpu_hours") or {}).get(cand)))
        if gpu is not None:
            any_gpu = True
            grid_gpu += gpu * scale
    grid = stage_seconds.get("prepare", 0.0) + grid_train + stage_seconds.get("evaluate", 0.0)
    out = {"kind": "estimated", "seconds": mine, "grid_seconds": grid, "factor": grid / mine,
           "saved_seconds": grid - mine,
           "basis": "sum of stage seconds; grid-search training scaled from this run's by rows, tokens and layers"}
    if any_gpu:
        out.update(gpu_hours=gpu_hours(selection), grid_gpu_hours=grid_gpu)
    return out


def factor_text(factor: Any) -> str:
    """'4.3× cheaper', or '2.5× dearer' when this run cost more than grid search (tiny runs: fixed costs rule)."""
    number = _num(factor)
    if number is None or number <= 0:
        return DASH
    return f"{fmt_factor(number)} cheaper" if number >= 1 else f"{fmt_factor(1 / number)} dearer"


def saving_text(saving: Mapping[str, Any] | None) -> str:
    if not saving:
        return DASH
    text = (f"{factor_text(saving['factor'])}: {fmt_seconds(saving['seconds'])} s against "
            f"{fmt_seconds(saving['grid_seconds'])} s")
    if saving["kind"] == "measured":
        return text + " of the grid-search run (measured, wall time)"
    return text + " for grid search (estimated — no grid-search run given: " + saving["basis"] + ")"


def gpu_text(selection: Mapping[str, Any], saving: Mapping[str, Any] | None) -> str:
    hours = gpu_hours(selection)
    if hours is None:
        return "not recorded (no accelerator count reported)"
    text = f"{fmt_hours(hours)} GPU-hours" + (" (CPU run)" if hours == 0 else "")
    if saving and saving.get("grid_gpu_hours") is not None and hours:
        text += f"; grid search {fmt_hours(saving['grid_gpu_hours'])} ({saving['kind']})"
    return text


def stage_figures(stage: str, stats: Mapping[str, Any]) -> str:
    """The key figures of a data stage in words."""
    if stage == "prepare":
        return f"{fmt_count(stats.get('train_samples'))} train rows, {fmt_count(stats.get('eval_samples'))} eval rows"
    if stage == "filter":
        n_in, n_out = _num(stats.get("n_in")), _num(stats.get("n_out"))
        share = f" ({fmt_percent(n_out / n_in)})" if n_in and n_out is not None else ""
        return f"kept {fmt_count(n_out)} of {fmt_count(n_in)} rows{share}"
    if stage == "compress":
        text = f"kept {fmt_percent(stats.get('token_ratio'))} of the tokens"
        n, passed = _num(stats.get("n")), _num(stats.get("passed_gate"))
        if n and passed is not None:
            text += f"; {fmt_percent(passed / n)} of rows passed the BERTScore gate"
        return text
    return ""


def data_stage_rows(selection: Mapping[str, Any]) -> list[list[str]]:
    """stage, status, seconds, figures (or the reason it was skipped or failed)."""
    rows = []
    for name, stage in (selection.get("stats") or {}).items():
        if name == "candidates" or not isinstance(stage, Mapping):
            continue
        stats = stage.get("stats") or {}
        what = stage_figures(name, stats) if stage.get("status") == "ok" else str(stage.get("reason") or "")
        if stats.get("reused"):
            what += " (reused from the stage cache)"
        rows.append([name, str(stage.get("status", "")), fmt_seconds(stage.get("seconds")), what])
    return rows


def candidate_stage_rows(selection: Mapping[str, Any]) -> list[list[str]]:
    """candidate, then per stage (prune, train, evaluate) its seconds and key figure."""
    rows = []
    for cand, stages in ((selection.get("stats") or {}).get("candidates") or {}).items():
        cells = [str(cand)]
        for stage in ("prune", "train", "evaluate"):
            s = stages.get(stage) or {}
            stats = s.get("stats") or {}
            if not s:
                cells.append(DASH)
                continue
            if s.get("status") == "failed":
                what = f"failed: {str(s.get('reason') or '')[:100]}"
            elif stage == "prune" and stats.get("num_layers_after") is not None:
                what = f"{fmt_count(stats['num_layers_after'])}/{fmt_count(stats.get('num_layers_before'))} layers"
                what += " (unpruned)" if s.get("status") == "skipped" else ""
            elif s.get("status") == "skipped":
                what = "skipped"
            elif stage == "train":
                what = f"loss {fmt_score(stats.get('train_loss'))}, {fmt_count(stats.get('samples'))} rows"
            elif stage == "evaluate":
                what = f"{fmt_count(stats.get('samples'))} rows"
                if stats.get("empty_predictions"):
                    what += f", {fmt_count(stats['empty_predictions'])} empty answers"
            else:
                what = ""
            if stats.get("reused"):
                what += ", reused"
            cells.append(f"{fmt_seconds(s.get('seconds'))} s" + (f" — {what}" if what else ""))
        rows.append(cells)
    return rows


def winner_examples(selection: Mapping[str, Any], limit: int = EXAMPLES) -> list[dict[str, Any]]:
    """The selected candidate's first answers beside the references, when its evaluation generated answers
    (a log-likelihood ranking generates none: then there is nothing worth reading)."""
    winner = selection.get("selected")
    if not winner:
        return []
    examples = (_cand_stage(selection, winner, "evaluate").get("stats") or {}).get("examples") or []
    shown = [e for e in examples if isinstance(e, Mapping) and str(e.get("prediction") or "").strip()]
    return shown[:limit]


def examples_caption(selection: Mapping[str, Any]) -> str:
    """What the examples are for: a loglik ranking does not read them (a cheap proxy's answers can be rough)."""
    if selection.get("rank_by") == "loglik":
        return ("The winner's first answers beside the references, for a look only: the ranking uses the "
                "references' log-likelihood, not these generations (a short proxy fine-tune writes rough text).")
    return f"The winner's first answers beside the references, as scored by {selection.get('metric')}."


def flags_of(row: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]]) -> list[str]:
    detail = details.get(row.get("candidate")) or {}
    return [str(f) for f in (detail.get("flags") or row.get("flags") or [])]


def layers_of(selection: Mapping[str, Any], name: str, details: Mapping[str, Mapping[str, Any]]) -> str | None:
    detail = details.get(name) or {}
    if detail.get("layers") and "None" not in str(detail["layers"]):  # "None/None": layer count unknown
        return str(detail["layers"])
    stats = _cand_stage(selection, name, "prune").get("stats") or {}
    if stats.get("num_layers_after") is not None and stats.get("num_layers_before") is not None:
        return f"{stats['num_layers_after']}/{stats['num_layers_before']}"
    return None


# --------------------------------------------------------------------------- markdown

def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else fmt_score(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def shorten(text: Any, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _ranking_table(selection: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]]) -> list[str]:
    unc = selection.get("uncertainty") or {}
    intervals = unc.get("intervals") or {}
    train_seconds = (selection.get("cost") or {}).get("train_seconds") or {}
    other = second_column(selection)
    conf = _num(unc.get("confidence"))
    headers = ["rank", "candidate", signal_name(selection),
               f"{conf:.0%} interval" if conf is not None else "interval", "vs winner"]
    headers += [other[0]] if other else []
    headers += ["status", "train s", "layers kept", "notes"]
    rows = []
    for r in selection.get("ranking") or []:
        name = r["candidate"]
        iv = intervals.get(name)
        if r.get("status") != "ok":
            vs = "failed"
        elif name == selection.get("selected"):
            vs = "winner"
        else:
            vs = "tied" if r.get("tied_with_winner") else "behind"
        notes = ([shorten(r["error"], 120)] if r.get("error") else []) + [shorten(f, 80) for f in flags_of(r, details)]
        row = [fmt_count(r.get("rank")) if r.get("rank") is not None else DASH, name, fmt_score(r.get("score")),
               f"{fmt_score(iv[0])} – {fmt_score(iv[1])}" if iv else DASH, vs]
        row += [fmt_score(r.get(other[1]))] if other else []
        row += [str(r.get("status", "")), fmt_seconds(train_seconds.get(name)),
                layers_of(selection, name, details) or DASH, "; ".join(notes)]
        rows.append(row)
    return _table(headers, rows)


def _similarity_rows(selection: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in selection.get("ranking") or []:
        stats = _cand_stage(selection, r["candidate"], "prune").get("stats") or {}
        sims = stats.get("similarities") or []
        if not sims:
            continue
        pruned = {int(i) for i in stats.get("pruned_layers") or [] if _num(i) is not None}
        cells = " · ".join((f"**{i}: {fmt_ratio(s)}**" if i in pruned else f"{i}: {fmt_ratio(s)}")
                           for i, s in enumerate(sims))
        rows.append([r["candidate"], fmt_ratio(stats.get("threshold")),
                     ", ".join(map(str, sorted(pruned))) or "none", cells])
    return rows


def render_report(selection: dict[str, Any], candidate_details: dict[str, dict[str, Any]] | None = None, *,
                  reference: Mapping[str, Any] | None = None) -> str:
    """report.md of a selection document (damoc.selection.ranking.build_selection).

    candidate_details: optional per candidate {"layers": "kept/total", "flags": [...]}; reference: an optional
    grid-search selection for the measured saving (without one the saving is estimated, and says so)."""
    details = candidate_details or {}
    cost = selection.get("cost") or {}
    lines = [f"# DaMoC selection — mode `{selection.get('mode')}`", ""]
    for warning in selection.get("warnings") or []:
        lines.append(f"> **Warning:** {warning}  ")
    if selection.get("warnings"):
        lines.append("")
    selected = selection.get("selected")
    lines.append(f"**Selected:** `{selected}`  " if selected else "**Selected:** none — every candidate failed  ")
    methods = selection.get("methods")
    if methods and methods.get("selected_method"):
        lines.append(f"**Selected model and method:** `{methods['selected_model']}` with "
                     f"{methods['selected_method']} fine-tuning  ")
    saving = grid_saving(selection, reference)
    summary = [["Ranked by", ranked_by(selection)], ["Tied with the winner", ties_text(selection)]]
    if uncertainty_text(selection):
        summary.append(["Uncertainty", uncertainty_text(selection)])
    if confidence_text(selection.get("confidence")):  # damoc.selection.uncertainty.bootstrap_p_best
        summary.append(["How sure", confidence_text(selection.get("confidence"))])
    summary += [["Total wall time", f"{fmt_seconds(cost.get('total_seconds'))} s"]]
    if saving:
        summary.append(["Saving against grid search", saving_text(saving)])
    summary.append(["GPU-hours", gpu_text(selection, saving)])
    lines += ["", *_table(["", ""], summary), "", "## Ranking", "", *_ranking_table(selection, details)]

    examples = winner_examples(selection)
    if examples:
        lines += ["", f"## Example answers of `{selected}`", "", examples_caption(selection), "",
                  *_table(["question", "reference", f"{selected}'s answer"],
                          [[shorten(e.get("input"), 160), shorten(e.get("reference"), 160),
                            shorten(e.get("prediction"), 160)] for e in examples])]
    flagged = [(r["candidate"], flags_of(r, details)) for r in selection.get("ranking") or []]
    flagged = [(name, flags) for name, flags in flagged if flags]
    if flagged:
        lines += ["", "## Flags", ""] + [f"- **{name}**: {'; '.join(flags)}" for name, flags in flagged]

    lines += ["", "## Cost per stage", ""]
    basis = cost.get("stage_seconds_basis") or {}
    ref_seconds = ((reference or {}).get("cost") or {}).get("stage_seconds") or {}
    stage_seconds = cost.get("stage_seconds") or {}
    headers = ["stage", "seconds", "basis"] + ([f"{(reference or {}).get('mode') or 'reference'} seconds"]
                                               if ref_seconds else [])
    lines += _table(headers, [[k, fmt_seconds(stage_seconds.get(k)),
                               {"wall": "wall time", "sum_over_candidates": "summed over candidates"}.get(
                                   basis.get(k), basis.get(k) or DASH)]
                              + ([fmt_seconds(ref_seconds.get(k))] if ref_seconds else [])
                              for k in dict.fromkeys(list(stage_seconds) + list(ref_seconds))])

    if methods:
        lines += ["", "## Fine-tuning method per model (full vs LoRA)", ""]
        lines += _table(["model", "full", "lora", "chosen", "margin", "notes"],
                        [[m, fmt_score(r["scores"].get("full")), fmt_score(r["scores"].get("lora")),
                          r["chosen"] or DASH, fmt_score(r.get("margin")), r.get("note", "")]
                         for m, r in methods["per_model"].items()])
    compress = compress_stats(selection)
    if compress:
        from damoc.selection.compression_stats import markdown

        lines += ["", "## Token compression", "", markdown(compress).rstrip()]
    data_rows = data_stage_rows(selection)
    if data_rows:
        lines += ["", "## Data stages", "", *_table(["stage", "status", "seconds", "result"], data_rows)]
    cand_rows = candidate_stage_rows(selection)
    if cand_rows:
        lines += ["", "## Candidate stages", "", *_table(["candidate", "prune", "train", "evaluate"], cand_rows)]
    sims = _similarity_rows(selection)
    if sims:
        lines += ["", "## Layer similarity", "",
                  "cos(h_in, h_out) per layer on the calibration text; pruned layers in bold.", "",
                  *_table(["candidate", "threshold", "pruned", "similarity per layer"], sims)]
    lines += ["", "Every figure of this report, and more, is in `selection.json`."]
    return "\n".join(lines) + "\n"
