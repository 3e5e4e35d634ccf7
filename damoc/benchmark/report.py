"""The benchmark's report: docs/benchmarks/select.md (tables), select.json (every number), select_*.png."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from damoc import atomic
from damoc.benchmark.agreement import agreement, ground_truth_summary
from damoc.benchmark.recipes import ground_truth_costs, recipe_costs
from damoc.benchmark.suite import (GRID_SEEDS, GRID_TRAINING, UNAVAILABLE, BenchTask, Variant,
                                   recipe as get_recipe)
from damoc.selection.uncertainty import paired_bootstrap

SIGNALS = {"metric": ("score", "row_scores"), "loglik": ("loglik", "row_loglik"), "halving": ("halving_score", None)}


def signals_of(kind: str) -> tuple[str, ...]:
    return ("halving",) if kind == "halving" else ("metric", "loglik")


def _ties(candidates: dict[str, Any], signal: str) -> list[str]:
    key, rows_key = SIGNALS[signal]
    if rows_key is None:
        return []
    rows = {n: c.get(rows_key) for n, c in candidates.items() if c.get(rows_key) and c.get(key) is not None}
    if len(rows) < 2:
        return []
    winner = max(rows, key=lambda n: (candidates[n][key], n))
    return paired_bootstrap(rows, winner, confidence=0.9, samples=1000)["tied_with_winner"]


CANDIDATE_STAGES = ("prune", "train", "evaluate")


def evaluate_runs(truth: dict[str, dict[str, dict[int, dict]]], results: dict[str, dict[str, Any]],
                  tasks: list[BenchTask], candidates: list[dict[str, Any]], root: Path,
                  variant: Variant) -> dict[str, Any]:
    """Agreement and savings of every (recipe, signal) on every task."""
    summaries = {}
    grid_costs = {}
    for t in tasks:
        seed_scores = {c: [v["score"] for v in seeds.values() if v.get("score") is not None]
                       for c, seeds in truth[t.name].items()}
        summaries[t.name] = ground_truth_summary(seed_scores)
        grid_costs[t.name] = ground_truth_costs(truth[t.name], t, candidates, root)
    rows = []
    for name, by_task in results.items():
        rec = get_recipe(name)
        for signal in signals_of(rec.kind):
            key = SIGNALS[signal][0]
            per_task = {}
            for t in tasks:
                run = by_task.get(t.name)
                if run is None:
                    continue
                cands = run["candidates"]
                proxy = {n: (c.get(key) if c.get("status", "ok") == "ok" else None) for n, c in cands.items()}
                agree = agreement(proxy, summaries[t.name])
                # a log-likelihood ranking needs no generation: its evaluation is counted without it
                cost = (recipe_costs(run, t, name, candidates, variant, root, predict=False)
                        if signal == "loglik" and rec.kind != "halving" else run["costs"])
                grid = grid_costs[t.name]
                cand_flops = sum(cost["flops"].get(k, 0.0) for k in CANDIDATE_STAGES)
                recipe_flops, grid_flops = sum(cost["flops"].values()), sum(grid["flops"].values())
                recipe_s, grid_s = sum(cost["seconds"].values()), sum(grid["seconds"].values())
                per_task[t.name] = {
                    **agree, "ties": _ties(cands, signal),
                    "flops": recipe_flops, "grid_flops": grid_flops,
                    "saving_flops": grid_flops / recipe_flops if recipe_flops else None,
                    "saving_train_flops": (grid["flops"].get("train", 0) / cost["flops"]["train"]
                                           if cost["flops"].get("train") else None),
                    "saving_candidate_flops": sum(grid["flops"].values()) / cand_flops if cand_flops else None,
                    "seconds": recipe_s, "grid_seconds": grid_s,
                    "saving_seconds": grid_s / recipe_s if recipe_s else None,
                    "stage_seconds": cost["seconds"], "stage_flops": cost["flops"],
                    "flags": {n: c.get("flags") for n, c in cands.items() if c.get("flags")},
                    "failed": [n for n, c in cands.items() if c.get("status") == "failed"],
                    "scores": {n: c.get(key) for n, c in cands.items()},
                }
            rows.append({"recipe": name, "signal": signal, "tasks": per_task, **_aggregate(per_task)})
    return {"ground_truth": summaries, "grid_costs": grid_costs, "rows": rows}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _aggregate(per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    runs = list(per_task.values())
    n = len(runs) or 1
    return {"strict_top1": sum(r["strict_top1"] for r in runs) / n,
            "tolerant_top1": sum(r["tolerant_top1"] for r in runs) / n,
            "kendall_tau": _mean([r["kendall_tau"] for r in runs]),
            "spearman_rho": _mean([r["spearman_rho"] for r in runs]),
            "regret": _mean([r["regret"] for r in runs]),
            "saving_flops": _mean([r["saving_flops"] for r in runs]),
            "saving_train_flops": _mean([r["saving_train_flops"] for r in runs]),
            "saving_candidate_flops": _mean([r["saving_candidate_flops"] for r in runs]),
            "saving_seconds": _mean([r["saving_seconds"] for r in runs])}


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return out


def _plots(evaluation: dict[str, Any], truth: dict, results: dict, tasks: list[BenchTask], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        gt = evaluation["ground_truth"][t.name]
        names = gt["order"]
        ax.bar(range(len(names)), [gt["mean"][c] for c in names], yerr=[gt["std"][c] for c in names],
               color="#9ab", capsize=3)
        ax.set_xticks(range(len(names)), [c.replace("tiny-", "") for c in names], rotation=45, ha="right")
        ax.set_title(f"{t.name}: grid search (mean ± sd, 3 seeds)", fontsize=9)
    fig.tight_layout()
    path = out / "select_ground_truth.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for row in evaluation["rows"]:
        if row["saving_flops"] is None or row["kendall_tau"] is None:
            continue
        ax.scatter(row["saving_flops"], row["kendall_tau"], s=30)
        ax.annotate(f"{row['recipe']}/{row['signal']}", (row["saving_flops"], row["kendall_tau"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end FLOPs saving vs one grid-search run (x)")
    ax.set_ylabel("mean Kendall tau vs grid search")
    ax.axhline(0.8, color="grey", lw=0.6, ls="--")
    ax.axvline(10, color="grey", lw=0.6, ls="--")
    fig.tight_layout()
    path = out / "select_tradeoff.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)
    return files


def write_report(truth: dict, results: dict, tasks: list[BenchTask], recipes: list[str],
                 candidates: list[dict[str, Any]], variant: Variant, out: Path, *, root: Path,
                 total_seconds: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    evaluation = evaluate_runs(truth, results, tasks, candidates, root, variant)
    stem = "select" if variant.name == "full" else f"select_{variant.name}"
    plots = _plots(evaluation, truth, results, tasks, out) if variant.name == "full" else []
    date = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    lines = [f"# Selection fidelity — `{variant.name}` variant", "",
             f"Command: `make bench-select{'-quick' if variant.name == 'quick' else ''}` · date {date} · "
             f"{machine} · wall time {total_seconds / 60:.1f} min (ground truth cached: "
             "computed once per zoo/data/settings version).", "",
             f"Candidates ({len(candidates)}): " + ", ".join(f"`{c['name']}`" for c in candidates) +
             " (bench zoo: `damoc zoo build --suite bench`; `tiny-phi` cannot be pruned).",
             f"Proxy evaluation rows: {variant.proxy_eval_rows or 'all'}; ground truth: grid search, "
             "3 seeds, all eval rows.", "",
             "Tolerant top-1: the pick's grid-search mean is within one seed standard deviation of the best's. "
             "Savings: one grid-search run (one seed) / the recipe, end to end (FLOPs = tokens x parameters: "
             "6 per trained token, 2 per scored token; data stages included) and for training alone.", "",
             "## Summary", ""]
    head = ["recipe", "signal", "tolerant top-1", "strict top-1", "mean Kendall τ", "mean Spearman ρ",
            "mean regret", "FLOPs saving (e2e)", "FLOPs saving (candidate stages)", "FLOPs saving (train)",
            "seconds saving (e2e)"]
    lines += _table(head, [[r["recipe"], r["signal"], r["tolerant_top1"], r["strict_top1"], r["kendall_tau"],
                            r["spearman_rho"], r["regret"], r["saving_flops"], r["saving_candidate_flops"],
                            r["saving_train_flops"], r["saving_seconds"]] for r in evaluation["rows"]])
    lines += ["", "FLOPs saving (candidate stages) leaves out the fixed-size encoders of filtering and the "
              "compression gate (all-MiniLM-L6-v2, 22.7M parameters, 10-20x the tiny candidates; negligible "
              "next to 7B candidates) and the compression scorer: it is the ratio that carries over to real "
              "model sizes. `loglik` rows are costed without generation (`evaluation.predict: false`); their "
              "seconds were measured with it."]
    lines += ["", "## Ground truth (grid search, mean ± sd over seeds)", ""]
    for t in tasks:
        gt = evaluation["ground_truth"][t.name]
        lines += [f"**{t.name}** (`{t.task_type}`): best `{gt['best']}`; within one sd: "
                  + ", ".join(f"`{c}`" for c in gt["tolerated"]), ""]
        lines += _table(["candidate", "mean", "sd"], [[c, gt["mean"][c], gt["std"][c]] for c in gt["order"]])
        lines.append("")
    lines += ["## Per task", ""]
    for t in tasks:
        lines += [f"### {t.name}", ""]
        rows = []
        for r in evaluation["rows"]:
            d = r["tasks"].get(t.name)
            if d:
                rows.append([r["recipe"], r["signal"], d["pick"], d["strict_top1"], d["tolerant_top1"],
                             d["kendall_tau"], d["regret"], ", ".join(d["ties"]) or "none",
                             d["saving_flops"], ", ".join(d["failed"]) or "—"])
        lines += _table(["recipe", "signal", "pick", "strict", "tolerant", "τ", "regret",
                         "tied with pick (90% paired bootstrap)", "FLOPs saving", "failed"], rows)
        lines.append("")
    flagged = {(r["recipe"], t): d["flags"] for r in evaluation["rows"] for t, d in r["tasks"].items() if d["flags"]}
    if flagged:
        lines += ["## Flags", ""]
        for (rec, t), flags in sorted(flagged.items()):
            for name, msgs in flags.items():
                lines.append(f"- {rec} / {t} / `{name}`: {'; '.join(msgs)}")
        lines.append("")
    lines += ["## Setup", "", f"Grid search (ground truth): every candidate fine-tuned on all training rows, "
              f"{GRID_TRAINING}, seeds {list(GRID_SEEDS)}, scored on all eval rows.", ""]
    lines += _table(["task", "task type (metric)", "train rows", "eval rows", "max tokens/row", "max new tokens"],
                    [[t.name, t.task_type, t.n_train, t.n_eval, t.max_length, t.max_new_tokens] for t in tasks])
    lines += ["", "Recipes:", ""]
    lines += [f"- `{name}`: {get_recipe(name).description}" for name in recipes]
    lines += ["", "Signals: `metric` ranks by the proxies' task metric, `loglik` by the mean per-token "
              "log-likelihood of the eval references (the same proxies, no extra training); `halving` by rounds "
              "survived, then the last log-likelihood.", ""]
    if UNAVAILABLE:
        lines += ["## Not available yet", ""] + [f"- {k}: {v}" for k, v in UNAVAILABLE.items()] + [""]
    lines += [f"![{p}]({p})" for p in plots]
    text = "\n".join(lines) + "\n"
    atomic.write_text(out / f"{stem}.md", text)
    atomic.write_text(out / f"{stem}.json", json.dumps({"evaluation": evaluation, "variant": variant.__dict__,
                                                        "date": date, "machine": machine}, indent=1, default=str))
    summary = [f"{r['recipe']:>15}/{r['signal']:<7} tolerant {r['tolerant_top1']:.2f} strict {r['strict_top1']:.2f} "
               f"tau {_f(r['kendall_tau'], 2)} saving e2e {_f(r['saving_flops'], 1)}x candidate stages "
               f"{_f(r['saving_candidate_flops'], 1)}x train {_f(r['saving_train_flops'], 1)}x"
               for r in evaluation["rows"]]
    return {"evaluation": evaluation, "summary_text": "\n".join(summary), "report": str(out / f"{stem}.md")}
