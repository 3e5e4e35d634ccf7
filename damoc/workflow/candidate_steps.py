"""Per-candidate steps: prune+merge, fine-tune, evaluate.

A step never raises for a candidate's own failure: `run_stage` records it in the candidate's result, which
travels inside the output model artifact; later steps see the failure and pass it on, so one broken
checkpoint is reported as failed in the ranking instead of failing the whole run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from damoc.config import Candidate, RunConfig
from damoc.data.records import read_samples
from damoc.results import CandidateResult
from damoc.training.prompt import format_prompt
from damoc.workflow.model_sources import model_in_artifact, resolve_model_source
from damoc.workflow.outcome import read_result, write_model_ref, write_result
from damoc.workflow.stage_switches import pruning_enabled
from damoc.workflow.step_runner import StageSkipped, run_stage


def _pass_on_failure(result: CandidateResult, model_out: Path) -> bool:
    if result.status != "failed":
        return False
    model_out.mkdir(parents=True, exist_ok=True)
    write_result(model_out, result)
    return True


def prune_step(cfg: RunConfig, candidate: dict[str, Any], calibration_path: Path, model_out: Path,
               progress: bool = True) -> CandidateResult:
    cand = Candidate.model_validate(candidate)
    model_out.mkdir(parents=True, exist_ok=True)

    def body() -> dict[str, Any]:
        if not pruning_enabled(cfg) or not cand.base_path:
            write_model_ref(model_out, cand.path)
            raise StageSkipped(f"mode={cfg.mode}" if cfg.mode != "damoc" else (
                "pruning disabled" if not cfg.pruning.enabled else "no base_path: pruning needs a base/chat pair"))
        from damoc.pruning.prune import prune_checkpoint

        calibration = [format_prompt(s.instruction, s.input) + s.output
                       for s in read_samples(calibration_path)[: cfg.pruning.calibration_samples]]
        stats = prune_checkpoint(
            resolve_model_source(cand.path), resolve_model_source(cand.base_path), calibration,
            model_out / "checkpoint", threshold=cfg.pruning.threshold,
            keep_fraction=cfg.pruning.merge_keep_fraction, max_prune_fraction=cfg.pruning.max_prune_fraction,
            trust_remote_code=cand.trust_remote_code, progress=progress)
        write_model_ref(model_out, str(model_out / "checkpoint"))
        return stats

    result = CandidateResult(candidate=cand.name).record(run_stage("prune", body, capture_failure=True))
    write_result(model_out, result)
    return result


def finetune_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, train_path: Path,
                  model_out: Path, progress: bool = True) -> CandidateResult:
    from damoc.training.launchers import LAUNCHERS

    cand = Candidate.model_validate(candidate)
    result = read_result(model_in, cand.name)
    if _pass_on_failure(result, model_out):
        return result

    def body() -> dict[str, Any]:
        launcher = LAUNCHERS.get(cfg.training.launcher)
        return launcher.train(model_in_artifact(model_in), read_samples(train_path), model_out, cfg.training,
                              trust_remote_code=cand.trust_remote_code, progress=progress)

    result.record(run_stage("train", body, capture_failure=True))
    model_out.mkdir(parents=True, exist_ok=True)
    write_result(model_out, result)
    return result


def evaluate_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, eval_path: Path,
                  progress: bool = True) -> CandidateResult:
    """The candidate's final result (one entry of the fan-in)."""
    cand = Candidate.model_validate(candidate)
    result = read_result(model_in, cand.name)
    if result.status == "failed":
        return result

    def body() -> dict[str, Any]:
        from damoc.evaluation.evaluate import evaluate_model

        return evaluate_model(str(model_in), read_samples(eval_path), cfg.data.task,
                              max_new_tokens=cfg.evaluation.max_new_tokens, batch_size=cfg.evaluation.batch_size,
                              trust_remote_code=cand.trust_remote_code, progress=progress)

    stage = run_stage("evaluate", body, capture_failure=True)
    result.record(stage)
    if stage.status == "ok":
        result.score = stage.stats["score"]
    return result
