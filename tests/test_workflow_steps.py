"""Per-candidate steps record failures instead of raising, and pass them on to the ranking."""
import json

from damoc.config import parse_config
from damoc.data.records import write_samples
from damoc.data.schema import Sample
from damoc.workflow.candidate_steps import evaluate_step, finetune_step, prune_step
from damoc.results import CandidateResult, StageResult
from damoc.workflow.outcome import read_model_ref, read_result
from damoc.workflow.rank_step import rank_step
from damoc.workflow.step_runner import StageSkipped, run_stage

SAMPLES = [Sample(id=str(i), instruction="", input=f"q {i}", output=f"a {i}") for i in range(4)]


def _cfg(candidates, mode="damoc"):
    return parse_config({"mode": mode, "data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"},
                         "candidates": candidates, "training": {"epochs": 1, "batch_size": 4, "max_length": 32},
                         "evaluation": {"max_new_tokens": 3}})


def test_broken_candidate_is_reported_failed_with_its_stage(tmp_path):
    data = tmp_path / "d.jsonl"
    write_samples(SAMPLES, data)
    cand = {"name": "broken", "path": "/no/such/ckpt", "base_path": "/no/such/base"}
    cfg = _cfg([cand])
    pruned, trained = tmp_path / "pruned", tmp_path / "trained"
    result = prune_step(cfg, cand, data, pruned, progress=False)
    assert result.candidate == "broken" and result.status == "failed"
    assert result.stages["prune"].status == "failed" and "not found" in result.stages["prune"].reason
    assert read_result(pruned, "broken") == result
    finetune_step(cfg, cand, pruned, data, trained, progress=False)
    assert set(read_result(trained, "broken").stages) == {"prune"}  # passed on, not retried
    result = evaluate_step(cfg, cand, trained, data, progress=False)
    assert result.status == "failed" and result.error.startswith("prune: FileNotFoundError")


def test_grid_search_keeps_a_reference_not_a_copy(tmp_path, tiny_pair):
    data = tmp_path / "d.jsonl"
    write_samples(SAMPLES, data)
    cand = {"name": "ok", "path": str(tiny_pair[1]), "base_path": str(tiny_pair[0])}
    cfg = _cfg([cand], mode="grid_search")
    pruned = tmp_path / "pruned"
    result = prune_step(cfg, cand, data, pruned, progress=False)
    assert result.stages["prune"].status == "skipped" and result.stages["prune"].reason == "mode=grid_search"
    assert read_model_ref(pruned) == {"source": str(tiny_pair[1])}
    assert not (pruned / "model.safetensors").exists()


def test_rank_step_counts_a_missing_result_as_failed_and_writes_outputs(tmp_path):
    cfg = _cfg([{"name": "a", "path": "x"}, {"name": "b", "path": "y"}])
    result_a = CandidateResult(candidate="a", score=0.5, stages={
        "train": StageResult(stage="train", seconds=2.0), "evaluate": StageResult(stage="evaluate", seconds=1.0)})
    out = tmp_path / "published"
    sel = rank_step(cfg, [result_a.model_dump_json()], [StageResult(stage="filter", seconds=1.5)], started_at=0.0,
                    selection_out=tmp_path / "s.json", report_out=tmp_path / "r.md", output_uri=str(out))
    assert sel["selected"] == "a"
    assert sel["ranking"][1] == {"candidate": "b", "score": None, "rank": None, "status": "failed",
                                 "error": "no result reported"}
    assert sel["cost"]["stage_seconds"] == {"filter": 1.5, "prune": 0.0, "train": 2.0, "evaluate": 1.0}
    assert json.loads((out / "selection.json").read_text()) == sel
    assert (out / "report.md").read_text() == (tmp_path / "r.md").read_text()


