"""The `llmlingua` package's PromptCompressor on the bench's samples, run in its own venv as a subprocess.

Each sample's question/context and answer are compressed as the budget controller splits them (instruction
protected), each part given to the package as its list of sentences (the demonstration-level filter then
works on sentences, as our llmlingua mode does). The package counts its budget in the same tiny model's
tokenizer (it loads that model); tokens/s divides the sample tokens by the package's compression time only.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from damoc.data.schema import Sample

HERE = Path(__file__).resolve().parent.parent
DEFAULT_VENV = HERE / ".cache" / "llmlingua-venv"
# PromptCompressor.compress_prompt options per mode: coarse budget x1.5 (the paper's k; our coarse_factor was 1.5
# until 1.0 measured better), LongLLMLingua's question-aware ranking, contrastive token scores and dynamic ratio
# 0.3 as our longllmlingua defaults.
OPTIONS = {
    "llmlingua": {"rank_method": "llmlingua", "context_budget": "*1.5"},
    "longllmlingua": {"rank_method": "longllmlingua", "condition_in_question": "after_condition",
                      "condition_compare": True, "dynamic_context_compression_ratio": 0.3,
                      "context_budget": "*1.5", "reorder_context": "original"},
}


def sentences(text: str) -> list[str]:
    from damoc.compression.coarse import sentence_spans
    from damoc.compression.compressor import split_words

    words, gaps = split_words(text)
    return [" ".join(words[s:e]) for s, e in sentence_spans(words, gaps)]


def venv_problem(venv: Path) -> str | None:
    """Why the llmlingua venv cannot be used, or None."""
    if not (venv / "bin" / "python").exists():
        return f"{venv} does not exist: run `make llmlingua-venv` (tools/llmlingua/make_venv.sh)"
    if not (venv / "tiktoken-cache").is_dir():
        return f"{venv}/tiktoken-cache is missing: rerun tools/llmlingua/make_venv.sh"
    return None


def run_package(samples: Sequence[Sample], part_rates: Sequence[dict[str, float]], model: str, mode: str,
                venv: Path = DEFAULT_VENV) -> tuple[list[Sample], float]:
    """(compressed samples, compression seconds) from the package in `mode` (llmlingua | longllmlingua)."""
    items, where = [], []
    for k, (sample, rates) in enumerate(zip(samples, part_rates)):
        questions = {"input": sample.instruction,
                     "output": "\n".join(p for p in (sample.instruction, sample.input) if p)}
        for part in ("input", "output"):
            items.append({"sentences": sentences(getattr(sample, part)), "rate": rates[part],
                          "question": questions[part] if mode == "longllmlingua" else ""})
            where.append((k, part))
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"model": model, "work": str(Path(tmp) / "model"), "mode": mode,
                                   "options": OPTIONS[mode], "fallback_options": OPTIONS["llmlingua"],
                                   "items": items}))
        env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(venv / "tiktoken-cache"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
        proc = subprocess.run([str(venv / "bin" / "python"), str(HERE / "tools" / "llmlingua" / "run_package.py"),
                               str(job), str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"llmlingua package run failed: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads(out.read_text())
    parts: list[dict[str, str]] = [{} for _ in samples]
    for (k, part), text in zip(where, result["texts"]):
        parts[k][part] = text
    out_samples = [dataclasses.replace(s, input=p["input"], output=p["output"])
                   for s, p in zip(samples, parts)]
    return out_samples, float(result["seconds"])
