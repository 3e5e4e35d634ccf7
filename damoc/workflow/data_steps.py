"""Data-side steps: load+validate, filter, compress. Each writes normalised JSONL and returns stats."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from damoc.config import RunConfig
from damoc.data.io import load_samples
from damoc.data.records import read_samples, write_samples
from damoc.workflow.stages import compression_enabled, filter_enabled


def prepare_data(cfg: RunConfig, train_out: Path, eval_out: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    fields = cfg.data.fields.model_dump()
    train = load_samples(cfg.data.train, fields, limit=cfg.data.max_train_samples, cache_dir=cache_dir,
                         id_prefix="train-")
    evals = load_samples(cfg.data.eval, fields, limit=cfg.data.max_eval_samples, cache_dir=cache_dir,
                         id_prefix="eval-")
    write_samples(train, train_out)
    write_samples(evals, eval_out)
    return {"train_samples": len(train), "eval_samples": len(evals), "task": cfg.data.task,
            "seconds": round(time.perf_counter() - started, 3)}


def _pass_through(train_in: Path, out: Path, reason: str, n: int, started: float) -> dict[str, Any]:
    """A stage switched off (grid search, disabled): its output is its input, and the stats say why."""
    shutil.copyfile(train_in, out)
    return {"skipped": True, "reason": reason, "n_in": n, "n_out": n,
            "seconds": round(time.perf_counter() - started, 3)}


def filter_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    samples = read_samples(train_in)
    if not filter_enabled(cfg):
        return _pass_through(train_in, out, f"mode={cfg.mode}, method={cfg.filter.method}, "
                             f"ratio={cfg.filter.ratio}", len(samples), started)
    from damoc.filtering import filter_samples

    selected, stats = filter_samples(samples, cfg.filter.method, cfg.filter.ratio, seed=cfg.filter.seed,
                                     embedding_model=cfg.filter.embedding_model,
                                     graphcut_lambda=cfg.filter.graphcut_lambda, progress=progress)
    write_samples(selected, out)
    return {"skipped": False, **stats, "seconds": round(time.perf_counter() - started, 3)}


def compress_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    samples = read_samples(train_in)
    if not compression_enabled(cfg):
        return _pass_through(train_in, out, f"mode={cfg.mode}, enabled={cfg.compression.enabled}, "
                             f"rate={cfg.compression.rate}", len(samples), started)
    from damoc.compression import compress_dataset
    from damoc.workflow.models import resolve_model_source

    scorer = resolve_model_source(cfg.scorer_model_path())
    compressed, stats = compress_dataset(samples, scorer_model=scorer, rate=cfg.compression.rate,
                                         bertscore_threshold=cfg.compression.bertscore_threshold,
                                         segment_words=cfg.compression.segment_words, progress=progress)
    write_samples(compressed, out)
    return {"skipped": False, "scorer_model": cfg.scorer_model_path(), **stats,
            "seconds": round(time.perf_counter() - started, 3)}
