"""Regression: 7 candidates x 400 eval rows with long answers through the real fan-in (kfp.local).

Each candidate's result used to travel as a string parameter (evaluate -> dsl.Collected -> List[str]); at this
size the rank task's argument outgrew Linux's 128 KiB limit per argument and the run died with
`sh: Argument list too long`. Results now travel as artifacts; only small values are parameters.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from rank_fanin import result_bytes, run_fanin  # noqa: E402

from damoc.workflow.rank_step import EXAMPLE_CHARS  # noqa: E402

ARG_MAX_PER_ARG = 128 * 1024


def test_one_argument_over_128_kib_is_refused_here():
    """The limit the old parameters hit is real on this machine (MAX_ARG_STRLEN)."""
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["sh", "-c", "true", "x" * (ARG_MAX_PER_ARG + 1)], check=False)


def test_seven_candidates_four_hundred_long_rows_rank_through_kfp_local(tmp_path):
    out = tmp_path / "fanin"
    sel = run_fanin(7, 400, 4000, out)
    sizes = result_bytes(out)
    assert len(sizes) == 7 and sum(sizes) > 2 * ARG_MAX_PER_ARG  # as one parameter list: far over the limit
    ranking = sel["ranking"]
    assert [r["rank"] for r in ranking] == list(range(1, 8)) and all(r["status"] == "ok" for r in ranking)
    assert sel["selected"] == ranking[0]["candidate"]
    assert sel["uncertainty"]["rows"] == 400 and set(sel["uncertainty"]["intervals"]) == {r["candidate"]
                                                                                        for r in ranking}
    # the per-row values stayed out of selection.json; long examples are cut
    evaluate = sel["stats"]["candidates"]["cand-00"]["evaluate"]["stats"]
    assert "row_loglik" not in evaluate and "row_scores" not in evaluate and evaluate["samples"] == 400
    (example, *_) = evaluate["examples"]
    assert example["reference"].startswith("The answer") and len(example["reference"]) < EXAMPLE_CHARS + 40
    assert "more characters]" in example["reference"]
    # the same three files as the in-process runner, at output_uri
    for name in ("selection.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert "cand-00" in (out / "report.html").read_text() and json.loads((out / "selection.json").read_text())


def test_rank_step_reads_result_files_and_keeps_only_the_ranking_signal(tmp_path):
    from damoc.config import parse_config
    from damoc.results import CandidateResult, StageResult
    from damoc.workflow.rank_step import load_results, rank_step

    cfg = parse_config({"data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "qa_long"},
                        "candidates": [{"name": "a", "path": "zoo://tiny-llama"},
                                       {"name": "b", "path": "zoo://tiny-qwen2"}]})
    files = []
    for name, shift in (("a", 0.5), ("b", 0.0)):
        r = CandidateResult(candidate=name, score=-1.0 + shift)
        r.record(StageResult(stage="evaluate", stats={"loglik": -1.0 + shift, "row_loglik": [-1.0 + shift] * 50,
                                                      "row_scores": [0.5] * 50,
                                                      "examples": [{"reference": "x" * 9000}]}))
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(r.model_dump_json())
    (slim_a, _) = load_results(files, "loglik")
    stats = slim_a.stages["evaluate"].stats
    assert "row_scores" not in stats and len(stats["row_loglik"]) == 50  # rank_by loglik: the loglik rows stay
    assert len(stats["examples"][0]["reference"]) < 2100
    sel = rank_step(cfg, files, [], 0.0, tmp_path / "selection.json", tmp_path / "report.md")
    assert sel["selected"] == "a" and sel["uncertainty"]["rows"] == 50
    assert (tmp_path / "report.html").read_text().count("<html") == 1  # in-process: report.html beside report.md
