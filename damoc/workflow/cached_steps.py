"""The pipeline's steps, resumable: each consults the stage cache (damoc.workflow.stage_cache) first.

Same signatures as the steps in data_steps/candidate_steps plus `resume` (None: on when the local runner set
DAMOC_RESUME=1). The KFP components and the in-process runner call these, so both runners resume alike.
A reused stage keeps the seconds it took when it ran (the selection's cost stays comparable) and says
`"reused": true` in its stats. What each stage's key covers is `*_parts` below plus its input artifacts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from damoc import storage
from damoc.config import Candidate, RunConfig
from damoc.results import CandidateResult, StageResult
from damoc.workflow import candidate_steps, data_steps
from damoc.workflow.outcome import read_result, write_result
from damoc.workflow.stage_cache import run_cached
from damoc.workflow.stage_switches import filter_enabled

REUSED = "reused"


# --------------------------------------------------------------------------- what each stage reads

def _filter_parts(cfg: RunConfig) -> dict[str, Any]:
    parts: dict[str, Any] = {"mode": cfg.mode, "filter": cfg.filter.model_dump(mode="json")}
    if filter_enabled(cfg):
        from damoc.filtering import get_filter

        if getattr(get_filter(cfg.filter.method), "needs_scorer", False):
            parts["scorer"] = cfg.scorer_model_path()
    return parts


def _compress_parts(cfg: RunConfig) -> dict[str, Any]:
    return {"mode": cfg.mode, "compression": cfg.compression.model_dump(mode="json"),
            "scorer": cfg.scorer_model_path(), "tokenizers": {c.name: c.path for c in cfg.candidates}}


def _evaluate_parts(cfg: RunConfig, candidate: dict[str, Any]) -> dict[str, Any]:
    return {"mode": cfg.mode, "evaluation": cfg.evaluation.model_dump(mode="json"), "rank_by": cfg.rank_by,
            "task": cfg.data.task, "max_length": cfg.training.max_length,
            "chat_template": cfg.training.chat_template, "candidate": _candidate(candidate)}


def _candidate(candidate: dict[str, Any]) -> dict[str, Any]:
    return Candidate.model_validate(candidate).model_dump(mode="json")


# --------------------------------------------------------------------------- data steps

def _stage_ok(result: StageResult) -> bool:
    """ok or switched off; a stage that fell back after an error (a failed scorer) is rerun next time."""
    return result.status == "ok" or (result.status == "skipped" and not result.stats.get("fallback"))


def _data(stage: str, parts: dict[str, Any], inputs: dict[str, Path], outputs: dict[str, Path], run,
          resume: bool | None) -> StageResult:
    cached = run_cached(stage, parts=parts, inputs=inputs, outputs=outputs, run=run,
                        dump=lambda r: r.model_dump_json(), load=StageResult.model_validate_json,
                        cacheable=_stage_ok, resume=resume)
    if cached.reused:
        cached.value.stats[REUSED] = True
    return cached.value


def prepare_data(cfg: RunConfig, train_out: Path, eval_out: Path, cache_dir: Path | None = None, *,
                 resume: bool | None = None) -> StageResult:
    """Data in the object store is read again every time (its content is not hashed); the stages after it
    still resume, since their keys hash the prepared rows."""
    def run() -> StageResult:
        return data_steps.prepare_data(cfg, train_out, eval_out, cache_dir)

    if storage.is_s3(cfg.data.train) or storage.is_s3(cfg.data.eval):
        resume = False
    return _data("prepare", {"data": cfg.data.model_dump(mode="json")}, {},
                 {"train": train_out, "eval": eval_out}, run, resume)


def filter_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True, *,
                resume: bool | None = None) -> StageResult:
    return _data("filter", _filter_parts(cfg), {"train": train_in}, {"selected": out},
                 lambda: data_steps.filter_step(cfg, train_in, out, progress), resume)


def compress_step(cfg: RunConfig, train_in: Path, out: Path, progress: bool = True, *,
                  resume: bool | None = None) -> StageResult:
    return _data("compress", _compress_parts(cfg), {"train": train_in}, {"compressed": out},
                 lambda: data_steps.compress_step(cfg, train_in, out, progress), resume)


# --------------------------------------------------------------------------- per-candidate steps

def _candidate_ok(result: CandidateResult) -> bool:
    return result.status == "ok"


def _resumed(stage: str, cached: CandidateResult, upstream: CandidateResult) -> CandidateResult:
    """A reused candidate result: this run's earlier stages (their own seconds and reuse marks), this stage
    from the cache, marked reused."""
    stages = {name: s for name, s in upstream.stages.items() if name != stage}
    own = cached.stages[stage].model_copy(deep=True)
    own.stats[REUSED] = True
    cached.stages = {**stages, stage: own}
    return cached


def _candidate_step(stage: str, parts: dict[str, Any], inputs: dict[str, Path], model_out: Path | None,
                    upstream: CandidateResult, run, resume: bool | None) -> CandidateResult:
    cached = run_cached(stage, parts=parts, inputs=inputs, outputs={"model": model_out} if model_out else {},
                        run=run, dump=lambda r: r.model_dump_json(), load=CandidateResult.model_validate_json,
                        cacheable=_candidate_ok, resume=resume)
    if not cached.reused:
        return cached.value
    result = _resumed(stage, cached.value, upstream)
    if model_out is not None:
        write_result(model_out, result)  # a rename: the cache's hard-linked copy is untouched
    return result


def prune_step(cfg: RunConfig, candidate: dict[str, Any], calibration_path: Path, model_out: Path,
               progress: bool = True, *, resume: bool | None = None) -> CandidateResult:
    name = Candidate.model_validate(candidate).name
    return _candidate_step("prune", {"mode": cfg.mode, "pruning": cfg.pruning.model_dump(mode="json"),
                                     "candidate": _candidate(candidate)},
                           {"calibration": calibration_path}, model_out, CandidateResult(candidate=name),
                           lambda: candidate_steps.prune_step(cfg, candidate, calibration_path, model_out,
                                                              progress), resume)


def finetune_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, train_path: Path, model_out: Path,
                  progress: bool = True, *, resume: bool | None = None) -> CandidateResult:
    name = Candidate.model_validate(candidate).name
    return _candidate_step("train", {"training": cfg.training.model_dump(mode="json"),
                                     "candidate": _candidate(candidate)},
                           {"model": model_in, "train": train_path}, model_out, read_result(model_in, name),
                           lambda: candidate_steps.finetune_step(cfg, candidate, model_in, train_path, model_out,
                                                                 progress), resume)


def evaluate_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, eval_path: Path,
                  progress: bool = True, *, resume: bool | None = None) -> CandidateResult:
    name = Candidate.model_validate(candidate).name
    return _candidate_step("evaluate", _evaluate_parts(cfg, candidate), {"model": model_in, "eval": eval_path},
                           None, read_result(model_in, name),
                           lambda: candidate_steps.evaluate_step(cfg, candidate, model_in, eval_path, progress),
                           resume)


def reused_stages(selection: dict[str, Any]) -> tuple[list[str], int]:
    """(the stages of a selection.json that were reused, e.g. 'filter' or 'tiny-llama/train'; all stages)."""
    stats = selection.get("stats") or {}
    entries = [(name, s) for name, s in stats.items() if name != "candidates" and isinstance(s, dict)]
    for cand, stages in (stats.get("candidates") or {}).items():
        entries += [(f"{cand}/{name}", s) for name, s in stages.items() if isinstance(s, dict)]
    return [name for name, s in entries if (s.get("stats") or {}).get(REUSED)], len(entries)
