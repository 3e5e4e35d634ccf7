"""The paper's filtering experiment (its Table 2) on the selection-fidelity benchmark: each of the twelve
filtering methods alone (no compression, no pruning) keeps 5%, 10% and 20% of a demo task's training rows;
every bench-zoo candidate is fine-tuned on the kept rows and ranked; the ranking is compared with the cached
grid-search ground truth (3 seeds, all rows) by tolerant/strict top-1 agreement and Kendall tau.

    make bench-filter-fidelity      # ~1 h on 2 cores the first time (ground truth and runs cached)

Writes docs/benchmarks/filter_fidelity.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


TASK_NOTES = {"instructions_mc": "4-way multiple choice scored by option log-likelihood, 400 training rows",
              "medical_qa": "long-answer Q&A scored by (BERTScore + ROUGE-L)/2, 400 training rows",
              "summarisation": "summaries scored by ROUGE-L, 400 training rows",
              "reading": "extractive reading comprehension scored by SQuAD F1, 1000 training rows"}


def _cell(row: dict | None) -> str:
    if row is None:
        return "—"
    tau = row.get("kendall_tau")
    tau_text = "—" if tau is None else f"{tau:+.2f}"
    return f"{'✓' if row['tolerant_top1'] else '✗'}{'✓' if row['strict_top1'] else '✗'} {tau_text}"


def _totals(rows: list[dict | None]) -> tuple[str, str, str]:
    """'k/n' tolerant and strict top-1 and the mean τ over the runs present ('' when there are none)."""
    rows = [x for x in rows if x]
    if not rows:
        return "", "", ""
    taus = [x["kendall_tau"] for x in rows if x.get("kendall_tau") is not None]
    return (f"{sum(x['tolerant_top1'] for x in rows)}/{len(rows)}", f"{sum(x['strict_top1'] for x in rows)}/{len(rows)}",
            f"{(sum(taus) / len(taus)) if taus else float('nan'):.2f}")


def _markdown(evaluation: dict, task_name: str, families: dict, ratios: tuple, seconds: dict,
              total_s: float) -> str:
    from damoc.benchmark.suite import filter_recipe_name

    by = {(r["recipe"], r["signal"]): r["tasks"].get(task_name) for r in evaluation["rows"]}
    truth = evaluation["ground_truth"][task_name]
    lines = [
        "# Filtering methods vs grid search (the paper's Table 2, on the tiny bench zoo)",
        "",
        f"Measured {date.today().isoformat()} with `make bench-filter-fidelity` on 2 CPU cores "
        f"({total_s / 60:.0f} min including cached parts). Task `{task_name}` ({TASK_NOTES.get(task_name, '')}), "
        "7 bench-zoo candidates of 7 architectures; the filtering "
        "method alone keeps 5/10/20% of them (no token compression, no pruning), each candidate is fine-tuned "
        "on the kept rows with the grid-search settings and ranked on 200 eval rows. Ground truth: grid "
        "search on all rows, 3 seeds, 400 eval rows "
        f"(order: {' > '.join(truth['order'])}).",
        "",
        "Cell: tolerant top-1 (✓/✗: the pick is within one seed standard deviation of the best), strict top-1, "
        "Kendall τ against the grid-search order. Ranking signal: the product default (`rank_by: loglik`, "
        "reference-answer log-likelihood); the task metric's cells are in the second table.",
        "",
    ]
    for signal in ("loglik", "metric"):
        lines += [f"## Ranking by {signal}", "",
                  "| family | method | " + " | ".join(f"{round(r * 100)}%" for r in ratios) + f" | filter s ({round(ratios[-1] * 100)}%) |",
                  "|---|---|" + "---|" * len(ratios) + "---|"]
        for family, methods in families.items():
            for m in methods:
                cells = [_cell(by.get((filter_recipe_name(m, r), signal))) for r in ratios]
                secs = seconds.get(filter_recipe_name(m, ratios[-1]))
                lines.append(f"| {family} | `{m}` | " + " | ".join(cells)
                             + (f" | {secs:.1f} |" if secs is not None else " | — |"))
        lines.append("")
        # per-ratio and per-family means, as the paper summarises them
        lines += ["| ratio | tolerant top-1 | strict top-1 | mean τ |", "|---|---|---|---|"]
        for r in ratios:
            rows = [by.get((filter_recipe_name(m, r), signal)) for ms in families.values() for m in ms]
            tolerant, strict, tau = _totals(rows)
            if tolerant:
                lines.append(f"| {round(r * 100)}% | {tolerant} | {strict} | {tau} |")
        lines += ["", "| family | tolerant top-1 (all ratios) | mean τ |", "|---|---|---|"]
        for family, methods in families.items():
            tolerant, _, tau = _totals([by.get((filter_recipe_name(m, r), signal)) for m in methods for r in ratios])
            if tolerant:
                lines.append(f"| {family} | {tolerant} | {tau} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from damoc.benchmark.suite import FILTER_FAMILIES, FILTER_RATIOS, VARIANTS, filter_recipe_name, task
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo
    from damoc.paths import damoc_home

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", help="comma-separated methods (default: all twelve)")
    parser.add_argument("--ratios", help="comma-separated ratios (default: 0.05,0.1,0.2)")
    parser.add_argument("--task", help="bench task (default: instructions_mc, the cheapest); another task writes "
                        "filter_fidelity_<task>.md/json")
    parser.add_argument("--workers", type=int, default=2, help="parallel single-thread jobs (default 2)")
    parser.add_argument("--out", default="docs/benchmarks", help="where filter_fidelity.md/json go")
    parser.add_argument("--root", default=None, help="cache and scratch (default $DAMOC_HOME/bench)")
    args = parser.parse_args(argv)

    variant = VARIANTS["filters"]
    bench_task = task(args.task or variant.tasks[0])
    methods = args.methods.split(",") if args.methods else [m for ms in FILTER_FAMILIES.values() for m in ms]
    unknown = sorted(set(methods) - {m for ms in FILTER_FAMILIES.values() for m in ms})
    if unknown:
        parser.error(f"unknown method(s) {unknown}; the twelve: {sorted(m for ms in FILTER_FAMILIES.values() for m in ms)}")
    ratios = tuple(float(r) for r in args.ratios.split(",")) if args.ratios else FILTER_RATIOS
    families = {f: tuple(m for m in ms if m in methods) for f, ms in FILTER_FAMILIES.items()}
    recipes = [filter_recipe_name(m, r) for ms in families.values() for m in ms for r in ratios]
    root = Path(args.root) if args.root else damoc_home() / "bench"
    zoo = ensure_zoo(default_zoo_dir("bench"), suite="bench")

    from damoc.benchmark.ground_truth import ground_truth, zoo_candidates
    from damoc.benchmark.recipes import run_recipes
    from damoc.benchmark.report import evaluate_runs

    started = time.time()
    candidates = zoo_candidates(zoo)
    truth = {bench_task.name: ground_truth(bench_task, candidates, root, workers=args.workers)}
    results = {}
    for i, name in enumerate(recipes, 1):
        t0 = time.time()
        results.update(run_recipes([bench_task], [name], candidates, root, variant, workers=args.workers))
        print(f"[{i}/{len(recipes)}] {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    evaluation = evaluate_runs(truth, results, [bench_task], candidates, root, variant)
    seconds = {}
    for name, by_task in results.items():
        stages = by_task[bench_task.name].get("data_stages", [])
        seconds[name] = next((s.get("seconds", 0.0) for s in stages if s["stage"] == "filter"), None)
    total = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = _markdown(evaluation, bench_task.name, families, ratios, seconds, total)
    stem = "filter_fidelity" if bench_task.name == variant.tasks[0] else f"filter_fidelity_{bench_task.name}"
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(
        {"date": date.today().isoformat(), "task": bench_task.name, "ratios": ratios, "families": families,
         "filter_seconds": seconds, "evaluation": evaluation}, indent=1, default=str), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
