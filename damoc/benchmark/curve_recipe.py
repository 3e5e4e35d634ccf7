"""Benchmark recipe kind "curve": rank by the extrapolated learning curve, as the rectified-scaling-law
selectors do (AtS, ICML 2024; LensLLM 2025).

Each candidate is pruned and trained ONCE exactly as in the pipeline recipe with the same overrides (so its
`loglik` and `score` are the pipeline recipe's), with a :class:`LoglikCurveCallback` measuring the eval
references' mean log-likelihood at K evenly spaced optimizer steps (the last one is the end of training).
The loss curve (-loglik) is fitted with :mod:`damoc.selection.learning_curve` and extrapolated to the point
grid search's training would reach; that prediction, negated, is the candidate's `curve_loglik`.

The time axis (fixed before any result was seen): the learning-rate area, the sum of the learning rates of the
steps done so far. Both runs use a cosine schedule decaying to zero over their own length, so a proxy's last
steps barely move the weights; on the step axis the flattening looks like saturation, on the lr-area axis
it does not. The target is the lr-area of one whole grid-search run: GRID_TRAINING over all `task.n_train`
rows, ceil(rows / batch) x epochs optimizer steps (75 for 400 rows, 189 for 1000). The step-axis extrapolation
(target: the grid's step count) is kept beside it as `curve_loglik_steps`, for comparison.

Cost: the K curve evaluations are reference log-likelihood passes only (no generation), on the proxy eval
rows; their seconds are taken out of the train stage and reported per candidate and in ``curve_costs`` with
their scored tokens and FLOPs (the last point duplicates the evaluation's own loglik pass).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from damoc.benchmark.ground_truth import summarise, task_data
from damoc.benchmark.runner import run_jobs
from damoc.benchmark.suite import GRID_TRAINING, BenchTask, Recipe, Variant, recipe

CURVE_DEFAULTS = {"points": 4, "axis": "lr_area"}

PAPER_CURVE = recipe("paper-curve")  # defined with the other recipes in suite.RECIPES


def curve_job(doc: dict[str, Any], candidate: dict[str, Any], calibration: str, train_path: str, eval_path: str,
              work: str, points: int) -> dict[str, Any]:
    """prune -> train (with the curve callback) -> evaluate for one candidate: the CandidateResult JSON, the
    curve's points and the proxy's step count."""
    from damoc.config import Candidate, RunConfig
    from damoc.data.records import read_samples
    from damoc.hf import load_tokenizer
    from damoc.training.curve_callback import LoglikCurveCallback
    from damoc.training.finetune import encode_example
    from damoc.training.methods import training_for
    from damoc.workflow.candidate_steps import evaluate_step, finetune_step, prune_step
    from damoc.workflow.model_sources import model_in_artifact
    from damoc.workflow.outcome import write_result

    cfg = RunConfig.model_validate(doc)
    cand = Candidate.model_validate(candidate)
    root = Path(work)
    result = prune_step(cfg, candidate, Path(calibration), root / "pruned", progress=False)
    if result.status == "failed":
        return {"result": result.model_dump_json(), "curve": [], "total_steps": 0}
    settings = training_for(cfg.training, cand)
    tok = load_tokenizer(model_in_artifact(root / "pruned"), cand.trust_remote_code)
    epoch_tokens = sum(len(encode_example(tok, s, settings.max_length, settings.chat_template)["input_ids"])
                       for s in read_samples(train_path))
    callback = LoglikCurveCallback(tok, read_samples(eval_path), k=points, max_length=settings.max_length,
                                   batch_size=cfg.evaluation.batch_size, chat_template=settings.chat_template,
                                   train_tokens=epoch_tokens)
    result = finetune_step(cfg, candidate, root / "pruned", Path(train_path), root / "trained", progress=False,
                           callbacks=[callback])
    train = result.stages["train"]
    curve_seconds = sum(p.seconds for p in callback.points)
    train.seconds = round(max(0.0, (train.seconds or 0.0) - curve_seconds), 3)  # training alone, as elsewhere
    write_result(root / "trained", result)
    result = evaluate_step(cfg, candidate, root / "trained", Path(eval_path), progress=False)
    return {"result": result.model_dump_json(), "curve": callback.records(), "total_steps": callback.total_steps}


def grid_steps(task: BenchTask) -> int:
    """Optimizer steps of one grid-search run: ceil(rows / batch) per epoch (the Trainer's count), x epochs."""
    return math.ceil(task.n_train / GRID_TRAINING["batch_size"]) * GRID_TRAINING["epochs"]


def curve_signals(curve: list[dict[str, Any]], proxy_training: Any, total_steps: int, task: BenchTask
                  ) -> dict[str, Any]:
    """`curve_loglik` (lr-area axis) and `curve_loglik_steps` (step axis) with their fits."""
    from damoc.config import TrainingConfig
    from damoc.selection.learning_curve import extrapolate, lr_area

    if not curve:
        return {"curve_loglik": None, "curve_loglik_steps": None}
    grid = TrainingConfig.model_validate({**GRID_TRAINING, "max_length": task.max_length})
    target_steps = grid_steps(task)
    steps = [p["step"] for p in curve]
    losses = [-p["loglik"] for p in curve]

    def area(tc: Any, total: int, upto: int) -> float:
        return lr_area(tc.lr_scheduler, tc.learning_rate, tc.warmup_ratio, total, upto)

    t_lr = [area(proxy_training, total_steps, s) for s in steps]
    target_lr = area(grid, target_steps, target_steps)
    out: dict[str, Any] = {"curve_target": {"steps": target_steps, "lr_area": target_lr}}
    for name, ts, target in (("curve_loglik", t_lr, target_lr), ("curve_loglik_steps", steps, target_steps)):
        try:
            loss, fit = extrapolate(ts, losses, target)
        except ValueError as err:  # e.g. two points at the same lr area (a constant-zero schedule)
            out[name], out[f"{name}_fit"] = None, {"error": str(err)}
            continue
        out[name] = -loss
        out[f"{name}_fit"] = {"law": fit.law, "params": list(fit.params), "t": list(map(float, ts)),
                              "raw": -fit.raw(target)}
    return out


def _curve_recipe(task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]], root: Path,
                  variant: Variant, workers: int) -> dict[str, Any]:
    from damoc.benchmark import flops
    # recipes.py registers this kind in its KINDS: imported here, not at the top, to avoid an import cycle
    from damoc.benchmark.recipes import _eval_tokens, recipe_config, shared_data_stages
    from damoc.config import RunConfig

    settings = {**CURVE_DEFAULTS, **rec.overrides.get("curve", {})}
    if settings["axis"] != "lr_area":
        raise ValueError(f"recipe {rec.name}: curve.axis {settings['axis']!r}; only 'lr_area' is the primary "
                         "signal (the step axis is always reported as curve_loglik_steps)")
    data = task_data(task, root)
    doc = recipe_config(task, rec, data, candidates, variant)
    stages = shared_data_stages(doc, root)
    work = root / "work" / "recipes" / rec.name / task.name
    jobs = [(c["name"], (doc, c, str(stages.filtered), str(stages.compressed), str(stages.eval),
                         str(work / c["name"]), int(settings["points"]))) for c in candidates]
    raw = run_jobs(curve_job, jobs, workers=workers, desc=f"{rec.name} {task.name}")
    shutil.rmtree(work, ignore_errors=True)
    proxy_training = RunConfig.model_validate(doc).training
    out: dict[str, Any] = {}
    cost = {"seconds": 0.0, "scored_tokens": 0, "evaluations": 0, "flops": 0.0}
    for c in candidates:
        res = raw[c["name"]]
        summary = summarise(res["result"])
        summary["curve"] = res["curve"]
        summary.update(curve_signals(res["curve"], proxy_training, res["total_steps"], task))
        prompt, answer, _ = _eval_tokens(c["path"], task, str(data["eval"]), variant.proxy_eval_rows)
        params = summary["stages"].get("train", {}).get("stats", {}).get("params") or 0
        one = flops.eval_flops(params, prompt, answer, 0, 0, predict=False)
        summary["curve_cost"] = {"seconds": sum(p["seconds"] for p in res["curve"]),
                                 "scored_tokens": sum(p["scored_tokens"] for p in res["curve"]),
                                 "evaluations": len(res["curve"]), "flops": one * len(res["curve"])}
        for key in cost:
            cost[key] += summary["curve_cost"][key]
        out[c["name"]] = summary
    return {"data_stages": [r.model_dump(mode="json") for r in stages.results], "config": doc,
            "curve_settings": settings, "curve_costs": cost, "candidates": out}
