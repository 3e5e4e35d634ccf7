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
    assert set(sel) == {"mode", "metric", "selected", "ranking", "cost", "stats"}
    assert sel["selected"] == "a"
    assert set(sel["cost"]) == {"stage_seconds", "train_seconds", "total_seconds"}
    assert sel["cost"]["train_seconds"] == {"a": 20.0, "b": 10.0, "c": 0.0, "d": 5.0}
    report = render_report(sel)
    assert "| 1 | a | 0.7000 | ok |" in report and "train: OOM" in report and "### filter" in report


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
    assert main(["compare", a, both]) == 0 and '"top1_agree": true' in capsys.readouterr().out
