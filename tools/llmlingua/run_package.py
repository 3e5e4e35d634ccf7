"""Run the `llmlingua` package's PromptCompressor on texts prepared by benchmarks/bench_compress.py.

Runs INSIDE the llmlingua venv (tools/llmlingua/make_venv.sh: transformers 4.44.2), so it imports nothing
from damoc. Usage: python run_package.py JOB.json OUT.json, where JOB.json is
  {"model": DIR, "work": DIR, "mode": "llmlingua" | "longllmlingua", "options": {compress_prompt kwargs},
   "items": [{"sentences": [str, ...], "rate": float, "question": str}, ...]}
and OUT.json receives {"texts": [compressed text per item], "seconds": compression wall time}.
A zoo checkpoint saved by transformers 5 is re-described for 4.44 in `work` (weights linked, not copied).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def legacy_checkpoint(model: Path, work: Path) -> Path:
    """A view of `model` that transformers 4.44 loads: fast tokenizer class named, rope_theta top-level."""
    work.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.name not in ("config.json", "tokenizer_config.json", "tokenizer.json") and not (work / f.name).exists():
            os.symlink(f.resolve(), work / f.name)
    config = json.loads((model / "config.json").read_text())
    rope = config.pop("rope_parameters", None) or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    config["torch_dtype"] = config.pop("dtype", "float32")
    (work / "config.json").write_text(json.dumps(config))
    tok = json.loads((model / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):
        tok.pop(key, None)
    (work / "tokenizer_config.json").write_text(json.dumps(tok))
    # tokenizers < 0.20 (pinned by transformers 4.44) reads BPE merges as "a b" strings, not [a, b] pairs.
    spec = json.loads((model / "tokenizer.json").read_text())
    merges = spec.get("model", {}).get("merges")
    if merges and isinstance(merges[0], list):
        spec["model"]["merges"] = [" ".join(pair) for pair in merges]
    (work / "tokenizer.json").write_text(json.dumps(spec))
    return work


def main(job_path: str, out_path: str) -> int:
    import torch
    from llmlingua import PromptCompressor

    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    model = legacy_checkpoint(Path(job["model"]), Path(job["work"]))
    compressor = PromptCompressor(model_name=str(model), device_map="cpu")
    texts = []
    started = time.perf_counter()
    for item in job["items"]:
        if item["rate"] >= 1.0 or not item["sentences"]:
            texts.append(" ".join(item["sentences"]))
            continue
        question = item.get("question", "")
        # LongLLMLingua ranks by the question; without one the package refuses, so rank as LLMLingua does.
        options = job["options"] if question or job["mode"] != "longllmlingua" else job.get("fallback_options", {})
        # the budget is the sentences' own tokens x rate (its `rate` would also count the question's tokens)
        target = item["rate"] * sum(compressor.get_token_length(s) for s in item["sentences"])
        result = compressor.compress_prompt(item["sentences"], question=question, target_token=target,
                                            concate_question=False, **options)
        texts.append(" ".join(result["compressed_prompt"].split()))
    Path(out_path).write_text(json.dumps({"texts": texts, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
