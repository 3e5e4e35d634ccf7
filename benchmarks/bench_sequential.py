"""How many eval rows do the benchmark's tasks need before the ranking's leader is decided?

For each selection-benchmark task (damoc.benchmark.suite.TASKS, the same demo data), every zoo candidate is
scored by the reference log-likelihood per eval row (the ranking signal) as a cheap proxy — fine-tuned on a
random 20% of the training rows for the grid's epochs — and as it is (0-shot, no training). The sequential
rule (damoc.selection.sequential: a look after --block rows, then doubling, paired bootstrap at --confidence with Bonferroni
over the looks) then says how many rows the decision needed, and whether its leader is the all-rows leader.
Per-row values are cached under $DAMOC_HOME/bench-sequential.

    python benchmarks/bench_sequential.py [--rows 200] [--block 20] [--confidence 0.9] [--doc PATH] [--no-train]
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def row_logliks(model_dir: str, samples, max_length: int) -> list[float]:
    from damoc.evaluation.loglik import reference_logliks
    from damoc.hf import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    return reference_logliks(model, tok, samples, max_length, 64)


def proxy(chat_dir: str, train, task, out: Path, seed: int = 0) -> str:
    """The chat model fine-tuned on a random 20% of the training rows (grid epochs, lr, batch)."""
    from damoc.benchmark.suite import GRID_TRAINING
    from damoc.config import TrainingConfig
    from damoc.training.finetune import finetune

    if (out / "config.json").is_file():
        return str(out)
    rows = random.Random(seed).sample(list(train), max(16, len(train) // 5))
    finetune(chat_dir, rows, out, TrainingConfig(**{**GRID_TRAINING, "max_length": task.max_length, "seed": seed}))
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="eval rows per task (the full variant's proxy rows)")
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--no-train", action="store_true", help="0-shot only (no proxy fine-tuning)")
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from damoc.benchmark.ground_truth import task_data
    from damoc.benchmark.recipes import read_samples_any
    from damoc.benchmark.suite import TASKS
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo, load_manifest
    from damoc.paths import damoc_home
    from damoc.selection.sequential import sequential_decision

    zoo = ensure_zoo(default_zoo_dir())
    cands = [c["name"] for c in load_manifest(zoo)["candidates"]]
    root = damoc_home() / "bench-sequential"
    results = []
    for task in TASKS:
        data = task_data(task, root)
        evals = read_samples_any(data["eval"], task)[: args.rows]
        train = read_samples_any(data["train"], task)
        for kind in (("0-shot",) if args.no_train else ("proxy", "0-shot")):
            cache = root / "rows" / f"{task.name}-{kind}-{len(evals)}.json"
            if cache.is_file():
                values = json.loads(cache.read_text())
            else:
                values = {}
                for name in cands:
                    chat = str(zoo / name / "chat")
                    model = proxy(chat, train, task, root / "proxies" / f"{task.name}-{name}") if kind == "proxy" \
                        else chat
                    values[name] = row_logliks(model, evals, task.max_length)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(values))
            dec = sequential_decision(values, block=args.block, confidence=args.confidence)
            row = {"task": task.name, "signal": kind, **{k: dec[k] for k in (
                "rows_used", "rows_available", "decided", "leader", "full_leader", "agrees", "saving",
                "per_look_confidence")}}
            results.append(row)
            print(json.dumps(row), flush=True)
    text = table(results, args)
    print(text)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(text + "\n", encoding="utf-8")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


def table(results: list[dict], args) -> str:
    lines = ["# Sequential evaluation: rows the ranking needs", "",
             f"`python benchmarks/bench_sequential.py --rows {args.rows} --block {args.block} --confidence "
             f"{args.confidence}`: the selection benchmark's tasks and demo data, the default zoo's candidates, "
             "ranked by reference log-likelihood per eval row. *proxy*: each chat model fine-tuned on a random 20% "
             "of the training rows (grid epochs); *0-shot*: as it is. Looks after "
             f"{args.block} rows, then doubling, in the eval file's order; the leader is decided at the first look where its "
             f"paired-bootstrap gap to every rival excludes 0 at {args.confidence} overall (Bonferroni over the "
             "looks).", "",
             "| task | signal | rows used / available | eval saving | decided | leader (rows used) | all-rows leader |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['signal']} | {r['rows_used']} / {r['rows_available']} | {r['saving']:.0%} | "
                     f"{'yes' if r['decided'] else 'no'} | {r['leader']} | {r['full_leader']} |")
    used = sum(r["rows_used"] for r in results)
    avail = sum(r["rows_available"] for r in results)
    lines += ["", f"Over all rows: {used} of {avail} eval rows needed ({1 - used / avail:.0%} saved); the leader "
              f"on the rows used is the all-rows leader in {sum(r['agrees'] for r in results)} of {len(results)}."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
