"""The product path at size: 16 candidates x 5,000 eval rows x 20,000 train rows through kfp.local.

Every stage runs for real (prepare, filter, compress, prune, fine-tune, evaluate, rank), each task in its own
process as kfp.local runs it (two candidate tasks at a time: kfp.local caps a ParallelFor at 2 workers). What
is kept cheap, so the run fits a shared 2-core machine: training (`training.max_steps`, default 2), the
filter (random, 0.5% kept: the rows compression and training see) and generation (`evaluation.predict` off:
every eval row is still scored by the ranking signal, the references' log-likelihood). The point is that the
path holds at size (all 20,000 train rows through prepare and filter, all 5,000 eval rows per candidate
through evaluate and rank, results as artifacts, memory per task), not what the proxies learn. The 16
candidates are copies of the 4 zoo models under their own names. Peak RSS per task is measured exactly: each
task process is reaped with wait4(), whose rusage gives the largest resident set of the task's process tree.
After the big run, the rank task alone (16 synthetic results with every per-row value and 4,000-character
answers, benchmarks/rank_fanin.py) at 1,000 and 5,000 rows shows how its memory grows with the row count.

    make bench-scale                      # writes docs/benchmarks/scale.md and scale.json
    python benchmarks/bench_scale.py --candidates 4 --train 2000 --eval 500   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from damoc_pipelines import local_runner  # noqa: E402

ZOO = ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-neox")
TASK_RSS: list[dict[str, Any]] = []


def _task_name(args: Any) -> str:
    """The task's name from its executor input (kfp.local puts it on the command line)."""
    text = " ".join(args) if isinstance(args, (list, tuple)) else str(args)
    start = text.find('{"inputs"')
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else ({}, 0)
    except ValueError:
        doc = {}
    out = (doc.get("outputs") or {}).get("outputFile", "")
    parts = Path(out).parts
    task = parts[-2] if len(parts) >= 2 else "?"
    loop = parts[-3] if len(parts) >= 3 else ""
    return f"{task}[{loop.rsplit('-', 1)[-1]}]" if loop.startswith("for-loop") else task


