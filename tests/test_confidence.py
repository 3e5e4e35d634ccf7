"""How sure the pick is: bootstrap p_best (damoc.selection.uncertainty), in selection.json and the report, and the
benchmark's calibration table (damoc.benchmark.calibration)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from damoc.benchmark.calibration import calibration_entries, calibration_table, run_confidence
from damoc.results import CandidateResult, StageResult
from damoc.selection.ranking import build_selection
from damoc.selection.report import render_report
from damoc.selection.uncertainty import bootstrap_p_best, paired_bootstrap


def test_a_lead_on_every_row_is_sure_and_identical_rows_split_evenly():
    rows = 50
    doc = bootstrap_p_best({"a": [1.0] * rows, "b": [0.5] * rows, "c": [0.0] * rows}, "a", samples=300)
    assert doc["p_best"] == 1.0 and doc["sure"] and doc["p_first"] == {"a": 1.0, "b": 0.0, "c": 0.0}
    same = list(np.linspace(0, 1, rows))
    tie = bootstrap_p_best({"a": same, "b": same}, "a", samples=300)
    assert tie["p_best"] == pytest.approx(0.5) and not tie["sure"]
    assert doc["method"] == "paired bootstrap" and doc["signal_rows"] == rows and doc["samples"] == 300


def test_p_best_matches_the_normal_approximation_of_the_paired_gap():
    """Two candidates: P(mean gap > 0) under the bootstrap is about Phi(mean / (sd / sqrt(n))) of the row gaps."""
    rng = np.random.default_rng(3)
    n = 200
    b = rng.normal(0.0, 1.0, n)
    a = b + rng.normal(0.08, 1.0, n)  # a small paired lead: neither sure nor a coin flip
    gaps = a - b
    z = gaps.mean() / (gaps.std(ddof=0) / math.sqrt(n))
    expected = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    doc = bootstrap_p_best({"a": a, "b": b}, "a", samples=4000)
    assert 0.55 < expected < 0.97
    assert doc["p_best"] == pytest.approx(expected, abs=0.03)
    assert doc["p_first"]["a"] + doc["p_first"]["b"] == pytest.approx(1.0)
    assert bootstrap_p_best({"a": a, "b": b}, "b", samples=4000)["p_best"] == pytest.approx(1 - doc["p_best"])


def test_shares_sum_to_one_unpaired_are_left_out_and_bad_input_raises():
    rng = np.random.default_rng(0)
    rows = {name: rng.normal(mu, 1.0, 80) for name, mu in (("a", 0.3), ("b", 0.2), ("c", 0.0))}
    rows["short"] = [1.0, 2.0]
    rows["nan"] = [float("nan")] * 80
    doc = bootstrap_p_best(rows, "a", samples=500)
    assert doc["unpaired"] == ["nan", "short"] and doc["candidates"] == ["a", "b", "c"]
    assert sum(doc["p_first"].values()) == pytest.approx(1.0)
    assert doc["p_first"]["a"] > doc["p_first"]["c"]
    assert bootstrap_p_best(rows, "a", samples=500) == doc  # seeded
    with pytest.raises(ValueError, match="no row values"):
        bootstrap_p_best(rows, "zzz")
    with pytest.raises(ValueError, match="sure_at"):
        bootstrap_p_best(rows, "a", sure_at=0.0)


def _evaluated(name: str, rows: list[float]) -> CandidateResult:
    stats = {"score": sum(rows) / len(rows), "row_scores": rows, "loglik": -1.0, "row_loglik": [-1.0] * len(rows)}
    return CandidateResult(candidate=name, score=stats["score"],
                           stages={"evaluate": StageResult(stage="evaluate", stats=stats)})


def test_selection_document_and_report_say_how_sure_the_pick_is():
    results = [_evaluated("a", [1.0, 1.0, 0.0, 1.0] * 10), _evaluated("b", [1.0, 0.0, 1.0, 0.0] * 10),
               _evaluated("c", [0.0] * 40)]
    sel = build_selection(mode="damoc", metric="m", results=results, stage_seconds={}, total_seconds=1.0,
                          stage_results=[], tie_confidence=0.9, bootstrap_samples=1000)
    conf = sel["confidence"]
    assert sel["selected"] == "a" and conf["selected"] == "a" and 0.9 < conf["p_best"] < 1.0 and conf["sure"]
    assert conf["p_first"]["c"] == 0.0 and conf["sure_at"] == 0.9
    report = render_report(sel)
    assert "How sure" in report and f"{conf['p_best']:.0%} of 1000 paired bootstrap resamples" in report
    # ranked by loglik all three tie exactly: p_best is the even share
    by_loglik = build_selection(mode="damoc", metric="m", results=results, stage_seconds={}, total_seconds=1.0,
                                stage_results=[], rank_by="loglik")
    assert by_loglik["confidence"]["p_best"] == pytest.approx(1 / 3) and not by_loglik["confidence"]["sure"]
    none = build_selection(mode="damoc", metric="m", results=[CandidateResult(candidate="x", status="failed")],
                           stage_seconds={}, total_seconds=1.0, stage_results=[])
    assert none["confidence"] is None and "How sure" not in render_report(none)


def _cand(mean: float, rows: list[float]) -> dict:
    return {"status": "ok", "score": mean, "row_scores": rows, "loglik": mean, "row_loglik": rows}


def test_calibration_table_counts_confirmed_picks_per_confidence_bin():
    sure_rows = [1.0] * 40
    truth = {"t1": {"best": "a", "tolerated": ["a"]}, "t2": {"best": "b", "tolerated": ["b", "a"]}}
    results = {"r": {"t1": {"candidates": {"a": _cand(1.0, sure_rows), "b": _cand(0.0, [0.0] * 40)}},
                     "t2": {"candidates": {"a": _cand(0.5, [1.0, 0.0] * 20), "b": _cand(0.5, [0.0, 1.0] * 20)}},
                     "t3": {"candidates": {"a": _cand(1.0, sure_rows)}}}}  # no ground truth: left out
    entries = calibration_entries(truth, results, signals=("metric",), samples=400)
    assert [(e["task"], e["pick"], e["strict"], e["tolerant"]) for e in entries] == \
        [("t1", "a", True, True), ("t2", "a", False, True)]
    assert entries[0]["p_best"] == 1.0 and 0.3 < entries[1]["p_best"] < 0.7
    table = calibration_table(entries)
    counts = {(b["p_best_from"], b["p_best_to"]): b["picks"] for b in table["bins"]}
    assert counts[(0.9, 1.0)] == 1 and sum(counts.values()) == 2
    assert table["sure"]["picks"] == 1 and table["sure"]["strict_share"] == 1.0
    assert table["all"]["strict_share"] == 0.5 and table["all"]["tolerant_share"] == 1.0
    assert run_confidence({"x": {"status": "failed"}}, "metric") is None
    with pytest.raises(ValueError, match="increasing"):
        calibration_table(entries, edges=(0.5, 0.2))


# --- racing the tied set (damoc.selection.racing) ----------------------------------------------------------------

def _learner(means: dict[str, float], noise: float = 1.0, rows: int = 40, rows_per_round: int = 40,
             lucky: str | None = None):
    """Proxies whose per-row values are their true mean plus noise; each round adds eval rows (the same new rows
    for every candidate: paired), so the race sees more of the truth. `lucky` does 0.4 better on the first rows
    than its mean says (the initial eval set flatters it)."""
    rng = np.random.default_rng(7)
    shared = rng.normal(0.0, noise, 4000)  # row difficulty, shared by all candidates
    own = {name: rng.normal(0.0, noise, 4000) for name in means}
    if lucky:
        own[lucky][:rows] += 0.4
    calls: list[tuple[str, int]] = []

    def values(name: str, n: int) -> list[float]:
        return list(means[name] + shared[:n] + own[name][:n])

    def advance(name: str, round_no: int) -> list[float]:
        calls.append((name, round_no))
        return values(name, rows + round_no * rows_per_round)

    return values, advance, calls


def test_racing_breaks_a_tie_towards_the_better_candidate_and_counts_its_cost():
    from damoc.selection.racing import RacingSettings, race, racing_set

    means = {"a": 0.0, "b": 0.2, "c": -2.0}
    values, advance, calls = _learner(means, lucky="a")
    start = {name: values(name, 40) for name in means}
    assert np.mean(start["a"]) > np.mean(start["b"])  # the first 40 rows pick the wrong one ...
    unc = paired_bootstrap({k: start[k] for k in ("a", "b")}, "a", confidence=0.9, samples=500)
    tied = racing_set(unc)
    assert sorted(tied) == ["a", "b"]  # 40 rows cannot separate a 0.2 lead with noise 1
    settings = RacingSettings(confidence=0.9, max_rounds=8, steps_per_round=10, rows_per_round=40)
    result = race(start, tied, advance, settings)
    assert result.pick == "b" and result.stopped_by in ("one left", "confident")  # ... the race does not
    assert all(name in tied for name, _ in calls)  # only the tied set spends budget ("c" never advances)
    assert result.extra_steps == sum(r["extra_steps"] for r in result.rounds) == 10 * len(calls)
    assert result.extra_row_evaluations == sum(len(advance_rows) for advance_rows in
                                               [values(n, 40 + r * 40) for n, r in calls])
    assert result.rounds[-1]["p_best"] == result.p_best and (result.p_best >= 0.9 or result.eliminated)


def test_racing_stops_at_the_budget_and_at_max_rounds():
    from damoc.selection.racing import RacingSettings, race

    means = {"a": 0.0, "b": 0.0}  # a true tie: never broken
    values, advance, calls = _learner(means)
    start = {name: values(name, 40) for name in means}
    capped = race(start, ["a", "b"], advance, RacingSettings(steps_per_round=10, max_rounds=5, max_extra_steps=45))
    assert capped.stopped_by == "budget" and capped.extra_steps == 40 and len(capped.rounds) == 2
    _, advance2, _ = _learner(means)
    rounds = race(start, ["a", "b"], advance2, RacingSettings(steps_per_round=10, rows_per_round=40, max_rounds=2))
    assert rounds.stopped_by in ("max_rounds", "one left") and len(rounds.rounds) <= 2
    with pytest.raises(ValueError, match="two tied"):
        race(start, ["a"], advance)
    with pytest.raises(ValueError, match="steps or eval rows"):
        RacingSettings(steps_per_round=0, rows_per_round=0)


def test_entries_from_report_rows_use_p_best_or_the_tie_flag():
    from damoc.benchmark.calibration import entries_from_report_rows

    rows = [{"recipe": "paper", "signal": "loglik", "tasks": {
                "t1": {"pick": "a", "strict_top1": True, "tolerant_top1": True, "ties": [], "p_best": 0.95},
                "t2": {"pick": "b", "strict_top1": False, "tolerant_top1": True, "ties": ["a"]},
                "t3": {"pick": None}}},
            {"recipe": "0-shot", "signal": "metric", "tasks": {"t1": {"pick": "c", "ties": []}}},
            {"recipe": "halving", "signal": "halving", "tasks": {"t1": {"pick": "a", "ties": []}}}]
    out = entries_from_report_rows(rows, skip_recipes=("0-shot",))
    assert [(e["task"], e["p_best"]) for e in out["p_best"]] == [("t1", 0.95)]
    assert [(e["task"], e["p_best"], e["tolerant"]) for e in out["tie_flag"]] == [("t1", 1.0, True),
                                                                                 ("t2", 0.0, True)]
    table = calibration_table(out["tie_flag"])
    assert table["sure"]["picks"] == 1 and table["bins"][0]["picks"] == 1
