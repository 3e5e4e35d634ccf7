import pytest

from damoc.results import CandidateResult, StageResult
from damoc.selection.agreement import compare_selections
from damoc.selection.ranking import build_selection, rank_results
from damoc.selection.report import render_report



def _result(name, score, train_seconds=0.0, error=None):
    r = CandidateResult(candidate=name, score=score,
                        stages={"train": StageResult(stage="train", seconds=train_seconds)})
    if error:
        r.status, r.error = "failed", error
    return r


RESULTS = [_result("b", 0.5, 10.0), _result("a", 0.7, 20.0), _result("c", None, error="train: OOM"),
           _result("d", 0.5, 5.0)]


def test_ranking_orders_by_score_and_lists_failures_last():
    ranking = rank_results(RESULTS)
    assert [(r["candidate"], r["rank"], r["status"]) for r in ranking] == [
        ("a", 1, "ok"), ("b", 2, "ok"), ("d", 3, "ok"), ("c", None, "failed")]
    assert ranking[-1]["error"] == "train: OOM"


def test_selection_document_has_the_contract_keys():
    sel = build_selection(mode="damoc", metric="squad_f1", results=RESULTS, stage_seconds={"filter": 1.25},
                          total_seconds=40.0, stage_results=[StageResult(stage="filter", stats={"n_out": 3})])
    assert set(sel) == {"mode", "metric", "rank_by", "warnings", "selected", "tied_with_winner", "uncertainty",
                        "confidence", "ranking", "methods", "cost", "stats"}
    assert sel["selected"] == "a" and sel["methods"] is None  # no model trained both ways
    assert set(sel["cost"]) == {"stage_seconds", "stage_seconds_basis", "train_seconds", "train_runtime_seconds",
                                "train_load_save_seconds", "gpu_hours", "total_seconds"}
    assert sel["cost"]["stage_seconds_basis"] == {"filter": "wall"}
    assert sel["cost"]["train_seconds"] == {"a": 20.0, "b": 10.0, "c": 0.0, "d": 5.0}
    report = render_report(sel)
    assert "| 1 | a | 0.7000 |" in report and "train: OOM" in report and "| filter | ok | 0.0 | kept 3 of — rows |" in report
    assert "```" not in report and "{" not in report  # tables, no JSON (the JSON is selection.json)


def test_all_failed_selects_nothing():
    sel = build_selection(mode="damoc", metric="m", results=[RESULTS[2]], stage_seconds={}, total_seconds=1.0,
                          stage_results=[])
    assert sel["selected"] is None and "every candidate failed" in render_report(sel)


def test_agreement_against_known_values():
    def doc(scores, total):
        res = [_result(k, v, total / 2) for k, v in scores.items()]
        return build_selection(mode="x", metric="m", results=res, stage_seconds={}, total_seconds=total,
                               stage_results=[])

    cheap = doc({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}, 10.0)
    same = doc({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}, 50.0)
    swapped = doc({"a": 0.8, "b": 0.9, "c": 0.7, "d": 0.1}, 50.0)
    r = compare_selections(cheap, same)
    assert r["top1_agree"] and r["kendall_tau"] == pytest.approx(1.0) and r["wall_time_ratio"] == 5.0
    r = compare_selections(cheap, swapped)
    # one discordant pair of 6: tau = (5 - 1) / 6; spearman = 1 - 6*2/(4*15)
    assert not r["top1_agree"]
    assert r["kendall_tau"] == pytest.approx(4 / 6) and r["spearman_rho"] == pytest.approx(0.8)


def test_compare_cli_refuses_runs_with_nothing_in_common(tmp_path, capsys):
    import json

    from damoc.cli import main

    def write(name, results):
        doc = build_selection(mode="x", metric="m", results=results, stage_seconds={}, total_seconds=10.0,
                              stage_results=[])
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return str(path)

    a = write("a.json", [_result("a", 0.5, 1.0)])
    b = write("b.json", [_result("b", 0.7, 1.0)])
    assert main(["compare", a, b]) == 2
    assert "no candidate in common" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["compare", a, str(tmp_path / "junk.json")]) == 2
    assert "cannot read a selection.json" in capsys.readouterr().err
    both = write("c.json", [_result("a", 0.4, 2.0)])
    assert main(["compare", a, both, "--json"]) == 0 and '"top1_agree": true' in capsys.readouterr().out


