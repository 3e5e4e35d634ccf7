"""Run benchmark jobs: one candidate through prune -> train -> evaluate, in a pool of single-thread workers.

Tiny models use one core far better than two: two workers with one thread each finish about twice the jobs
of one worker with two threads, and every job is deterministic (one intra-op thread).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def candidate_job(cfg_doc: dict[str, Any], candidate: dict[str, Any], filtered: str, compressed: str,
                  eval_path: str, work: str) -> str:
    """prune -> train -> evaluate for one candidate under `cfg_doc`; the CandidateResult as JSON."""
    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import evaluate_step, finetune_step, prune_step

    cfg = RunConfig.model_validate(cfg_doc)
    root = Path(work)
    prune_step(cfg, candidate, Path(filtered), root / "pruned", progress=False)
    finetune_step(cfg, candidate, root / "pruned", Path(compressed), root / "trained", progress=False)
    result = evaluate_step(cfg, candidate, root / "trained", Path(eval_path), progress=False)
    return result.model_dump_json()


def run_jobs(fn: Callable[..., Any], jobs: Iterable[tuple[Any, tuple]], *, workers: int = 2,
             desc: str = "jobs", on_done: Callable[[Any, Any], None] | None = None) -> dict[Any, Any]:
    """Run fn(*args) for each (key, args); results by key. `on_done(key, result)` runs as each one finishes
    (e.g. to cache it at once, so an interrupted benchmark loses at most the jobs in flight)."""
    jobs = list(jobs)
    results: dict[Any, Any] = {}
    if not jobs:
        return results
    if workers <= 1:
        _init_worker()
        for key, args in tqdm(jobs, desc=desc):
            results[key] = fn(*args)
            if on_done:
                on_done(key, results[key])
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = {pool.submit(fn, *args): key for key, args in jobs}
        from concurrent.futures import as_completed

        for future in tqdm(as_completed(futures), total=len(futures), desc=desc):
            key = futures[future]
            results[key] = future.result()
            if on_done:
                on_done(key, results[key])
    return results
