"""The ground truth: grid search (every candidate fine-tuned on all training rows), several seeds, cached.

One entry per (task, candidate, seed) is written as soon as it finishes, under a key that changes whenever
anything that decides the result changes: the candidates' weights, the task's rows, the training and
evaluation settings, and GT_REVISION (bump it when the code that trains or scores changes meaningfully).
An interrupted run resumes where it stopped; a different machine (other weights, float kernels) recomputes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from damoc import atomic
from damoc.benchmark.runner import candidate_job, run_jobs
from damoc.benchmark.suite import EVAL_BATCH, GRID_SEEDS, GRID_TRAINING, BenchTask
from damoc.workflow.stage_cache import sha256_file

GT_REVISION = 1


def zoo_candidates(zoo_dir: Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Candidates of a built zoo as run-config entries (absolute checkpoint paths)."""
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    out = [{"name": c["name"], "path": str(zoo_dir / c["path"]), "base_path": str(zoo_dir / c["base_path"])}
           for c in manifest["candidates"]]
    return [c for c in out if names is None or c["name"] in names]


def weights_fingerprint(candidates: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for cand in candidates:
        files = sorted(Path(cand["path"]).glob("*.safetensors"))
        out[cand["name"]] = hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()[:16]
    return out


def task_data(task: BenchTask, root: Path) -> dict[str, Path]:
    """The task's demo rows (written once per generator version)."""
    from damoc.demo.builtin import _generator_version
    from damoc.demo.data import write_demo

    out = root / "data" / f"{task.demo_task}-{task.n_train}-{task.n_eval}-{_generator_version()}"
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    if not all(p.is_file() for p in paths.values()):
        write_demo(task.demo_task, out, n_train=task.n_train, n_eval=task.n_eval, seed=0)
    return paths


def grid_config(task: BenchTask, data: dict[str, Path], candidates: list[dict[str, Any]], seed: int) -> dict:
    return {"mode": "grid_search", "data": task.data_section(str(data["train"]), str(data["eval"])),
            "candidates": candidates, "training": {**GRID_TRAINING, "max_length": task.max_length, "seed": seed},
            "evaluation": {"max_new_tokens": task.max_new_tokens, "batch_size": EVAL_BATCH}}


def cache_key(task: BenchTask, data: dict[str, Path], fingerprints: dict[str, str]) -> str:
    payload = {"revision": GT_REVISION, "task": task.__dict__, "data": {k: sha256_file(p) for k, p in data.items()},
               "training": GRID_TRAINING, "eval_batch": EVAL_BATCH}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def summarise(result_json: str) -> dict[str, Any]:
    """What the benchmark keeps of a candidate's run: scores, per-row values, cost figures."""
    result = json.loads(result_json)
    stages = result.get("stages", {})
    ev = stages.get("evaluate", {}).get("stats", {})
    return {"status": result["status"], "error": result.get("error"), "score": ev.get("score"),
            "loglik": ev.get("loglik"), "row_scores": ev.get("row_scores"), "row_loglik": ev.get("row_loglik"),
            "flags": result.get("flags", []),
            "stages": {name: {"status": s.get("status"), "seconds": s.get("seconds"), "reason": s.get("reason"),
                              "stats": {k: v for k, v in s.get("stats", {}).items()
                                        if k not in ("row_scores", "row_loglik", "examples", "similarities")}}
                       for name, s in stages.items()}}


def ground_truth(task: BenchTask, candidates: list[dict[str, Any]], root: Path, *, seeds=GRID_SEEDS,
                 workers: int = 2) -> dict[str, dict[int, dict[str, Any]]]:
    """{candidate: {seed: summary}} for grid search on `task`, computing only what the cache lacks."""
    from damoc.config import RunConfig
    from damoc.workflow.inprocess import run_data_stages

    data = task_data(task, root)
    fingerprints = weights_fingerprint(candidates)
    key = cache_key(task, data, fingerprints)
    cache = root / "ground_truth" / f"{task.name}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cache / "key.json", json.dumps({"weights": fingerprints, "task": task.__dict__,
                                                     "training": GRID_TRAINING, "seeds": list(seeds)}, indent=2))

    def entry(name: str, seed: int) -> Path:
        # weights fingerprint in the file name: a candidate rebuilt with other weights is recomputed alone
        return cache / f"{name}-{fingerprints[name]}-seed{seed}.json"

    todo = [(c, s) for c in candidates for s in seeds if not entry(c["name"], s).is_file()]
    if todo:
        work = root / "work" / f"grid-{task.name}-{key}"
        prepared = run_data_stages(RunConfig.model_validate(grid_config(task, data, candidates, seeds[0])),
                                   work / "data")

        def done(job_key: tuple[str, int], result_json: str) -> None:
            name, seed = job_key
            atomic.write_text(entry(name, seed), json.dumps(summarise(result_json)))
            shutil.rmtree(work / f"{name}-seed{seed}", ignore_errors=True)  # checkpoints are not kept

        jobs = [((c["name"], s), (grid_config(task, data, candidates, s), c, str(prepared.filtered),
                                  str(prepared.compressed), str(prepared.eval), str(work / f"{c['name']}-seed{s}")))
                for c, s in todo]
        run_jobs(candidate_job, jobs, workers=workers, desc=f"grid search {task.name}", on_done=done)
    return {c["name"]: {s: json.loads(entry(c["name"], s).read_text()) for s in seeds} for c in candidates}
