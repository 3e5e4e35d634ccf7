"""Per-candidate steps: prune+merge, fine-tune, evaluate.

A step never raises for a candidate's own failure: it writes a failure marker into its output model
artifact, and later steps pass it on, so one broken checkpoint is reported as failed in the ranking
instead of failing the whole run.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from damoc.config import Candidate, RunConfig
from damoc.data.records import read_samples
from damoc.training.prompt import format_prompt
from damoc.workflow.models import model_in_artifact, resolve_model_source
from damoc.workflow.outcome import (FAILURE_FILE, STATS_FILE, read_failure, read_stats, write_failure,
                                    write_model_ref, write_stats)
from damoc.workflow.stages import pruning_enabled


def _pass_on_failure(model_in: Path, model_out: Path) -> bool:
    failure = read_failure(model_in)
    if failure is None:
        return False
    model_out.mkdir(parents=True, exist_ok=True)
    for name in (FAILURE_FILE, STATS_FILE):
        if (model_in / name).is_file():
            shutil.copyfile(model_in / name, model_out / name)
    return True


def prune_step(cfg: RunConfig, candidate: dict[str, Any], calibration_path: Path, model_out: Path,
               progress: bool = True) -> dict[str, Any]:
    cand = Candidate.model_validate(candidate)
    model_out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats: dict[str, Any] = {"candidate": cand.name}
    try:
        if not pruning_enabled(cfg) or not cand.base_path:
            reason = f"mode={cfg.mode}" if cfg.mode != "damoc" else (
                "pruning disabled" if not cfg.pruning.enabled else "no base_path: pruning needs a base/chat pair")
            write_model_ref(model_out, cand.path)
            stats["prune"] = {"skipped": True, "reason": reason}
        else:
            from damoc.pruning.prune import prune_checkpoint

            calibration = [format_prompt(s.instruction, s.input) + s.output
                           for s in read_samples(calibration_path)[: cfg.pruning.calibration_samples]]
            stats["prune"] = prune_checkpoint(
                resolve_model_source(cand.path), resolve_model_source(cand.base_path), calibration,
                model_out / "checkpoint", threshold=cfg.pruning.threshold,
                keep_fraction=cfg.pruning.merge_keep_fraction, max_prune_fraction=cfg.pruning.max_prune_fraction,
                trust_remote_code=cand.trust_remote_code, progress=progress)
            write_model_ref(model_out, str(model_out / "checkpoint"))
    except Exception as err:  # noqa: BLE001 — recorded, reported as this candidate's failure
        write_failure(model_out, "prune", err)
    stats["prune_seconds"] = round(time.perf_counter() - started, 3)
    write_stats(model_out, stats)
    return stats


def finetune_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, train_path: Path,
                  model_out: Path, progress: bool = True) -> dict[str, Any]:
    from damoc.training.finetune import TrainSettings, finetune

    cand = Candidate.model_validate(candidate)
    if _pass_on_failure(model_in, model_out):
        return read_stats(model_out)
    stats = read_stats(model_in)
    started = time.perf_counter()
    try:
        settings = TrainSettings(**cfg.training.model_dump())
        stats["train"] = finetune(model_in_artifact(model_in), read_samples(train_path), model_out, settings,
                                  trust_remote_code=cand.trust_remote_code, progress=progress)
    except Exception as err:  # noqa: BLE001
        model_out.mkdir(parents=True, exist_ok=True)
        write_failure(model_out, "train", err)
    stats["train_seconds"] = round(time.perf_counter() - started, 3)
    write_stats(model_out, stats)
    return stats


def evaluate_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, eval_path: Path,
                  progress: bool = True) -> dict[str, Any]:
    """The candidate's final result (one entry of the fan-in)."""
    cand = Candidate.model_validate(candidate)
    stats = read_stats(model_in)
    result: dict[str, Any] = {"candidate": cand.name, "status": "ok", "score": None,
                              "train_seconds": stats.get("train_seconds", 0.0),
                              "prune_seconds": stats.get("prune_seconds", 0.0), "details": stats}
    failure = read_failure(model_in)
    if failure:
        result.update(status="failed", error=f"{failure['stage']}: {failure['error']}")
        return result
    started = time.perf_counter()
    try:
        from damoc.evaluation.evaluate import evaluate_model

        metrics = evaluate_model(str(model_in), read_samples(eval_path), cfg.data.task,
                                 max_new_tokens=cfg.evaluation.max_new_tokens,
                                 batch_size=cfg.evaluation.batch_size,
                                 trust_remote_code=cand.trust_remote_code, progress=progress)
        result["score"] = metrics["score"]
        result["details"]["eval"] = metrics
    except Exception as err:  # noqa: BLE001
        result.update(status="failed", error=f"evaluate: {type(err).__name__}: {err}")
    result["eval_seconds"] = round(time.perf_counter() - started, 3)
    return result
