"""Data-side steps: load+validate, filter, compress. Each writes normalised JSONL and returns a StageResult."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from damoc.config import RunConfig
from damoc.data.io import load_samples
from damoc.data.records import read_samples, write_samples
from damoc.results import StageResult
from damoc.workflow.stage_switches import compression_enabled, filter_enabled
from damoc.workflow.step_runner import StageSkipped, error_summary, run_stage


def prepare_data(cfg: RunConfig, train_out: Path, eval_out: Path, cache_dir: Path | None = None) -> StageResult:
    def body() -> dict[str, Any]:
        fields = cfg.data.fields.model_dump()
        train = load_samples(cfg.data.train, fields, limit=cfg.data.max_train_samples, cache_dir=cache_dir,
                             id_prefix="train-")
        from damoc.evaluation.tasks import TASKS

        evals = load_samples(cfg.data.eval, fields, limit=cfg.data.max_eval_samples, cache_dir=cache_dir,
                             id_prefix="eval-", require_options=TASKS.get(cfg.data.task).kind == "choice")
        write_samples(train, train_out)
        write_samples(evals, eval_out)
        return {"train_samples": len(train), "eval_samples": len(evals), "task": cfg.data.task}

    return run_stage("prepare", body, capture_failure=False)


def _skip(train_in: Path, out: Path, reason: str, stats: dict[str, Any] | None = None) -> None:
    """A stage switched off (grid search, disabled): its output is its input, and the result says why."""
    shutil.copyfile(train_in, out)
    raise StageSkipped(reason, stats)


def filter_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True) -> StageResult:
    def body() -> dict[str, Any]:
        if not filter_enabled(cfg):
            _skip(train_in, out, f"mode={cfg.mode}, method={cfg.filter.method}, ratio={cfg.filter.ratio}")
        from damoc.filtering import filter_samples, get_filter
        from damoc.workflow.model_sources import resolve_model_source

        # scorer-based methods use the run's small LM (the compression scorer) unless their options name one
        needs_scorer = getattr(get_filter(cfg.filter.method), "needs_scorer", False)
        scorer = resolve_model_source(cfg.scorer_model_path()) if needs_scorer else None
        selected, stats = filter_samples(read_samples(train_in), cfg.filter.method, cfg.filter.ratio,
                                         seed=cfg.filter.seed, embedding_model=cfg.filter.embedding_model,
                                         settings=cfg.filter.method_settings(), progress=progress,
                                         scorer_model=scorer, embed=cfg.filter.embed)
        write_samples(selected, out)
        return stats

    return run_stage("filter", body, capture_failure=False)


def _candidate_tokenizers(cfg: RunConfig) -> tuple[dict[str, str], dict[str, str]]:
    """({name: local checkpoint dir} whose tokenizer loads, {name: why not} for local dirs whose does not)."""
    from damoc.hf import load_tokenizer

    usable: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for c in cfg.candidates:
        if not Path(c.path).is_dir():
            continue
        try:
            load_tokenizer(c.path, c.trust_remote_code)
        except Exception as err:  # noqa: BLE001 — that candidate's own steps report its checkpoint
            unreadable[c.name] = error_summary(err)
            continue
        usable[c.name] = c.path
    return usable, unreadable


def compress_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True) -> StageResult:
    def body() -> dict[str, Any]:
        if not compression_enabled(cfg):
            _skip(train_in, out, f"mode={cfg.mode}, enabled={cfg.compression.enabled}, "
                  f"rate={cfg.compression.rate}")
        from damoc.compression import compress_dataset, dataset_kwargs
        from damoc.workflow.model_sources import resolve_model_source

        # token ratios in each candidate's own tokenizer, for candidates whose checkpoint is already local
        # (an s3:// or hub candidate is not downloaded just to count tokens); a candidate whose tokenizer does
        # not load (an empty or broken directory) is left out of those figures — its own steps report it
        tokenizers, unreadable = _candidate_tokenizers(cfg)
        try:
            compressed, stats = compress_dataset(read_samples(train_in),
                                                 scorer_model=resolve_model_source(cfg.scorer_model_path()),
                                                 tokenizer_paths=tokenizers, progress=progress,
                                                 **dataset_kwargs(cfg.compression))
        except Exception as err:  # noqa: BLE001 — a missing or broken scorer must not sink the run
            reason = (f"the scorer {cfg.scorer_model_path()} failed ({error_summary(err)}); every candidate "
                      "trains on the uncompressed rows — set compression.scorer_model")
            print(f"warning: compression fell back: {reason}", file=sys.stderr, flush=True)
            _skip(train_in, out, reason, {"fallback": True})  # after an error: a resumed run tries again
        write_samples(compressed, out)
        extra = {"token_ratio_skipped": unreadable} if unreadable else {}
        return {"scorer_model": cfg.scorer_model_path(), **stats, **extra}

    return run_stage("compress", body, capture_failure=False)
