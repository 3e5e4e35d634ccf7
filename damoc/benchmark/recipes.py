"""Run the cheap recipes of the benchmark: the DaMoC stages with a recipe's settings, k-shot scoring without
training, and successive halving. Every candidate's scores (task metric and reference log-likelihood) and
cost (seconds and FLOPs per stage) are kept; agreement with the ground truth is computed by the report."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from damoc import atomic
from damoc.benchmark import flops
from damoc.benchmark.curve_recipe import _curve_recipe
from damoc.benchmark.subsets_recipe import _subsets_recipe
from damoc.benchmark.ground_truth import summarise, task_data
from damoc.benchmark.runner import candidate_job, run_jobs
from damoc.benchmark.suite import EVAL_BATCH, GRID_TRAINING, BenchTask, Recipe, Variant, recipe as get_recipe
from damoc.data.records import read_samples, write_samples
from damoc.data.schema import Sample

SCORER = "tiny-llama"  # the bench zoo's smallest model scores perplexity for compression and scorer filters


def recipe_config(task: BenchTask, rec: Recipe, data: dict[str, Path], candidates: list[dict[str, Any]],
                  variant: Variant) -> dict[str, Any]:
    scorer = next(c for c in candidates if c["name"] == SCORER)["base_path"]
    over = rec.overrides
    doc: dict[str, Any] = {
        "mode": "damoc",
        "data": task.data_section(str(data["train"]), str(data["eval"]), variant.proxy_eval_rows),
        "candidates": candidates,
        "training": {**GRID_TRAINING, "max_length": task.max_length, "seed": 0, **over.get("training", {})},
        "evaluation": {"max_new_tokens": task.max_new_tokens, "batch_size": EVAL_BATCH},
    }
    for section in ("filter", "compression", "pruning"):
        if section in over:
            doc[section] = dict(over[section])
    doc.setdefault("compression", {})["scorer_model"] = scorer
    if doc.get("filter", {}).get("method") == "alpagasus":  # the only method whose model has no run default
        judge = next(c for c in candidates if c["name"] == SCORER)["path"]
        doc["filter"]["options"] = {"alpagasus": {"judge_model": judge}}
    return doc


# The package code a cached result depends on: a change there recomputes it (report and cost code do not).
DATA_CODE = ("data", "filtering", "compression", "embedding.py", "hf.py")
RUN_CODE = DATA_CODE + ("pruning", "training", "evaluation", "workflow/candidate_steps.py", "benchmark/runner.py",
                        "benchmark/curve_recipe.py", "benchmark/subsets_recipe.py", "selection/learning_curve.py")


@lru_cache(maxsize=None)
def code_digest(parts: tuple[str, ...]) -> str:
    from damoc.workflow.stage_cache import sources_digest

    return sources_digest(parts)[:16]


def _data_key(doc: dict[str, Any]) -> str:
    from damoc.workflow.stage_cache import sha256_file

    payload: dict[str, Any] = {k: doc.get(k) for k in ("filter", "compression")}
    payload["code"] = code_digest(DATA_CODE)
    payload["data"] = {k: sha256_file(Path(doc["data"][k])) for k in ("train", "eval")}
    payload["rows"] = doc["data"].get("max_eval_samples")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def shared_data_stages(doc: dict[str, Any], root: Path):
    """prepare -> filter -> compress once per distinct data/filter/compression settings (kept with timings)."""
    from damoc.config import RunConfig
    from damoc.results import StageResult
    from damoc.workflow.inprocess import DataStages, run_data_stages

    work = root / "work" / "data" / _data_key(doc)
    record = work / "stages.json"
    if record.is_file():
        results = [StageResult.model_validate(r) for r in json.loads(record.read_text())]
        return DataStages(work / "train.jsonl", work / "eval.jsonl", work / "filtered.jsonl",
                          work / "compressed.jsonl", results)
    stages = run_data_stages(RunConfig.model_validate(doc), work, progress=True)
    atomic.write_text(record, json.dumps([r.model_dump(mode="json") for r in stages.results]))
    return stages


# ------------------------------------------------------------------------------------------------------------
# token counts, for FLOPs

@lru_cache(maxsize=None)
def _eval_tokens(model_path: str, task: BenchTask, eval_path: str, rows: int | None) -> tuple[int, int, int]:
    """(prompt tokens, answer tokens, rows) of the first `rows` eval rows as evaluation encodes them; cached:
    a report costs every recipe (and the log-likelihood signal again) on the same rows."""
    from damoc.hf import load_tokenizer
    from damoc.training.finetune import encode_example

    samples = read_samples_any(Path(eval_path), task)[: rows or None]
    tok = load_tokenizer(model_path)
    prompt = answer = 0
    for s in samples:
        ex = encode_example(tok, s, task.max_length)
        n_answer = sum(1 for x in ex["labels"] if x != -100)
        prompt += len(ex["input_ids"]) - n_answer
        answer += n_answer
    return prompt, answer, len(samples)


@lru_cache(maxsize=None)
def _train_words(task: BenchTask, train_path: str) -> int:
    return sum(len(s.text.split()) for s in read_samples_any(Path(train_path), task))


def _add(totals: dict[str, dict[str, float]], cost: dict[str, dict[str, float]]) -> None:
    for kind in ("seconds", "flops"):
        for stage, value in cost[kind].items():
            totals[kind][stage] = totals[kind].get(stage, 0.0) + value


def candidate_cost(summary: dict[str, Any], *, params: int, eval_tokens: tuple[int, int], rows: int,
                   task: BenchTask, batch_size: int, predict: bool = True, calibration_tokens: int = 0) -> dict:
    stages = summary.get("stages", {})
    train = stages.get("train", {}).get("stats", {})
    prune = stages.get("prune", {})
    params_after = train.get("params") or params
    options = 4 if task.task_type == "multiple_choice" else 0
    out = {
        "prune": flops.prune_flops(prune, calibration_tokens),
        "train": flops.train_flops(train, batch_size),
        "evaluate": flops.eval_flops(params_after, eval_tokens[0], eval_tokens[1], rows, task.max_new_tokens,
                                     predict, options),
    }
    seconds = {k: (stages.get(k, {}).get("seconds") or 0.0) for k in out}
    if summary.get("curve_cost"):  # the curve recipe's log-likelihood passes during training
        out["curve"], seconds["curve"] = summary["curve_cost"]["flops"], summary["curve_cost"]["seconds"]
    return {"flops": out, "seconds": seconds}


# ------------------------------------------------------------------------------------------------------------
# recipe kinds

def _pipeline_recipe(task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]], root: Path,
                     variant: Variant, workers: int) -> dict[str, Any]:
    data = task_data(task, root)
    doc = recipe_config(task, rec, data, candidates, variant)
    stages = shared_data_stages(doc, root)
    work = root / "work" / "recipes" / rec.name / task.name
    jobs = [(c["name"], (doc, c, str(stages.filtered), str(stages.compressed), str(stages.eval),
                         str(work / c["name"]))) for c in candidates]
    raw = run_jobs(candidate_job, jobs, workers=workers, desc=f"{rec.name} {task.name}")
    shutil.rmtree(work, ignore_errors=True)
    return {"data_stages": [r.model_dump(mode="json") for r in stages.results], "config": doc,
            "candidates": {name: summarise(js) for name, js in raw.items()}}


def _with_shots(samples: list[Sample], demos: list[Sample]) -> list[Sample]:
    prefix = "".join(f"Example question: {d.input}\nExample answer: {d.output}\n\n" for d in demos)
    return [Sample(id=s.id, instruction=s.instruction, input=prefix + s.input, output=s.output, options=s.options)
            for s in samples]


def shots_job(task_type: str, model_path: str, eval_path: str, max_new_tokens: int, max_length: int) -> str:
    import time

    from damoc.evaluation.evaluate import evaluate_model
    from damoc.results import CandidateResult, StageResult

    started = time.perf_counter()
    stats = evaluate_model(model_path, read_samples(eval_path), task_type, max_new_tokens=max_new_tokens,
                           batch_size=EVAL_BATCH, max_length=max_length)
    result = CandidateResult(candidate=Path(model_path).parent.name, score=stats["score"])
    result.record(StageResult(stage="evaluate", stats=stats, seconds=time.perf_counter() - started))
    return result.model_dump_json()


def _shots_recipe(task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]], root: Path,
                  variant: Variant, workers: int) -> dict[str, Any]:
    data = task_data(task, root)
    evals = read_samples_any(data["eval"], task)[: variant.proxy_eval_rows or None]
    demos = read_samples_any(data["train"], task)[: rec.shots]
    path = root / "work" / "shots" / f"{task.name}-{rec.shots}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_samples(_with_shots(evals, demos), path)
    max_length = min(512, task.max_length * (rec.shots + 1))
    jobs = [(c["name"], (task.task_type, c["path"], str(path), task.max_new_tokens, max_length))
            for c in candidates]
    raw = run_jobs(shots_job, jobs, workers=workers, desc=f"{rec.name} {task.name}")
    return {"data_stages": [], "candidates": {name: summarise(js) for name, js in raw.items()},
            "max_length": max_length}


def read_samples_any(path: Path, task: BenchTask) -> list[Sample]:
    from damoc.data.io import load_samples

    fields = {"instruction": "instruction", "input": "input", "output": "output", "options": task.options_field}
    return load_samples(str(path), fields)


def halving_job(model_in: str, train_path: str, eval_path: str, out: str, training: dict[str, Any],
                task_type: str, max_length: int) -> dict[str, Any]:
    import time

    from damoc.config import TrainingConfig
    from damoc.evaluation.evaluate import evaluate_model
    from damoc.training.finetune import finetune

    started = time.perf_counter()
    train_stats = finetune(model_in, read_samples(train_path), out, TrainingConfig.model_validate(training))
    ev = evaluate_model(out, read_samples(eval_path), task_type, batch_size=EVAL_BATCH, max_length=max_length,
                        predict=False)
    return {"train": train_stats, "loglik": ev["loglik"], "eval_seconds": ev["eval_seconds"],
            "seconds": time.perf_counter() - started}


def halving_schedule(n_candidates: int, steps_per_candidate: int) -> list[tuple[int, int]]:
    """(survivors, steps each) per round: the total budget n x steps split evenly over ceil(log2 n) rounds,
    each round's share split among its survivors; the better half (rounded up) goes on."""
    rounds = max(1, math.ceil(math.log2(max(n_candidates, 2))))
    share = n_candidates * steps_per_candidate / rounds
    plan, alive = [], n_candidates
    for _ in range(rounds):
        plan.append((alive, max(1, int(share // alive))))
        alive = max(1, math.ceil(alive / 2))
    return plan


def _halving_recipe(task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]], root: Path,
                    variant: Variant, workers: int) -> dict[str, Any]:
    from damoc.benchmark.suite import PROXY_STEPS
    from damoc.config import RunConfig
    from damoc.workflow.model_sources import model_in_artifact

    data = task_data(task, root)
    doc = recipe_config(task, rec, data, candidates, variant)
    stages = shared_data_stages(doc, root)
    work = root / "work" / "halving" / task.name
    shutil.rmtree(work, ignore_errors=True)
    pruned = run_jobs(prune_job, [(c["name"], (doc, c, str(stages.filtered), str(work / c["name"] / "pruned")))
                             for c in candidates], workers=workers, desc=f"halving prune {task.name}")
    current = {c["name"]: model_in_artifact(work / c["name"] / "pruned") for c in candidates}
    summaries = {name: summarise(js) for name, js in pruned.items()}
    for name in summaries:
        summaries[name]["stages"]["train"] = {"status": "ok", "seconds": 0.0, "stats": {"steps": 0}}
        summaries[name]["stages"]["evaluate"] = {"status": "ok", "seconds": 0.0, "stats": {"evaluations": 0}}
        summaries[name]["rounds"] = []
    cfg = RunConfig.model_validate(doc)
    alive = [c["name"] for c in candidates if summaries[c["name"]]["status"] == "ok"]
    plan = halving_schedule(len(alive), PROXY_STEPS)
    for round_no, (_, steps) in enumerate(plan, start=1):
        training = {**cfg.training.model_dump(), "max_steps": steps}
        jobs = [(name, (current[name], str(stages.compressed), str(stages.eval),
                        str(work / name / f"round{round_no}"), training, task.task_type, task.max_length))
                for name in alive]
        out = run_jobs(halving_job, jobs, workers=workers, desc=f"halving r{round_no} {task.name}")
        for name, res in out.items():
            current[name] = str(work / name / f"round{round_no}")
            s = summaries[name]
            s["rounds"].append({"round": round_no, "steps": steps, "loglik": res["loglik"]})
            s["loglik"] = res["loglik"]
            train = s["stages"]["train"]
            train["seconds"] += res["seconds"] - res["eval_seconds"]
            acc = train["stats"]
            for key in ("tokens", "samples", "params"):
                acc[key] = res["train"][key]
            acc["steps"] += res["train"]["steps"]
            s["stages"]["evaluate"]["seconds"] += res["eval_seconds"]
            s["stages"]["evaluate"]["stats"]["evaluations"] += 1
        survivors = plan[round_no][0] if round_no < len(plan) else 1  # the schedule says how many go on
        alive = sorted(alive, key=lambda n: -summaries[n]["loglik"])[:survivors]
    # the halving score: rounds survived first, then the last log-likelihood measured
    for name, s in summaries.items():
        if s["rounds"]:
            s["halving_score"] = 100.0 * len(s["rounds"]) + s["rounds"][-1]["loglik"]
    shutil.rmtree(work, ignore_errors=True)
    return {"data_stages": [r.model_dump(mode="json") for r in stages.results], "config": doc,
            "schedule": plan, "candidates": summaries}


def prune_job(doc: dict[str, Any], candidate: dict[str, Any], calibration: str, out: str) -> str:
    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import prune_step

    return prune_step(RunConfig.model_validate(doc), candidate, Path(calibration), Path(out),
                      progress=False).model_dump_json()


KINDS = {"pipeline": _pipeline_recipe, "shots": _shots_recipe, "halving": _halving_recipe, "curve": _curve_recipe,
         "subsets": _subsets_recipe}


def recipe_costs(run: dict[str, Any], task: BenchTask, recipe_name: str, candidates: list[dict[str, Any]],
                 variant: Variant, root: Path, predict: bool | None = None) -> dict[str, Any]:
    """The cost of a cached run, recounted (e.g. without generation for a log-likelihood ranking)."""
    return _costs(run, task, get_recipe(recipe_name), candidates, variant, root, predict)


def run_cache_path(root: Path, rec: Recipe, task: BenchTask, variant: Variant, fingerprints: dict[str, str],
                   data: dict[str, Path]) -> Path:
    """Where a recipe's run on a task is cached: keyed by everything that decides it."""
    key_doc = {"recipe": rec.__dict__, "task": task.__dict__, "variant": variant.proxy_eval_rows,
               "weights": fingerprints, "data": {k: str(v) for k, v in data.items()}, "code": code_digest(RUN_CODE)}
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return root / "results" / f"{rec.name}-{task.name}-{key}.json"


def run_recipes(tasks: list[BenchTask], recipe_names: list[str], candidates: list[dict[str, Any]], root: Path,
                variant: Variant, workers: int = 2) -> dict[str, dict[str, Any]]:
    """{recipe: {task: run}} — each run cached under root/results keyed by its settings, so a rerun of the
    benchmark only computes what changed."""
    from damoc.benchmark.ground_truth import weights_fingerprint

    fingerprints = weights_fingerprint(candidates)
    out: dict[str, dict[str, Any]] = {}
    for name in recipe_names:
        rec = get_recipe(name)
        for task in tasks:
            data = task_data(task, root)
            cached = run_cache_path(root, rec, task, variant, fingerprints, data)
            if cached.is_file():
                run = json.loads(cached.read_text())
            else:
                started = time.perf_counter()
                run = KINDS[rec.kind](task, rec, candidates, root, variant, workers)
                run["wall_seconds"] = time.perf_counter() - started  # as computed (workers in parallel)
                run["costs"] = _costs(run, task, rec, candidates, variant, root)
                atomic.write_text(cached, json.dumps(run))
            out.setdefault(name, {})[task.name] = run
    return out


def _costs(run: dict[str, Any], task: BenchTask, rec: Recipe, candidates: list[dict[str, Any]],
           variant: Variant, root: Path, predict: bool | None = None) -> dict[str, Any]:
    """Seconds and FLOPs per stage: data stages once, candidate stages summed over candidates.

    predict: whether evaluation generates (None: as the recipe ran). A ranking by reference log-likelihood
    needs no generation (`evaluation.predict: false`), so its cost is counted without it."""
    data = task_data(task, root)
    manifest_params = _params(candidates)
    totals: dict[str, dict[str, float]] = {"seconds": {}, "flops": {}}
    for stage in run.get("data_stages", []):
        totals["seconds"][stage["stage"]] = stage.get("seconds", 0.0)
        if stage["stage"] == "filter":
            totals["flops"]["filter"] = flops.filter_flops(stage, _train_words(task, str(data["train"])))
        elif stage["stage"] == "compress":
            totals["flops"]["compress"] = flops.compress_flops(stage, manifest_params.get(SCORER, 0))
    batch = (run.get("config") or {}).get("training", {}).get("batch_size", GRID_TRAINING["batch_size"])
    calibration = 32 * 150  # calibration_samples x ~150 tokens per row
    predicting = (rec.kind != "halving") if predict is None else predict
    per_candidate = {}
    for cand in candidates:
        summary = run["candidates"].get(cand["name"])
        if not summary:
            continue
        prompt, answer, rows = _eval_tokens(cand["path"], task, str(data["eval"]), variant.proxy_eval_rows)
        evaluations = summary.get("stages", {}).get("evaluate", {}).get("stats", {}).get("evaluations", 1)
        cost = candidate_cost(summary, params=manifest_params[cand["name"]], eval_tokens=(prompt, answer),
                              rows=rows, task=task, batch_size=batch, predict=predicting,
                              calibration_tokens=calibration)
        cost["flops"]["evaluate"] *= evaluations
        per_candidate[cand["name"]] = cost
        _add(totals, cost)
    return {**totals, "per_candidate": per_candidate}


def _params(candidates: list[dict[str, Any]]) -> dict[str, int]:
    manifest = json.loads((Path(candidates[0]["path"]).parents[1] / "zoo.json").read_text())
    return {c["name"]: c["params"] for c in manifest["candidates"]}


def ground_truth_costs(truth: dict[str, dict[int, dict[str, Any]]], task: BenchTask,
                       candidates: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Cost of ONE grid-search run (one seed): every candidate trained on all rows and evaluated on all rows."""
    data = task_data(task, root)
    params = _params(candidates)
    totals: dict[str, dict[str, float]] = {"seconds": {}, "flops": {}}
    for cand in candidates:
        per_seed = truth[cand["name"]]
        prompt, answer, rows = _eval_tokens(cand["path"], task, str(data["eval"]), None)
        _add(totals, candidate_cost(per_seed[min(per_seed)], params=params[cand["name"]],
                                    eval_tokens=(prompt, answer), rows=rows, task=task,
                                    batch_size=GRID_TRAINING["batch_size"]))
    return totals