def _evaluated(name, rows, loglik_rows=None):
    stats = {"score": sum(rows) / len(rows), "row_scores": rows}
    if loglik_rows:
        stats.update(loglik=sum(loglik_rows) / len(loglik_rows), row_loglik=loglik_rows)
    return CandidateResult(candidate=name, score=stats["score"],
                           stages={"evaluate": StageResult(stage="evaluate", stats=stats)})


def test_paired_bootstrap_names_ties_and_separates_clear_leads():
    from damoc.selection.uncertainty import paired_bootstrap

    rows = 200
    winner = [1.0] * rows
    close = [1.0] * (rows - 2) + [0.0, 0.0]  # 2 rows worse: gap 0.01, interval reaches 0
    far = [0.0] * rows
    doc = paired_bootstrap({"w": winner, "close": close, "far": far, "short": [1.0]}, "w",
                           confidence=0.9, samples=500)
    assert doc["tied_with_winner"] == ["close"] and doc["unpaired"] == ["short"]
    assert doc["gap_intervals"]["far"] == [1.0, 1.0] and doc["intervals"]["w"] == [1.0, 1.0]
    assert doc["gap_intervals"]["close"][0] == 0.0 and doc["gap_intervals"]["close"][1] > 0.0
    again = paired_bootstrap({"w": winner, "close": close, "far": far}, "w", confidence=0.9, samples=500)
    assert again["gap_intervals"] == doc["gap_intervals"]  # seeded: same inputs, same report
    with pytest.raises(ValueError):
        paired_bootstrap({"w": winner}, "x")


def test_selection_reports_ties_with_the_winner_and_strips_row_values():
    results = [_evaluated("a", [1.0, 1.0, 0.0, 1.0] * 10, [-1.0] * 40),
               _evaluated("b", [1.0, 0.0, 1.0, 1.0] * 10, [-3.0] * 40),
               _evaluated("c", [0.0, 0.0, 0.0, 0.0] * 10, [-2.0] * 40)]
    sel = build_selection(mode="damoc", metric="m", results=results, stage_seconds={}, total_seconds=1.0,
                          stage_results=[])
    assert sel["selected"] in ("a", "b") and sel["tied_with_winner"] == [({"a", "b"} - {sel["selected"]}).pop()]
    assert [r.get("tied_with_winner", False) for r in sel["ranking"]] == [False, True, False]
    assert "row_scores" not in str(sel["stats"]) and sel["ranking"][0]["loglik"] == -1.0
    assert "Tied with the winner" in render_report(sel)
    by_loglik = build_selection(mode="damoc", metric="m", results=results, stage_seconds={}, total_seconds=1.0,
                                stage_results=[], rank_by="loglik")
    assert by_loglik["tied_with_winner"] == [] and by_loglik["uncertainty"]["gap_intervals"]["c"] == [1.0, 1.0]


def test_a_diverged_candidate_is_flagged_and_never_selected_and_thin_data_is_warned_about():
    healthy, diverged = _result("healthy", 0.2), _result("diverged", 0.9)
    diverged.stages["train"].stats.update(loss_is_finite=False, train_loss=float("nan"))
    diverged.flags.append("training diverged (loss nan): its score is not a measure of the candidate")
    prepare = StageResult(stage="prepare", stats={"train_samples": 3, "eval_samples": 1})
    sel = build_selection(mode="damoc", metric="m", results=[diverged, healthy], stage_seconds={},
                          total_seconds=1.0, stage_results=[prepare])
    assert sel["selected"] == "healthy" and sel["ranking"][1]["flags"][0].startswith("training diverged")
    assert len(sel["warnings"]) == 2 and "3 training rows" in sel["warnings"][0]
    assert "**Warning:** only 1 evaluation rows" in render_report(sel)
