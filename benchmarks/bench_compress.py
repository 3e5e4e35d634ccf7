"""Stage-2 compression benchmark: the token-ratio / gate-pass frontier of our compressor on demo data.

For each rate: kept token fraction (scorer tokens and each zoo candidate's tokenizer), gate pass rate at the
threshold, mean BERTScore, tokens per second of compression (2 CPU cores, torch single-threaded).

    python benchmarks/bench_compress.py [--n 100] [--rates 0.4,0.5,0.6] [--scorer zoo://tiny-llama]
        [--answer-scoring conditional] [--out docs/benchmarks/compress.json]

The `llmlingua` package's PromptCompressor needs transformers 4.44.2 (its own venv, see ENVIRONMENT.md); a
side-by-side run against it is not wired in yet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rates", default="0.4,0.5,0.6,0.75")
    parser.add_argument("--scorer", default="tiny-llama", help="zoo model name (its chat checkpoint) or a dir")
    parser.add_argument("--answer-scoring", default="conditional", choices=["conditional", "contrastive"])
    parser.add_argument("--instruction-rate", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from damoc.compression import compress_dataset
    from damoc.demo.builtin import demo_data_dir
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo

    zoo = ensure_zoo(default_zoo_dir())
    scorer = str(zoo / args.scorer / "chat") if (zoo / args.scorer).is_dir() else args.scorer
    tokenizers = {p.name: str(p / "chat") for p in sorted(zoo.iterdir()) if (p / "chat").is_dir()}
    from damoc.data.schema import Sample

    lines = (demo_data_dir("qa_long") / "train.jsonl").read_text().splitlines()[: args.n]
    samples = [Sample(id=str(i), **{k: v for k, v in json.loads(line).items() if k in ("instruction", "input",
                                                                                      "output")})
               for i, line in enumerate(lines)]
    rows = []
    for rate in [float(r) for r in args.rates.split(",")]:
        _, stats = compress_dataset(samples, scorer_model=scorer, rate=rate, bertscore_threshold=args.threshold,
                                    answer_scoring=args.answer_scoring, instruction_rate=args.instruction_rate,
                                    tokenizer_paths=tokenizers)
        row = {"rate": rate, "token_ratio_before_gate": None, "token_ratio": stats["token_ratio"],
               "gate_pass_rate": stats["gate_pass_rate_before_rewrite"], "mean_bertscore": stats["mean_bertscore"],
               "tokens_per_second": stats["tokens_per_second"],
               "parts": {k: round(v["token_ratio"], 3) for k, v in stats["parts"].items()},
               "per_tokenizer": {k: round(v["token_ratio"], 3) for k, v in stats["tokenizers"].items()}}
        # kept tokens if every sample used its compression (no fallback): the compressor's own ratio
        _, raw = compress_dataset(samples, scorer_model=scorer, rate=rate, bertscore_threshold=0.0,
                                  answer_scoring=args.answer_scoring, instruction_rate=args.instruction_rate)
        row["token_ratio_before_gate"] = raw["token_ratio"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| rate | kept tokens (compressed) | kept tokens after gate fallback | gate pass | mean BERTScore | "
          "tokens/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']} | {r['token_ratio_before_gate']:.3f} | {r['token_ratio']:.3f} | "
              f"{r['gate_pass_rate']:.2f} | {r['mean_bertscore']:.3f} | {r['tokens_per_second']:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
