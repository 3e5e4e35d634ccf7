"""Selection-fidelity benchmark: does each cheap recipe pick grid search's winner, and at what cost?

    make bench-select         # full: 4 tasks x 7 candidates, every recipe (ground truth cached after first run)
    make bench-select-quick   # 2 tasks, the paper recipe, the proposed one and 0-shot, 100 eval rows
    make bench-select-ablations  # compress-only and prune-only (they train on all rows), 2 tasks

Writes docs/benchmarks/select.md (tables), select.json (every number) and select_*.png (plots).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    from damoc.benchmark.suite import VARIANTS, task
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo
    from damoc.paths import damoc_home

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="full",
                        help="full (every recipe on a subset, 4 tasks), quick (2 tasks, 3 recipes, 100 eval rows), "
                        "ablations (the recipes that train on all rows, 2 tasks), filters (see bench_filter_fidelity)")
    parser.add_argument("--quick", action="store_true", help="the same as --variant quick")
    parser.add_argument("--ground-truth-only", action="store_true", help="compute/cache the grid-search ground "
                        "truth and stop")
    parser.add_argument("--recipes", help="comma-separated recipe names (default: the variant's)")
    parser.add_argument("--tasks", help="comma-separated task names (default: the variant's)")
    parser.add_argument("--candidates", help="comma-separated bench-zoo candidates (default: all)")
    parser.add_argument("--eval-rows", type=int, help="proxy evaluation rows (default: the variant's)")
    parser.add_argument("--workers", type=int, default=2, help="parallel single-thread jobs (default 2)")
    parser.add_argument("--out", default="docs/benchmarks", help="where select.md/json and plots go")
    parser.add_argument("--root", default=None, help="cache and scratch (default $DAMOC_HOME/bench)")
    args = parser.parse_args(argv)

    variant = VARIANTS["quick" if args.quick else args.variant]
    tasks = [task(t) for t in (args.tasks.split(",") if args.tasks else variant.tasks)]
    recipes = args.recipes.split(",") if args.recipes else list(variant.recipes)
    root = Path(args.root) if args.root else damoc_home() / "bench"
    zoo = ensure_zoo(default_zoo_dir("bench"), suite="bench")

    from damoc.benchmark.ground_truth import ground_truth, zoo_candidates

    candidates = zoo_candidates(zoo, args.candidates.split(",") if args.candidates else None)
    if args.eval_rows:
        import dataclasses

        variant = dataclasses.replace(variant, proxy_eval_rows=args.eval_rows)
    started = time.time()
    truth = {}
    for t in tasks:
        t0 = time.time()
        truth[t.name] = ground_truth(t, candidates, root, workers=args.workers)
        print(f"ground truth {t.name}: {time.time() - t0:.0f} s", file=sys.stderr)
    if args.ground_truth_only:
        from damoc.benchmark.agreement import ground_truth_summary

        for name, by_cand in truth.items():
            summary = ground_truth_summary({c: [v["score"] for v in seeds.values() if v["score"] is not None]
                                            for c, seeds in by_cand.items()})
            print(name, json.dumps({c: [round(summary["mean"][c], 4), round(summary["std"][c], 4)]
                                    for c in summary["order"]}))
        return 0

    from damoc.benchmark.recipes import run_recipes
    from damoc.benchmark.report import write_report

    results = run_recipes(tasks, recipes, candidates, root, variant, workers=args.workers)
    doc = write_report(truth, results, tasks, recipes, candidates, variant, Path(args.out), root=root,
                       total_seconds=time.time() - started)
    print(doc["summary_text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
