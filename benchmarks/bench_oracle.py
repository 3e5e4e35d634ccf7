"""What limits compression: the BERTScore gate, or the perplexity compressor? An oracle decides.

On qa_filler demo rows (qa_long wrapped in greetings, thanks, restated questions, disclaimers and sign-offs,
every filler sentence known from the generator) the oracle removes exactly the filler. Its BERTScore against
the original, with the gate's embedding (all-MiniLM-L6-v2) at every layer, raw and rescaled against a
baseline made offline (mean F1 of unrelated text pairs), is the score distribution of a meaning-preserving
compression; meaning-changing edits (a fact sentence dropped, another row's answer, random word deletion at the
oracle's kept fraction) show what a threshold must reject. Then the perplexity compressor at the oracle's kept
fraction: does it pass, and does it remove the filler?

    python benchmarks/bench_oracle.py [--n 200] [--doc docs/benchmarks/oracle.md] [--out docs/benchmarks/oracle.json]
        [--no-compressor]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from difflib import SequenceMatcher
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GATE = 0.9
PRESERVING = ("oracle", "half_filler", "filler_swapped")
CHANGING = ("content_drop", "fact_swap", "random_drop")


def _q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p * (len(s) - 1)))))]


def _auc(pos: list[float], neg: list[float]) -> float:
    """P(a meaning-preserving edit scores above a meaning-changing one); ties count half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def baseline_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Unrelated general-domain text pairs (the zoo's generic text: no demo facts), for baseline rescaling
    the way bert-score's baselines are made (random pairs of unrelated sentences), offline."""
    from damoc.demo.data import generic_text

    docs = generic_text(60 * 2 * n, seed=seed)
    rng = random.Random(seed)
    return [(docs[rng.randrange(len(docs))], docs[rng.randrange(len(docs))]) for _ in range(n)]


def removed_words(original: str, compressed: str) -> list[bool]:
    """Per original word: removed by the compression (not in a matching block of the word alignment)."""
    a, b = original.split(), compressed.split()
    kept = [False] * len(a)
    for block in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        kept[block.a:block.a + block.size] = [True] * block.size
    return [not k for k in kept]


def compressor_runs(rows: list[dict], rate: float, scorer: str) -> dict[str, dict]:
    """The damoc compressor at the oracle's kept word fraction, gate off (every compression kept, scored here)."""
    from damoc.compression import compress_dataset
    from damoc.demo.filler import filler_mask, oracle_compress

    originals = [oracle_compress(r, str(i))[0] for i, r in enumerate(rows)]
    variants = {"perplexity (all parts at the rate)": {},
                "perplexity, question kept whole": {"question_rate": 1.0}}
    out = {}
    for name, extra in variants.items():
        compressed, stats = compress_dataset(originals, scorer_model=scorer, rate=rate, bertscore_threshold=0.0,
                                             budget_unit="words", **extra)
        filler_removed = content_removed = filler_total = content_total = 0
        for row, o, c in zip(rows, originals, compressed):
            mask, gone = filler_mask(row), removed_words(o.text, c.text)
            filler_total += sum(mask)
            content_total += len(mask) - sum(mask)
            filler_removed += sum(1 for f, g in zip(mask, gone) if f and g)
            content_removed += sum(1 for f, g in zip(mask, gone) if not f and g)
        out[name] = {"pairs": [(c.text, o.text) for o, c in zip(originals, compressed)],
                     "word_ratio": stats["word_ratio"], "token_ratio": stats["token_ratio"],
                     "filler_removed": filler_removed / filler_total, "content_removed": content_removed / content_total,
                     "removed_that_is_filler": filler_removed / max(1, filler_removed + content_removed)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="qa_filler training rows")
    parser.add_argument("--layers", default="1,2,3,4,5,6")
    parser.add_argument("--scorer", default="tiny-llama", help="zoo model (its chat checkpoint) or a dir")
    parser.add_argument("--no-compressor", action="store_true", help="only the gate calibration (no zoo needed)")
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--from-json", type=Path, help="re-render --doc from an earlier --out (nothing rerun)")
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        result["layers"] = {int(k): v for k, v in result["layers"].items()}
        text = report(result, args)
        print(text)
        if args.doc:
            args.doc.write_text(text + "\n", encoding="utf-8")
        return 0

    import torch

    torch.set_num_threads(1)
    from damoc.compression.gate import bertscore_texts, rescale
    from damoc.demo.filler import edits, filler_dataset, filler_word_share

    rows, _ = filler_dataset(args.n, 0, seed=0)
    pairs = edits(rows)
    oracle_kept = statistics.mean(len(c.split()) / len(r.split()) for c, r in pairs["oracle"])
    comp = {}
    if not args.no_compressor:
        from damoc.demo.zoo import default_zoo_dir, ensure_zoo

        zoo = ensure_zoo(default_zoo_dir())
        scorer = str(zoo / args.scorer / "chat") if (zoo / args.scorer).is_dir() else args.scorer
        comp = compressor_runs(rows, round(oracle_kept, 3), scorer)
    layers = [int(x) for x in args.layers.split(",")]
    base = baseline_pairs(args.n)
    result: dict = {"n": args.n, "filler_word_share": statistics.mean(map(filler_word_share, rows)),
                    "oracle_word_ratio": oracle_kept, "layers": {}, "compressor": {
                        k: {m: v for m, v in c.items() if m != "pairs"} for k, c in comp.items()}}
    for layer in layers:
        scores = {k: bertscore_texts([c for c, _ in v], [r for _, r in v], layer=layer) for k, v in pairs.items()}
        for k, c in comp.items():
            scores[k] = bertscore_texts([x for x, _ in c["pairs"]], [r for _, r in c["pairs"]], layer=layer)
        baseline = statistics.mean(bertscore_texts([a for a, _ in base], [b for _, b in base], layer=layer))
        preserving = [s for k in PRESERVING for s in scores[k]]
        threshold = _q(scores["oracle"], 0.10)  # 90% of meaning-preserving (oracle) compressions pass
        entry = {"baseline": baseline, "calibrated_threshold": threshold,
                 "calibrated_threshold_rescaled": rescale(threshold, baseline),
                 "auc_oracle_vs_content_drop": _auc(scores["oracle"], scores["content_drop"]),
                 "auc_preserving_vs_changing": _auc(preserving, [s for k in CHANGING for s in scores[k]]),
                 "edits": {}}
        for k, v in scores.items():
            entry["edits"][k] = {"mean": statistics.mean(v), "p10": _q(v, 0.1), "p50": _q(v, 0.5), "p90": _q(v, 0.9),
                                 "pass_0.9": sum(s >= GATE for s in v) / len(v),
                                 "pass_0.9_rescaled": sum(rescale(s, baseline) >= GATE for s in v) / len(v),
                                 "pass_calibrated": sum(s >= threshold for s in v) / len(v)}
        result["layers"][layer] = entry
        print(json.dumps({"layer": layer, "baseline": round(baseline, 3), "threshold": round(threshold, 3),
                          **{k: round(e["pass_0.9"], 2) for k, e in entry["edits"].items()}}), flush=True)
    best = max(layers, key=lambda l: result["layers"][l]["auc_oracle_vs_content_drop"])
    result["best_layer"] = best
    text = report(result, args)
    print(text)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(text + "\n", encoding="utf-8")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def report(r: dict, args) -> str:
    last = max(r["layers"])
    g, b = r["layers"][last], r["layers"][r["best_layer"]]
    o = g["edits"]["oracle"]
    lines = [
        "# Oracle compression: is it the gate or the compressor?", "",
        f"`make bench-oracle` (`python benchmarks/bench_oracle.py --n {r['n']}`): {r['n']} qa_filler demo rows "
        f"(qa_long wrapped in greetings, thanks, restated questions, disclaimers and sign-offs; "
        f"{r['filler_word_share']:.0%} of the words are filler, every filler sentence known from the generator). "
        f"The oracle removes exactly the filler (kept words {r['oracle_word_ratio']:.3f}). BERTScore F1 with "
        "all-MiniLM-L6-v2 (the gate's default model), no idf, per layer; *rescaled* = (F1 - b) / (1 - b) with b "
        "the mean F1 of unrelated general-domain text pairs (the zoo's generic text, made offline).", "",
        "## Finding", "",
        f"- **The oracle fails the shipped gate**: at layer {last} (the default) its BERTScore is median "
        f"{o['p50']:.3f} (p10 {o['p10']:.3f}, p90 {o['p90']:.3f}); {o['pass_0.9']:.0%} of the oracle compressions "
        f"pass 0.9. Removing nothing but filler cannot reach 0.9 with this embedding: the gate, not only the "
        "compressor, blocks compression of filler-heavy rows." if o["pass_0.9"] < 0.9 else
        f"- **The oracle passes the shipped gate**: {o['pass_0.9']:.0%} of the oracle compressions pass 0.9 at "
        f"layer {last} (median {o['p50']:.3f}).",
        f"- A calibrated threshold (the 10th percentile of the oracle's scores, so 90% of meaning-preserving "
        f"compressions pass) is **{g['calibrated_threshold']:.3f}** at layer {last} "
        f"({g['calibrated_threshold_rescaled']:.3f} rescaled, baseline {g['baseline']:.3f}); at it "
        + ", ".join(f"{k} {g['edits'][k]['pass_calibrated']:.0%}" for k in CHANGING)
        + " of the meaning-changing edits pass. "
        + (f"The last layer also separates the oracle from a dropped fact best of all layers (AUC "
           f"{g['auc_oracle_vs_content_drop']:.2f}; a dropped fact of 2-4 is the hardest edit to tell apart)."
           if r["best_layer"] == last else
           f"The layer separating the oracle from a dropped fact best is layer {r['best_layer']} (AUC "
           f"{b['auc_oracle_vs_content_drop']:.2f} vs {g['auc_oracle_vs_content_drop']:.2f} at layer {last}); there "
           f"the threshold is {b['calibrated_threshold']:.3f} and lets through "
           + ", ".join(f"{k} {b['edits'][k]['pass_calibrated']:.0%}" for k in CHANGING) + "."),
    ]
    for name, c in r["compressor"].items():
        e = g["edits"][name]
        lines.append(f"- The {name} at the oracle's kept fraction (kept words {c['word_ratio']:.3f}): "
                     f"{e['pass_0.9']:.0%} pass 0.9, {e['pass_calibrated']:.0%} pass the calibrated "
                     f"{g['calibrated_threshold']:.3f} (median BERTScore {e['p50']:.3f} vs the oracle's {o['p50']:.3f}); "
                     f"it removed {c['filler_removed']:.0%} of the filler words and {c['content_removed']:.0%} of "
                     f"the content words ({c['removed_that_is_filler']:.0%} of what it removed was filler).")
    lines += ["", f"## Score distribution per edit (layer {last}, the gate's default)", "",
              "| edit | meaning | mean | p10 | p50 | p90 | pass 0.9 | pass 0.9 rescaled | pass calibrated |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k, e in g["edits"].items():
        kind = "kept" if k in PRESERVING else ("changed" if k in CHANGING else "compressor")
        lines.append(f"| {k} | {kind} | {e['mean']:.3f} | {e['p10']:.3f} | {e['p50']:.3f} | {e['p90']:.3f} | "
                     f"{e['pass_0.9']:.0%} | {e['pass_0.9_rescaled']:.0%} | {e['pass_calibrated']:.0%} |")
    lines += ["", "## Per layer", "",
              "| layer | baseline b | oracle p50 | oracle pass 0.9 | calibrated threshold (raw / rescaled) | "
              "AUC oracle vs content_drop | AUC kept vs changed | content_drop / fact_swap / random_drop pass at calibrated |",
              "|---|---|---|---|---|---|---|---|"]
    for layer, e in sorted(r["layers"].items()):
        ed = e["edits"]
        lines.append(f"| {layer} | {e['baseline']:.3f} | {ed['oracle']['p50']:.3f} | {ed['oracle']['pass_0.9']:.0%} | "
                     f"{e['calibrated_threshold']:.3f} / {e['calibrated_threshold_rescaled']:.3f} | "
                     f"{e['auc_oracle_vs_content_drop']:.2f} | {e['auc_preserving_vs_changing']:.2f} | "
                     + " / ".join(f"{ed[k]['pass_calibrated']:.0%}" for k in CHANGING) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