def test_run_stage_times_skips_and_captures_failures():
    ok = run_stage("x", lambda: {"n": 1}, capture_failure=True)
    assert ok.status == "ok" and ok.stats == {"n": 1} and ok.seconds >= 0.0

    def skip():
        raise StageSkipped("not needed")

    assert run_stage("x", skip, capture_failure=True).model_dump(include={"status", "reason"}) == {
        "status": "skipped", "reason": "not needed"}

    def boom():
        raise RuntimeError("disk full")

    failed = run_stage("x", boom, capture_failure=True)
    assert failed.status == "failed" and failed.reason == "RuntimeError: disk full" and "boom" in failed.traceback
    import pytest

    with pytest.raises(RuntimeError, match="disk full"):
        run_stage("x", boom, capture_failure=False)
    result = CandidateResult(candidate="c").record(ok).record(failed.model_copy(update={"stage": "train"}))
    assert result.status == "failed" and result.error == "train: RuntimeError: disk full"


def test_a_candidate_pruning_cannot_handle_is_trained_unpruned_and_flagged(tmp_path, tiny_pair):
    data = tmp_path / "d.jsonl"
    write_samples(SAMPLES, data)
    # a base checkpoint that does not exist: pruning fails, the chat model goes on with all its layers
    cand = {"name": "nobase", "path": str(tiny_pair[1]), "base_path": str(tmp_path / "missing-base")}
    result = prune_step(_cfg([cand]), cand, data, tmp_path / "pruned", progress=False)
    prune = result.stages["prune"]
    assert result.status == "ok" and prune.status == "skipped" and prune.reason.startswith("trained unpruned")
    assert prune.stats["unpruned"] and prune.stats["num_layers_before"] == prune.stats["num_layers_after"]
    assert result.flags and "all" in result.flags[0] and "advantage" in result.flags[0]
    assert read_model_ref(tmp_path / "pruned") == {"source": str(tiny_pair[1])}
    assert result.layers() == f"{prune.stats['num_layers_after']}/{prune.stats['num_layers_before']}"
    no_base = {"name": "chatonly", "path": str(tiny_pair[1])}
    result = prune_step(_cfg([no_base]), no_base, data, tmp_path / "pruned2", progress=False)
    assert result.status == "ok" and "no base_path" in result.flags[0]


def test_validation_warns_about_candidates_pruning_cannot_handle(tmp_path, tiny_pair):
    from damoc.workflow.preflight import pruning_warnings

    phi = tmp_path / "phi"
    phi.mkdir()
    (phi / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 2}))  # no causal LM: unprunable
    cands = [{"name": "ok", "path": str(tiny_pair[1]), "base_path": str(tiny_pair[0])},
             {"name": "chatonly", "path": str(tiny_pair[1])},
             {"name": "phi", "path": str(phi), "base_path": str(phi)}]
    warnings = pruning_warnings(_cfg(cands))
    assert len(warnings) == 2 and "chatonly" in warnings[0] and "no base_path" in warnings[0]
    assert "phi" in warnings[1] and "unpruned" in warnings[1]
    assert pruning_warnings(_cfg(cands, mode="grid_search")) == []


def test_sanity_flags_for_diverged_training_and_empty_answers():
    from damoc.workflow.candidate_steps import _sanity_flags

    result = CandidateResult(candidate="c")
    result.record(StageResult(stage="train", stats={"loss_is_finite": False, "train_loss": float("nan")}))
    result.record(StageResult(stage="evaluate", stats={"samples": 10, "empty_predictions": 7}))
    _sanity_flags(result)
    assert result.flags[0].startswith("training diverged") and "7 of 10 generated answers are empty" in result.flags[1]


def test_a_broken_scorer_skips_compression_instead_of_sinking_the_run(tmp_path):
    from damoc.workflow.data_steps import compress_step

    data = tmp_path / "d.jsonl"
    write_samples(SAMPLES, data)
    cfg = parse_config({"data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"},
                        "candidates": [{"name": "a", "path": "/x"}],
                        "compression": {"scorer_model": str(tmp_path / "no-such-scorer")}})
    result = compress_step(cfg, data, tmp_path / "out.jsonl", progress=False)
    assert result.status == "skipped" and "uncompressed rows" in result.reason and "no-such-scorer" in result.reason
    assert (tmp_path / "out.jsonl").read_text() == data.read_text()
