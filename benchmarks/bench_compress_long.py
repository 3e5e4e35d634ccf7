"""Long-row compression benchmark: is compressing one row linear in its length? (issue 12, defect 2)

Compresses ONE row whose input (the iteratively compressed part: each segment scored given the compressed
prefix, KV-cached) or output (question-conditioned answer scoring) holds N words, for N in --sizes, with the
project's compressor (damoc.compression.compress_sample) and a tiny zoo scorer, and prints seconds, words/s
and the time per word relative to the smallest size (linear cost = ~1.0; quadratic = grows with N).

    python benchmarks/bench_compress_long.py [--sizes 10000,100000,1000000] [--part input|output]
        [--rate 0.5] [--scorer tiny-llama] [--out docs/benchmarks/compress_long.md]

The text is demo-data words cycled to length (the scorer's cost does not depend on what the words say).
A progress line (stderr) shows the elapsed time of the size being compressed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HEARTBEAT_S = 10.0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: expected comma-separated word counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes: every size must be at least 1, got {text!r}")
    return sizes


def long_text(n_words: int, source: list[str]) -> str:
    """n_words words cycled from source, in paragraphs of 100 words (realistic gaps for the word splitter)."""
    words = [source[i % len(source)] for i in range(n_words)]
    return "\n\n".join(" ".join(words[i:i + 100]) for i in range(0, n_words, 100))


class Progress:
    """A `\\r`-updated stderr line with the elapsed time, refreshed every HEARTBEAT_S seconds."""

    def __init__(self, label: str) -> None:
        self.label, self.start, self._stop = label, time.perf_counter(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            print(f"\r  {self.label}: {time.perf_counter() - self.start:.0f} s elapsed", end="", file=sys.stderr,
                  flush=True)

    def __enter__(self) -> "Progress":
        print(f"  {self.label}: started", file=sys.stderr, flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        print(f"\r  {self.label}: done in {time.perf_counter() - self.start:.1f} s", file=sys.stderr, flush=True)


def per_word_ratios(rows: list[dict], key: str = "cpu_seconds") -> list[float]:
    """Time per word of each row divided by that of the first (smallest) row: 1.0 everywhere = linear.
    CPU seconds by default: on a shared machine wall time also measures the neighbours."""
    base = rows[0][key] / rows[0]["words"]
    return [(r[key] / r["words"]) / base for r in rows]


def markdown(rows: list[dict], args: argparse.Namespace, scorer: str) -> str:
    lines = [
        "# Long-row compression: time against row length",
        "",
        f"Command: `python benchmarks/bench_compress_long.py --sizes {','.join(str(r['words']) for r in rows)} "
        f"--part {args.part} --rate {args.rate}` (via `make bench-compress-long`), {date.today()}, "
        f"{platform.machine()} {os.cpu_count()} CPUs (shared), torch threads {args.threads}, scorer `{scorer}`.",
        "",
        f"One row whose `{args.part}` holds N words (demo-data words cycled), compressed by "
        "`damoc.compression.compress_sample` to rate "
        f"{args.rate}. `time/word vs {rows[0]['words']:,}` is the time per word divided by that of the smallest "
        "row, in CPU seconds of this process (wall time on a shared machine also counts the neighbours' load; "
        "both are listed): ~1.0 at every size means the cost is linear in the row length (a cost quadratic "
        "in the length would multiply it by the size ratio).",
        "",
        f"| words | scorer tokens | wall s | CPU s | words/s (wall) | kept words | CPU time/word vs "
        f"{rows[0]['words']:,} | wall time/word vs {rows[0]['words']:,} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, ratio, wall in zip(rows, per_word_ratios(rows), per_word_ratios(rows, "seconds")):
        lines.append(f"| {row['words']:,} | {row['tokens']:,} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | "
                     f"{row['words_per_s']:.0f} | {row['kept_words']:,} | {ratio:.2f} | {wall:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--part", choices=["input", "output"], default="input")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--scorer", default="tiny-llama", help="zoo model name (its chat checkpoint) or a dir")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU seconds then measure the work, whatever else runs)")
    parser.add_argument("--out", type=Path, help="write the markdown table here (and a .json beside it)")
    args = parser.parse_args(argv)
    if not 0.0 < args.rate < 1.0:
        parser.error(f"--rate: must be between 0 and 1 (exclusive), got {args.rate}")

    import torch

    torch.set_num_threads(args.threads)
    from damoc.compression import Budget, PerplexityScorer, compress_sample
    from damoc.data.schema import Sample
    from damoc.demo.builtin import demo_data_dir
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo

    zoo = ensure_zoo(default_zoo_dir())
    scorer_path = str(zoo / args.scorer / "chat") if (zoo / args.scorer).is_dir() else args.scorer
    scorer = PerplexityScorer(scorer_path)
    source = [w for line in (demo_data_dir("qa_long") / "train.jsonl").read_text().splitlines()
              for w in " ".join(str(v) for v in json.loads(line).values()).split()]
    budget = Budget(rate=args.rate, instruction_rate=1.0,
                    question_rate=args.rate if args.part == "input" else 1.0,
                    answer_rate=args.rate if args.part == "output" else 1.0)
    rows: list[dict] = []
    for n in args.sizes:
        text = long_text(n, source)
        parts = {"instruction": "Answer the question.", "input": "What is described?", "output": "A report."}
        parts[args.part] = text
        sample = Sample(id="long", **parts)
        tokens = scorer.count_tokens(text)
        with Progress(f"{n:,} words ({tokens:,} tokens)"):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = compress_sample(scorer, sample, budget)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        row = {"words": n, "tokens": tokens, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
               "words_per_s": n / seconds,
               "kept_words": len(getattr(out, args.part).split())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = per_word_ratios(rows)
    print(f"\nCPU time per word relative to {rows[0]['words']:,} words: "
          + ", ".join(f"{r['words']:,}: {x:.2f}" for r, x in zip(rows, ratios)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(rows, args, args.scorer))
        args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
