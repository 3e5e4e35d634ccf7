"""Sequential evaluation: the leader is decided on as few eval rows as the paired bootstrap needs."""
from __future__ import annotations

import numpy as np
import pytest

from damoc.selection.sequential import looks, sequential_decision


def test_looks_double_from_one_block_then_all_rows():
    assert looks(200, 20) == [20, 40, 80, 160, 200]
    assert looks(160, 20) == [20, 40, 80, 160]
    assert looks(100, 20, min_rows=30) == [30, 60, 100]
    with pytest.raises(ValueError):
        looks(10, 0)


def test_a_clear_leader_is_decided_on_the_first_block():
    rng = np.random.default_rng(0)
    rows = {"strong": list(rng.normal(-1.0, 0.3, 200)), "weak": list(rng.normal(-2.0, 0.3, 200)),
            "weaker": list(rng.normal(-2.5, 0.3, 200))}
    dec = sequential_decision(rows, block=20, confidence=0.9, samples=500)
    assert dec["decided"] and dec["rows_used"] == 20 and dec["leader"] == "strong" and dec["agrees"]
    assert dec["saving"] == pytest.approx(0.9)
    assert dec["per_look_confidence"] == pytest.approx(1 - 0.1 / 5)  # Bonferroni over the 5 looks


def test_a_close_race_needs_more_rows_and_a_tie_uses_them_all():
    rng = np.random.default_rng(1)
    common = rng.normal(-1.5, 0.5, 400)  # shared row difficulty: the pairing is what separates them
    close = {"a": list(common + 0.05 + rng.normal(0, 0.1, 400)), "b": list(common + rng.normal(0, 0.1, 400))}
    dec = sequential_decision(close, block=20, confidence=0.9, samples=500)
    assert dec["decided"] and 20 < dec["rows_used"] < 400 and dec["leader"] == "a"
    same = {"a": list(common), "b": list(common)}
    dec = sequential_decision(same, block=20, confidence=0.9, samples=500)
    assert not dec["decided"] and dec["rows_used"] == 400 and dec["saving"] == 0.0
    assert [look["rows"] for look in dec["looks"]] == looks(400, 20)


def test_false_leaders_stay_rare_under_repeated_looks():
    """Two candidates of the same quality: stopping early (on a leader that is not better) must stay within
    1 - confidence despite the repeated looks (Bonferroni)."""
    rng = np.random.default_rng(2)
    stopped = 0
    trials = 60
    for _ in range(trials):
        rows = {"a": list(rng.normal(0, 1, 100)), "b": list(rng.normal(0, 1, 100))}
        stopped += sequential_decision(rows, block=20, confidence=0.8, samples=300)["decided"]
    assert stopped / trials <= 0.2


def test_unpaired_rows_are_an_error():
    with pytest.raises(ValueError, match="paired"):
        sequential_decision({"a": [0.0] * 10, "b": [0.0] * 9})


def test_rank_step_reports_rows_used(tmp_path):
    from damoc.config import parse_config
    from damoc.results import CandidateResult, StageResult
    from damoc.workflow.rank_step import rank_step

    rng = np.random.default_rng(3)

    def result(name: str, mean: float) -> CandidateResult:
        values = list(rng.normal(mean, 0.2, 120))
        ev = StageResult(stage="evaluate", stats={"loglik": float(np.mean(values)), "row_loglik": values,
                                                  "samples": 120})
        return CandidateResult(candidate=name, score=float(np.mean(values)), stages={"evaluate": ev})

    cfg = parse_config({"data": {"train": "t.jsonl", "eval": "e.jsonl"},
                        "candidates": [{"name": "a", "path": "x"}, {"name": "b", "path": "y"}],
                        "evaluation": {"sequential": True, "sequential_block": 30, "predict": False}})
    sel = rank_step(cfg, [result("a", -1.0), result("b", -2.0)], [], started_at=0.0,
                    selection_out=tmp_path / "s.json", report_out=tmp_path / "r.md")
    seq = sel["sequential_eval"]
    assert seq["rows_used"] == 30 and seq["rows_available"] == 120 and seq["leader"] == sel["selected"] == "a"
    assert seq["signal"] == "row_loglik"
    assert "error" in sel["projected_cost"]  # t.jsonl does not exist: reported, the ranking is not failed
