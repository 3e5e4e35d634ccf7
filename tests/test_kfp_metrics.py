"""What the KFP UI's Metrics artifacts show: flat, finite floats from the stage results (no KFP needed)."""
import math

from damoc.results import CandidateResult, StageResult
from damoc.selection.kfp_metrics import candidate_metrics, selection_metrics, stage_metrics


def _all_finite_floats(metrics):
    assert metrics, "no metrics"
    for name, value in metrics.items():
        assert isinstance(name, str) and type(value) is float and math.isfinite(value), (name, value)


def test_filter_stage_kept_rows_and_fraction():
    result = StageResult(stage="filter", seconds=29.4, stats={"method": "graphcut", "n_in": 1500, "n_out": 300,
                                                              "ratio": 0.2, "seconds": 29.3, "embed_seconds": 29.0})
    m = stage_metrics(result)
    _all_finite_floats(m)
    assert m["seconds"] == 29.4  # the step's wall time, not the method's own timer
    assert m["kept_rows"] == 300.0 and m["kept_fraction"] == 0.2 and m["n_in"] == 1500.0
    assert m["ok"] == 1.0 and m["skipped"] == 0.0 and "method" not in m


def test_compress_stage_token_ratio_and_gate():
    result = StageResult(stage="compress", seconds=18.8,
                         stats={"scorer_model": "/x", "n": 300, "passed_gate": 270, "fell_back": 30,
                                "token_ratio": 0.93, "word_ratio": 0.79, "mean_bertscore": float("nan")})
    m = stage_metrics(result)
    _all_finite_floats(m)
    assert m["token_ratio"] == 0.93 and m["word_ratio"] == 0.79
    assert m["kept_rows"] == 270.0 and m["kept_fraction"] == 0.9
    assert "mean_bertscore" not in m  # NaN would break the artifact's JSON


def test_skipped_and_prepare_stages():
    m = stage_metrics(StageResult(stage="filter", status="skipped", reason="mode=grid_search"))
    assert m == {"seconds": 0.0, "ok": 0.0, "skipped": 1.0}
    m = stage_metrics(StageResult(stage="prepare", stats={"train_samples": 1500, "eval_samples": 60,
                                                          "task": "qa_long"}))
    assert m["kept_rows"] == 1500.0 and m["eval_samples"] == 60.0


def _candidate():
    r = CandidateResult(candidate="tiny-llama")
    r.record(StageResult(stage="prune", seconds=4.0, stats={
        "skipped": False, "num_layers_before": 4, "num_layers_after": 3, "pruned_layers": [2],
        "similarities": [0.1, 0.8, 0.96, 0.96], "params_before": 1180800, "params_after": 1016704,
        "alphas": {"2": 0.03}, "params": None}))
    r.record(StageResult(stage="train", seconds=22.0, stats={"method": "full", "samples": 300, "tokens": 43169,
                                                             "steps": 57, "train_loss": 4.31, "loss_is_finite": True}))
    r.record(StageResult(stage="evaluate", seconds=7.4, stats={
        "score": 0.054, "loglik": -3.2, "samples": 60, "examples": [{"input": "q"}], "row_scores": [0.1] * 60}))
    r.score = 0.054
    r.flags.append("a caveat")
    return r


def test_candidate_metrics_per_task():
    r = _candidate()
    prune = candidate_metrics(r, stages=("prune",))
    _all_finite_floats(prune)
    assert prune["layers_total"] == 4.0 and prune["layers_kept"] == 3.0 and prune["layers_kept_fraction"] == 0.75
    assert prune["prune.seconds"] == 4.0 and prune["prune.params_after"] == 1016704.0
    assert not any(k.startswith("train.") for k in prune)
    train = candidate_metrics(r, stages=("train",))
    assert train["train.train_loss"] == 4.31 and train["train.tokens"] == 43169.0 and train["train.seconds"] == 22.0
    everything = candidate_metrics(r)
    _all_finite_floats(everything)
    assert everything["score"] == 0.054 and everything["loglik"] == -3.2 and everything["flags"] == 1.0
    assert everything["ok"] == 1.0 and everything["evaluate.seconds"] == 7.4
    assert {"prune.seconds", "train.seconds", "evaluate.seconds"} <= set(everything)
    assert not any("row_scores" in k or "examples" in k or "similarities" in k for k in everything)


def test_failed_candidate_metrics():
    r = CandidateResult(candidate="broken")
    r.record(StageResult(stage="prune", status="failed", reason="FileNotFoundError: /x", seconds=0.2))
    m = candidate_metrics(r)
    _all_finite_floats(m)
    assert m["ok"] == 0.0 and "score" not in m and m["prune.ok"] == 0.0 and m["flags"] == 0.0


def test_selection_metrics():
    selection = {
        "selected": "a", "tied_with_winner": ["b"],
        "uncertainty": {"intervals": {"a": [0.3, 0.5], "b": [0.28, 0.45]}},
        "ranking": [{"candidate": "a", "score": 0.4, "rank": 1, "status": "ok", "loglik": -2.0},
                    {"candidate": "b", "score": 0.38, "rank": 2, "status": "ok", "flags": ["x", "y"]},
                    {"candidate": "c", "score": None, "rank": None, "status": "failed", "error": "boom"}],
        "cost": {"stage_seconds": {"filter": 29.4, "train": 80.0}, "total_seconds": 150.0},
    }
    m = selection_metrics(selection)
    _all_finite_floats(m)
    assert m["score.a"] == 0.4 and m["score.b"] == 0.38 and "score.c" not in m
    assert m["interval_low.a"] == 0.3 and m["interval_high.b"] == 0.45 and m["loglik.a"] == -2.0
    assert m["flags.b"] == 2.0 and m["seconds.train"] == 80.0 and m["total_seconds"] == 150.0
    assert m["candidates_ok"] == 2.0 and m["candidates_failed"] == 1.0 and m["tied_with_winner"] == 1.0
    m = selection_metrics({**selection, "uncertainty": None})
    assert not any(k.startswith("interval_") for k in m)
