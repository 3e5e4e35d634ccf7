"""Benchmark recipe kind "subsets": rank by the rectified fine-tuning scaling law fitted across data sizes (AtS,
ICML 2024: L(D) = B / (D_l + D)**beta + E), beside the one-run step-curve extrapolation of kind "curve".

Each candidate is pruned once (the recipe's pruning settings) and fine-tuned from that checkpoint on nested subsets
of the filtered, compressed training rows — sizes n/2**(K-1), …, n/2, n (the largest is the whole compressed set,
so its run is the pipeline recipe's own) — with the recipe's training settings, and its reference log-likelihood
is measured after each run on the proxy eval rows. The loss points (-loglik) are fitted with
:func:`damoc.selection.learning_curve.fit_rectified` and extrapolated to the full training set (`task.n_train`
rows, what grid search trains on); that prediction, negated, is the candidate's `subsets_loglik`.

Cost: every subset run counts — the smaller runs' training and log-likelihood passes go under the "curve" stage
of the cost figures (as the curve recipe's extra passes do); the largest run is the usual train/evaluate.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from damoc.benchmark.ground_truth import summarise, task_data
from damoc.benchmark.runner import run_jobs
from damoc.benchmark.suite import BenchTask, Recipe, Variant

SUBSETS_DEFAULTS = {"points": 4}


def subset_files(compressed: Path, out: Path, points: int) -> list[tuple[int, Path]]:
    """(size, path) of the nested subsets: the first `size` rows of the compressed set (its order is the
    filter's, so each subset holds the smaller ones)."""
    from damoc.data.records import read_samples, write_samples
    from damoc.selection.learning_curve import nested_sizes

    rows = read_samples(compressed)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for size in nested_sizes(len(rows), points):
        path = out / f"subset-{size}.jsonl"
        write_samples(rows[:size], path)
        files.append((size, path))
    return files


def subsets_job(doc: dict[str, Any], candidate: dict[str, Any], calibration: str, subsets: list[tuple[int, str]],
                eval_path: str, work: str) -> dict[str, Any]:
    """prune once, then train + evaluate (log-likelihood only) on every subset: each run's result JSON."""
    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import evaluate_step, finetune_step, prune_step

    cfg = RunConfig.model_validate({**doc, "evaluation": {**doc.get("evaluation", {}), "predict": False,
                                                          "rank_by": "loglik"}})
    root = Path(work)
    pruned = prune_step(cfg, candidate, Path(calibration), root / "pruned", progress=False)
    runs = []
    for size, path in subsets:
        if pruned.status == "failed":
            runs.append({"size": size, "result": pruned.model_dump_json()})
            continue
        trained = root / f"trained-{size}"
        finetune_step(cfg, candidate, root / "pruned", Path(path), trained, progress=False)
        result = evaluate_step(cfg, candidate, trained, Path(eval_path), progress=False)
        runs.append({"size": size, "result": result.model_dump_json()})
        shutil.rmtree(trained, ignore_errors=True)
    return {"runs": runs}


def subsets_signal(points: list[tuple[int, float]], full_size: int) -> dict[str, Any]:
    """`subsets_loglik`: minus the rectified law's loss at `full_size`, from (size, loglik) points."""
    from damoc.selection.learning_curve import fit_rectified

    usable = sorted((size, loglik) for size, loglik in points if loglik is not None)
    if len(usable) < 2:
        return {"subsets_loglik": None, "subsets_fit": {"error": f"{len(usable)} usable subset point(s)"}}
    fit = fit_rectified([s for s, _ in usable], [-v for _, v in usable])
    return {"subsets_loglik": -fit.predict(full_size),
            "subsets_fit": {"law": fit.law, "params": list(fit.params), "sizes": [s for s, _ in usable],
                            "target": full_size, "sse": fit.sse}}


def _subsets_recipe(task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]], root: Path,
                    variant: Variant, workers: int) -> dict[str, Any]:
    from damoc.benchmark import flops
    from damoc.benchmark.recipes import _eval_tokens, recipe_config, shared_data_stages  # cycle: imported here

    settings = {**SUBSETS_DEFAULTS, **rec.overrides.get("subsets", {})}
    data = task_data(task, root)
    doc = recipe_config(task, rec, data, candidates, variant)
    stages = shared_data_stages(doc, root)
    work = root / "work" / "recipes" / rec.name / task.name
    files = subset_files(Path(stages.compressed), work / "subsets", int(settings["points"]))
    jobs = [(c["name"], (doc, c, str(stages.filtered), [(s, str(p)) for s, p in files], str(stages.eval),
                         str(work / c["name"]))) for c in candidates]
    raw = run_jobs(subsets_job, jobs, workers=workers, desc=f"{rec.name} {task.name}")
    shutil.rmtree(work, ignore_errors=True)
    batch = doc["training"]["batch_size"]
    out: dict[str, Any] = {}
    for c in candidates:
        runs = raw[c["name"]]["runs"]
        summaries = [(run["size"], summarise(run["result"])) for run in runs]
        summary = dict(summaries[-1][1])  # the largest subset: the pipeline recipe's own run
        summary["subset_points"] = [{"size": size, "loglik": s.get("loglik")} for size, s in summaries]
        summary.update(subsets_signal([(size, s.get("loglik")) for size, s in summaries], task.n_train))
        prompt, answer, rows = _eval_tokens(c["path"], task, str(data["eval"]), variant.proxy_eval_rows)
        extra_flops = extra_seconds = 0.0
        for _, s in summaries[:-1]:  # the smaller runs: extra training and log-likelihood passes
            train = s["stages"].get("train", {})
            params = train.get("stats", {}).get("params") or 0
            extra_flops += flops.train_flops(train.get("stats", {}), batch)
            extra_flops += flops.eval_flops(params, prompt, answer, rows, 0, predict=False)
            extra_seconds += sum((s["stages"].get(k, {}).get("seconds") or 0.0) for k in ("train", "evaluate"))
        summary["curve_cost"] = {"flops": extra_flops, "seconds": extra_seconds, "runs": len(summaries) - 1}
        out[c["name"]] = summary
    return {"data_stages": [r.model_dump(mode="json") for r in stages.results], "config": doc,
            "subsets_settings": settings, "subset_sizes": [s for s, _ in files], "target_rows": task.n_train,
            "candidates": out}
