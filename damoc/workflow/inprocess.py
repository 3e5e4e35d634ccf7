"""Run a selection in this one process: the same steps the KFP components wrap, called in the pipeline's order.

For benchmarks and tests that run many selections: no subprocess per task, and the data stages' outputs can be
shared between runs that only differ in per-candidate settings. The KFP pipeline (kfp.local or a cluster)
stays the product path; this runner must never diverge from its wiring:
prepare -> filter -> compress; per candidate prune(calibration = filtered rows) -> train(compressed rows)
-> evaluate(eval rows); rank (rank_step: selection.json, report.md and report.html, as the KFP rank task).
Resuming (damoc.workflow.stage_cache) is off unless `resume=True` (or DAMOC_RESUME=1): benchmarks that time
their stages get real runs by default.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from damoc.config import RunConfig
from damoc.results import CandidateResult, StageResult
from damoc.workflow.cached_steps import (compress_step, evaluate_step, filter_step, finetune_step, prepare_data,
                                         prune_step)
from damoc.workflow.rank_step import rank_step


@dataclass
class DataStages:
    """The data side of one run: where its files are and what each stage reported."""

    train: Path
    eval: Path
    filtered: Path
    compressed: Path
    results: list[StageResult] = field(default_factory=list)


def run_data_stages(cfg: RunConfig, work: Path, progress: bool = False, *,
                    resume: bool | None = None) -> DataStages:
    work.mkdir(parents=True, exist_ok=True)
    stages = DataStages(work / "train.jsonl", work / "eval.jsonl", work / "filtered.jsonl", work / "compressed.jsonl")
    stages.results.append(prepare_data(cfg, stages.train, stages.eval, resume=resume))
    stages.results.append(filter_step(cfg, stages.train, stages.filtered, progress=progress, resume=resume))
    stages.results.append(compress_step(cfg, stages.filtered, stages.compressed, progress=progress, resume=resume))
    return stages


def run_candidate(cfg: RunConfig, candidate: dict[str, Any], data: DataStages, work: Path,
                  progress: bool = False, *, resume: bool | None = None) -> CandidateResult:
    name = candidate["name"]
    pruned, trained = work / name / "pruned", work / name / "trained"
    prune_step(cfg, candidate, data.filtered, pruned, progress=progress, resume=resume)
    finetune_step(cfg, candidate, pruned, data.compressed, trained, progress=progress, resume=resume)
    return evaluate_step(cfg, candidate, trained, data.eval, progress=progress, resume=resume)


def run_inprocess(cfg: RunConfig, out_dir: str | Path, *, data: DataStages | None = None,
                  progress: bool = False, resume: bool | None = None) -> dict[str, Any]:
    """Run the whole selection here; returns selection.json's document (written to out_dir with report.md and
    report.html).

    data: the outputs of `run_data_stages` from an earlier run with the same data/filter/compression settings
    (their timings are then counted again, as if the stages had run: the cost stays comparable).
    """
    started = time.time()
    out = Path(out_dir)
    work = out / "work"
    reused = data is not None
    if data is None:
        data = run_data_stages(cfg, work, progress=progress, resume=resume)
    results = [run_candidate(cfg, cand.model_dump(), data, work, progress=progress, resume=resume)
               for cand in cfg.candidates]
    started_at = started - sum(s.seconds for s in data.results) if reused else started
    return rank_step(cfg, results, data.results, started_at, out / "selection.json", out / "report.md")
