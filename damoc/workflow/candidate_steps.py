"""Per-candidate steps: prune+merge, fine-tune, evaluate.

A step never raises for a candidate's own failure: `run_stage` records it in the candidate's result, which
travels inside the output model artifact; later steps see the failure and pass it on, so one broken
checkpoint is reported as failed in the ranking instead of failing the whole run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from damoc.config import Candidate, RunConfig
from damoc.data.records import read_samples
from damoc.data.schema import Sample
from damoc.results import CandidateResult
from damoc.workflow.model_sources import model_in_artifact, resolve_model_source
from damoc.workflow.outcome import read_result, write_model_ref, write_result
from damoc.workflow.stage_switches import pruning_enabled
from damoc.workflow.step_runner import StageSkipped, error_summary, run_stage


def _pass_on_failure(result: CandidateResult, model_out: Path) -> bool:
    if result.status != "failed":
        return False
    model_out.mkdir(parents=True, exist_ok=True)
    write_result(model_out, result)
    return True


def _layer_count(path: str, trust_remote_code: bool) -> int | None:
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve_model_source(path), trust_remote_code=trust_remote_code)
        return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    except Exception:  # noqa: BLE001 — only for the report; training will say what is wrong with the checkpoint
        return None


def _prune_damoc(cfg: RunConfig, cand: Candidate, samples: list[Sample], out: Path,
                 progress: bool) -> dict[str, Any]:
    from damoc.pruning.prune import prune_checkpoint

    p = cfg.pruning
    return prune_checkpoint(
        resolve_model_source(cand.path), resolve_model_source(cand.base_path), samples[: p.calibration_samples],
        out, threshold=p.threshold, keep_fraction=p.merge_keep_fraction, max_prune_fraction=p.max_prune_fraction,
        rule=p.rule, target_fraction=p.target_fraction, sparsity_reading=p.merge_sparsity_reading,
        coefficient=p.merge_coefficient, merge_alpha=p.merge_alpha, merge_target=p.merge_target,
        min_layers_kept=p.min_layers_kept, protect_first_last=p.protect_first_last,
        trust_remote_code=cand.trust_remote_code, progress=progress, max_length=cfg.training.max_length,
        chat_template=cfg.training.chat_template)


def _prune_laco(cfg: RunConfig, cand: Candidate, samples: list[Sample], out: Path, progress: bool) -> dict[str, Any]:
    from damoc.pruning.laco import LacoSettings, laco_prune_checkpoint

    p = cfg.pruning
    settings = LacoSettings(layers_per_merge=p.laco_layers_per_merge, interval=p.laco_interval,
                            threshold=p.laco_threshold, lowest_layer=p.laco_lowest_layer,
                            max_prune_fraction=p.max_prune_fraction, min_layers_kept=p.min_layers_kept,
                            protect_first_last=p.protect_first_last)
    return laco_prune_checkpoint(resolve_model_source(cand.path), samples[: p.laco_calibration_samples], out,
                                 settings=settings, chat_template=cfg.training.chat_template,
                                 trust_remote_code=cand.trust_remote_code, max_length=cfg.training.max_length,
                                 progress=progress)


def prune_step(cfg: RunConfig, candidate: dict[str, Any], calibration_path: Path, model_out: Path,
               progress: bool = True) -> CandidateResult:
    """Prune + merge one candidate. A candidate that cannot be pruned (no base checkpoint, an architecture the
    pruner does not know, a pruning error) is trained with all its layers and flagged — never dropped: grid
    search may rank it first, and its unpruned advantage is shown beside its score."""
    cand = Candidate.model_validate(candidate)
    model_out.mkdir(parents=True, exist_ok=True)
    result = CandidateResult(candidate=cand.name)

    def unpruned(reason: str, layers: int | None = None) -> None:
        write_model_ref(model_out, cand.path)
        layers = layers or _layer_count(cand.path, cand.trust_remote_code)
        result.flags.append(f"unpruned ({reason}): trained with all {layers or '?'} layers while pruned rivals "
                            "lost some; its score has that advantage")
        raise _Unpruned(reason, layers)

    def body() -> dict[str, Any]:
        if not pruning_enabled(cfg):
            write_model_ref(model_out, cand.path)
            raise StageSkipped(f"mode={cfg.mode}" if cfg.mode != "damoc" else "pruning disabled")
        if cfg.pruning.needs_base and not cand.base_path:
            unpruned("no base_path: pruning needs a base/chat pair")
        samples = read_samples(calibration_path)
        try:
            prune = _prune_laco if cfg.pruning.method == "laco" else _prune_damoc
            stats = prune(cfg, cand, samples, model_out / "checkpoint", progress)
        except Exception as err:  # noqa: BLE001 — fall back to the unpruned checkpoint, flagged
            layers = _layer_count(cand.path, cand.trust_remote_code)
            if layers is None:
                raise  # the chat checkpoint itself is unreadable: training it would fail too
            unpruned(error_summary(err), layers)  # the hint on how to fix is in the log
        write_model_ref(model_out, str(model_out / "checkpoint"))
        return stats

    stage = run_stage("prune", body, capture_failure=True)
    result.record(stage)
    write_result(model_out, result)
    return result


class _Unpruned(StageSkipped):
    """Pruning does not apply to this candidate; it goes on with all its layers (flagged)."""

    def __init__(self, reason: str, layers: int | None):
        super().__init__(f"trained unpruned: {reason}",
                         {"unpruned": True, "num_layers_before": layers, "num_layers_after": layers})


def finetune_step(cfg: RunConfig, candidate: dict[str, Any], model_in: Path, train_path: Path,
                  model_out: Path, progress: bool = True, callbacks: Sequence[Any] | None = None) -> CandidateResult:
    """callbacks: extra TrainerCallbacks (the benchmark's learning curve); only the in-process launcher runs the
    Trainer in this process, so other launchers refuse them."""
    from damoc.training.launchers import LAUNCHERS

    if callbacks and cfg.training.launcher != "in_process":
        raise ValueError(f"training callbacks need training.launcher: in_process, not {cfg.training.launcher!r}")
    cand = Candidate.model_validate(candidate)
    result = read_result(model_in, cand.name)
    if _pass_on_failure(result, model_out):
        return result

    def body() -> dict[str, Any]:
        from damoc.training.methods import training_for  # the candidate's own method (training.method: both)

        launcher = LAUNCHERS.get(cfg.training.launcher)
        extra = {"callbacks": callbacks} if callbacks else {}
        return launcher.train(model_in_artifact(model_in), read_samples(train_path), model_out,
                              training_for(cfg.training.for_mode(cfg.mode), cand),  # proxy_steps in damoc
                              trust_remote_code=cand.trust_remote_code, progress=progress, candidate=cand.name,
                              **extra)

    result.record(run_stage("train", body, capture_failure=True))
    model_out.mkdir(parents=True, exist_ok=True)
    write_result(model_out, result)
    return result


def _sanity_flags(result: CandidateResult) -> None:
    """Scores that should not be read as they are: a diverged training run, answers that are mostly empty."""
    if result.diverged():
        result.flags.append(f"training diverged (loss {result.stages['train'].stats.get('train_loss')}): its "
                            "score is not a measure of the candidate; lower training.learning_rate")
    ev = result.stages.get("evaluate")
    if ev is not None and ev.status == "ok":
        rows, empty = ev.stats.get("samples") or 0, ev.stats.get("empty_predictions") or 0
        if rows and empty / rows >= 0.5:
            result.flags.append(f"{empty} of {rows} generated answers are empty: the metric is at its floor")


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
                              max_length=cfg.training.max_length,
                              predict=cfg.evaluation.predict or cfg.mode != "damoc",  # grid search needs the metric
                              chat_template=cfg.training.chat_template,
                              trust_remote_code=cand.trust_remote_code, progress=progress)

    stage = run_stage("evaluate", body, capture_failure=True)
    result.record(stage)
    _sanity_flags(result)
    if stage.status == "ok":
        key = "loglik" if cfg.rank_by == "loglik" else "score"
        result.score = stage.stats.get(key)
        if result.score is None:  # e.g. an evaluator without log-likelihoods: say so instead of ranking blind
            result.status, result.error = "failed", f"evaluate: no '{key}' reported (evaluation.rank_by)"
    return result