class MeasuredPopen(local_runner._TrackedPopen):  # noqa: SLF001 — the local runner's task process, measured
    """Reaps the task with wait4() to read its peak RSS (ru_maxrss: the largest process of its tree)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._started = time.monotonic()
        self._name = _task_name(args[0] if args else kwargs.get("args"))
        super().__init__(*args, **kwargs)

    def _try_wait(self, wait_flags: int):  # type: ignore[override]
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0
        if pid == self.pid:
            record = {"task": self._name, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                      "seconds": round(time.monotonic() - self._started, 1), "exit": os.waitstatus_to_exitcode(status)}
            TASK_RSS.append(record)
            print("task " + json.dumps(record), flush=True)  # as it happens: a run cut short keeps its numbers
        return pid, status


@contextmanager
def measured_tasks() -> Iterator[list[dict[str, Any]]]:
    from kfp.local import subprocess_task_handler

    before, shim_popen = subprocess_task_handler.subprocess, local_runner._SubprocessShim.Popen  # noqa: SLF001
    local_runner._SubprocessShim.Popen = MeasuredPopen  # noqa: SLF001
    subprocess_task_handler.subprocess = local_runner._SubprocessShim()  # noqa: SLF001
    start = len(TASK_RSS)
    records: list[dict[str, Any]] = []
    try:
        yield records
    finally:
        records.extend(TASK_RSS[start:])
        subprocess_task_handler.subprocess = before
        local_runner._SubprocessShim.Popen = shim_popen  # noqa: SLF001


def rank_memory(rows: int, candidates: int, work: Path) -> dict[str, Any]:
    from rank_fanin import result_bytes, run_fanin

    out = work / f"fanin-{candidates}x{rows}"
    with measured_tasks() as records:
        started = time.monotonic()
        sel = run_fanin(candidates, rows, 4000, out)
    (rank,) = [r for r in records if r["task"].startswith("rank-candidates")]
    return {"rows": rows, "candidates": candidates, "rank_peak_rss_mib": rank["peak_rss_mib"],
            "rank_seconds": rank["seconds"], "results_mib": round(sum(result_bytes(out)) / 2**20, 2),
            "wall_seconds": round(time.monotonic() - started, 1), "selected": sel["selected"]}


def big_config(work: Path, n_candidates: int, n_train: int, n_eval: int, max_steps: int, filter_method: str,
               filter_ratio: float, predict: bool) -> dict[str, Any]:
    from damoc.demo.data import write_demo
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo

    zoo = ensure_zoo(default_zoo_dir())
    data = work / "data"
    if not (data / "train.jsonl").is_file():
        write_demo("qa_long", data, n_train=n_train, n_eval=n_eval)
    manifest = {c["name"]: c for c in json.loads((zoo / "zoo.json").read_text())["candidates"]}
    candidates = []
    for i in range(n_candidates):
        model = ZOO[i % len(ZOO)]
        entry = {"name": f"{model}-{i // len(ZOO) + 1}", "path": str(zoo / manifest[model]["path"])}
        if manifest[model].get("base_path"):
            entry["base_path"] = str(zoo / manifest[model]["base_path"])
        candidates.append(entry)
    return {"data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl"), "task": "qa_long"},
            "candidates": candidates, "training": {"max_steps": max_steps},
            "filter": {"method": filter_method, "ratio": filter_ratio}, "evaluation": {"predict": predict}}


def big_run(work: Path, doc: dict[str, Any]) -> dict[str, Any]:
    from damoc.config import parse_config
    from damoc.workflow.stage_cache import resume_env

    cfg = parse_config(doc)
    with measured_tasks() as records, resume_env(False):
        started = time.monotonic()
        sel = local_runner.run_local(cfg, work / "run")
        wall = time.monotonic() - started
    return {"wall_seconds": round(wall, 1), "tasks": records, "selected": sel["selected"],
            "ranked_ok": sum(1 for r in sel["ranking"] if r["status"] == "ok"),
            "eval_rows": (sel.get("uncertainty") or {}).get("rows"),
            "stage_seconds": sel["cost"]["stage_seconds"]}


def _family(task: str) -> str:
    return task.split("[", 1)[0]


def render(doc: dict[str, Any]) -> str:
    lines = ["# Scale: the product path at 16 candidates x 5,000 eval rows x 20,000 train rows",
             "", f"Measured {doc['date']} on {doc['machine']} (kfp.local SubprocessRunner, every task its own "
             "process; training capped at `training.max_steps` = " + str(doc["max_steps"]) + ", filter "
             + json.dumps(doc.get("filter")) + ", evaluation.predict " + json.dumps(doc.get("predict")) + ": this measures the path at size — every stage and task, all "
             "train rows through prepare and filter, all eval rows through evaluate and rank — not proxy quality). "
             "Reproduce: `make bench-scale`.", "",
             "## The rank task's memory against the row count (16 candidates, synthetic results, 4,000-char "
             "answers)", "", "| eval rows | results (MiB, artifacts) | rank task peak RSS (MiB) | rank task s |",
             "|---:|---:|---:|---:|"]
    for r in doc["rank_memory"]:
        lines.append(f"| {r['rows']:,} | {r['results_mib']} | {r['rank_peak_rss_mib']} | {r['rank_seconds']} |")
    big = doc.get("big_run")
    if big:
        lines += ["", f"## The whole pipeline: {doc['candidates']} candidates x {doc['eval']:,} eval rows x "
                  f"{doc['train']:,} train rows", "",
                  f"Wall time {big['wall_seconds']:,} s; {big['ranked_ok']} candidates ranked on "
                  f"{big['eval_rows']} eval rows; selected `{big['selected']}`.", "",
                  "| task | runs | peak RSS max (MiB) | seconds (mean) | seconds (max) |", "|---|---:|---:|---:|---:|"]
        groups: dict[str, list[dict[str, Any]]] = {}
        for t in big["tasks"]:
            groups.setdefault(_family(t["task"]), []).append(t)
        for name, items in groups.items():
            secs = [t["seconds"] for t in items]
            lines.append(f"| {name} | {len(items)} | {max(t['peak_rss_mib'] for t in items)} | "
                         f"{sum(secs) / len(secs):.1f} | {max(secs):.1f} |")
    elif doc.get("big_run_error"):
        lines += ["", f"The whole-pipeline run did not finish: {doc['big_run_error']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--eval", type=int, default=5000)
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--filter-method", default="random",
                   help="cheap by default: on 2 shared cores graphcut's embedding of 20,000 rows alone takes an hour")
    p.add_argument("--filter-ratio", type=float, default=0.005,
                   help="rows kept for compression and training (default 0.005: 100 of 20,000; damoc compression "
                   "runs at ~30 tokens/s on a loaded 2-core machine)")
    p.add_argument("--predict", action="store_true",
                   help="also generate answers for the task metric (off: the ranking signal, the references' "
                   "log-likelihood, on every eval row; generating 5,000 answers per candidate takes ~40 min here)")
    p.add_argument("--rank-rows", default="1000,5000", help="row counts of the rank-memory measurement")
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench-scale"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "scale"), help="writes OUT.md and OUT.json")
    p.add_argument("--skip-big", action="store_true", help="only the rank-memory measurement")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "candidates": args.candidates,
                           "train": args.train, "eval": args.eval, "max_steps": args.max_steps, "rank_memory": []}
    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
        out.with_suffix(".md").write_text(render(doc))

    if not args.skip_big:
        config = big_config(work, args.candidates, args.train, args.eval, args.max_steps, args.filter_method,
                            args.filter_ratio, args.predict)
        doc["filter"] = {"method": args.filter_method, "ratio": args.filter_ratio}
        doc["predict"] = args.predict
        print(f"big run: {args.candidates} x {args.eval} x {args.train} starting", flush=True)
        try:
            doc["big_run"] = big_run(work, config)
        except BaseException as err:  # noqa: BLE001 — record how far it got, then re-raise
            doc["big_run_error"] = f"{type(err).__name__}: {err}"[:500]
            doc["big_run_tasks_done"] = TASK_RSS[-200:]
            save()
            raise
        for t in doc["big_run"]["tasks"]:
            print(json.dumps(t), flush=True)
        save()
    for rows in (int(r) for r in args.rank_rows.split(",")):
        doc["rank_memory"].append(rank_memory(rows, args.candidates, work))
        print(json.dumps(doc["rank_memory"][-1]), flush=True)
        save()
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
