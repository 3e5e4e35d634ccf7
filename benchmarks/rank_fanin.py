"""The pipeline's fan-in at size, without training: N candidates' result artifacts of R eval rows each, collected
over a ParallelFor and ranked by the real rank-candidates component, through kfp.local.

Each result is a real damoc.results.CandidateResult (prune, train and evaluate stages; per-row scores and
log-likelihoods; three examples with long answers), as evaluate-model writes it. Used by the regression test
(tests/test_rank_fanin.py: 7 x 400 with long answers, the size whose string parameters hit the 128 KiB
argument limit) and by benchmarks/bench_scale.py (the rank task's peak memory against the row count).
"""
import json
import os
import time
from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Output

from damoc_components.config import validate_config
from damoc_components.images import DAMOC_IMAGE
from damoc_components.rank import rank_candidates


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def synthetic_result(candidate: dict, rows: int, answer_chars: int, result: Output[Artifact]):
    """A candidate's evaluate-model result of `rows` eval rows with `answer_chars`-long answers.

    Args:
        candidate: One entry of the candidates list.
        rows: Evaluation rows.
        answer_chars: Length of each example's reference and prediction.

    Returns:
        result: The CandidateResult JSON, as evaluate-model writes it.
    """
    import random
    from pathlib import Path

    from damoc.results import CandidateResult, StageResult

    name = candidate["name"]
    rng = random.Random(name)
    shift = rng.uniform(-0.3, 0.3)
    loglik = [rng.gauss(-2.0 + shift, 0.8) for _ in range(rows)]
    scores = [min(1.0, max(0.0, rng.gauss(0.5 + shift / 2, 0.2))) for _ in range(rows)]
    text = ("The answer, worked through step by step with every detail spelled out. " * 64)[:answer_chars]
    examples = [{"input": f"question {i} " + text, "reference": text, "prediction": text[::-1]} for i in range(3)]
    out = CandidateResult(candidate=name)
    out.record(StageResult(stage="prune", seconds=1.0, stats={"num_layers_before": 8, "num_layers_after": 6,
                                                               "pruned_layers": [3, 5], "params_after": 1000}))
    out.record(StageResult(stage="train", seconds=2.0, stats={"train_loss": 1.5, "loss_is_finite": True,
                                                               "params": 1000, "samples": 100}))
    out.record(StageResult(stage="evaluate", seconds=3.0, stats={
        "samples": rows, "score": sum(scores) / rows, "loglik": sum(loglik) / rows, "row_scores": scores,
        "row_loglik": loglik, "examples": examples, "empty_predictions": 0}))
    out.score = sum(loglik) / rows
    Path(result.path).write_text(out.model_dump_json())


def _stage(stage: str) -> str:
    return json.dumps({"stage": stage, "status": "ok", "seconds": 1.0, "stats": {}})


@dsl.pipeline(name="damoc-rank-fanin")
def fanin_pipeline(mode: str, candidates: list, data: dict, filter: dict, compression: dict,  # noqa: A002
                   pruning: dict, training: dict, evaluation: dict, rows: int, answer_chars: int,
                   output_uri: str) -> str:
    config = validate_config(mode=mode, candidates=candidates, data=data, filter=filter, compression=compression,
                             pruning=pruning, training=training, evaluation=evaluation)
    with dsl.ParallelFor(candidates, name="per-candidate") as candidate:
        made = synthetic_result(candidate=candidate, rows=rows, answer_chars=answer_chars)
    ranked = rank_candidates(config=config.outputs["config"], results=dsl.Collected(made.outputs["result"]),
                             prepare_stats=_stage("prepare"), filter_stats=_stage("filter"),
                             compress_stats=_stage("compress"), started_at=time.time(), output_uri=output_uri)
    return ranked.outputs["selected"]


def fanin_arguments(n_candidates: int, rows: int, answer_chars: int, output_uri: str) -> dict[str, Any]:
    from damoc.config import parse_config
    from damoc.config_params import to_pipeline_arguments

    cfg = parse_config({
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl", "task": "qa_long"},
        "candidates": [{"name": f"cand-{i:02d}", "path": "zoo://tiny-llama"} for i in range(n_candidates)]})
    args = dict(to_pipeline_arguments(cfg))
    args.pop("output_uri", None)
    args.pop("s3_secret_name", None)
    args.pop("api_key_secret_name", None)
    return {**args, "rows": rows, "answer_chars": answer_chars, "output_uri": output_uri}


def run_fanin(n_candidates: int, rows: int, answer_chars: int, out_dir: Path) -> dict[str, Any]:
    """Run the fan-in through kfp.local; returns the selection document written to out_dir."""
    from kfp import local

    out_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out_dir / "pipeline_root"),
               workspace_root=str(out_dir / "workspace"), raise_on_error=True)
    fanin_pipeline(**fanin_arguments(n_candidates, rows, answer_chars, str(out_dir)))
    return json.loads((out_dir / "selection.json").read_text())


def result_bytes(out_dir: Path) -> list[int]:
    """Sizes of the synthetic result artifacts a run wrote (what used to travel as string parameters)."""
    return sorted(p.stat().st_size for p in (out_dir / "pipeline_root").rglob("result")
                  if p.is_file() and "synthetic-result" in str(p))


if __name__ == "__main__":
    import sys

    n, r = (int(a) for a in sys.argv[1:3])
    target = Path(sys.argv[3] if len(sys.argv) > 3 else f"/tmp/fanin-{os.getpid()}")
    print(json.dumps(run_fanin(n, r, 4000, target)["ranking"][:3], indent=1))
