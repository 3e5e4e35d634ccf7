"""`damoc compare`: candidates missing or failed in one run, and the fine-tuning method agreement (Table 7)."""
import json

import pytest

from damoc.cli import main
from damoc.selection.agreement import compare_selections, coverage, method_agreement


def _doc(ranking, selected=None, methods=None, mode="grid_search", total=10.0, tied=()):
    """A hand-made selection.json: ranking rows (candidate, score or None for failed)."""
    rows = [{"candidate": c, "score": s, "status": "ok" if s is not None else "failed"} for c, s in ranking]
    return {"mode": mode, "selected": selected, "ranking": rows, "methods": methods, "tied_with_winner": list(tied),
            "cost": {"total_seconds": total, "train_seconds": {c: 1.0 for c, _ in ranking}}}


def _methods(chosen, selected):
    return {"per_model": {m: {"chosen": c} for m, c in chosen.items()},
            "selected_model": selected[0], "selected_method": selected[1]}


def test_candidates_missing_or_failed_in_one_run_are_listed():
    cheap = _doc([("a", 0.9), ("b", 0.5), ("c", None), ("x", 0.1)], selected="a")
    ref = _doc([("a", 0.8), ("b", 0.7), ("c", 0.6), ("d", None), ("y", 0.2)], selected="a")
    assert coverage(cheap, ref) == {"missing_in_cheap": ["d", "y"], "missing_in_reference": ["x"],
                                    "failed_in_cheap": ["c"], "failed_in_reference": []}
    r = compare_selections(cheap, ref)
    assert r["candidates"] == ["a", "b"] and r["top1_agree"] is True
    assert r["kendall_tau"] == pytest.approx(1.0)  # a > b in both
    assert r["missing_in_cheap"] == ["d", "y"] and r["failed_in_cheap"] == ["c"]
    assert "methods" not in r  # neither run chose methods


def test_method_agreement_rate_like_table_7():
    cheap = _doc([("a@full", 0.9), ("a@lora", 0.5), ("b@lora", 0.4), ("c@lora", 0.3), ("e@full", 0.2)],
                 selected="a@full",
                 methods=_methods({"a": "full", "b": "lora", "c": "lora", "e": None}, ("a", "full")))
    ref = _doc([("a@full", 0.8), ("a@lora", 0.7), ("b@lora", 0.6), ("c@full", 0.5), ("e@full", 0.1)],
               selected="a@full",
               methods=_methods({"a": "full", "b": "lora", "c": "full", "e": "full", "f": "lora"}, ("a", "full")))
    m = method_agreement(cheap, ref)
    assert m["models"] == ["a", "b", "c"]  # e: no choice in the cheap run (both variants failed); f: only in ref
    assert m["per_model"]["c"] == {"cheap": "lora", "reference": "full", "agree": False}
    assert m["agreement_rate"] == pytest.approx(2 / 3)
    assert m["selected_agree"] is True and m["not_compared"] == ["e", "f"]
    assert compare_selections(cheap, ref)["methods"] == m
    ref["methods"]["selected_method"] = "lora"
    assert method_agreement(cheap, ref)["selected_agree"] is False  # same model, other method: no agreement


def test_method_agreement_with_no_model_in_common():
    cheap = _doc([("a@full", 0.9)], methods=_methods({"a": "full"}, ("a", "full")))
    ref = _doc([("b@full", 0.9)])
    m = method_agreement(cheap, ref)
    assert m["models"] == [] and m["agreement_rate"] is None and m["not_compared"] == ["a"]


def test_compare_cli_lists_missing_candidates_then_exits_2_when_nothing_is_shared(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc([("a", 0.5), ("b", None)], selected="a")))
    b.write_text(json.dumps(_doc([("b", 0.7), ("c", 0.1)], selected="b")))
    assert main(["compare", str(a), str(b), "--json"]) == 2
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["missing_in_cheap"] == ["c"] and printed["missing_in_reference"] == ["a"]
    assert printed["failed_in_cheap"] == ["b"] and printed["candidates"] == []
    assert "no candidate in common" in captured.err and captured.err.count("\n") == 1


def test_compare_cli_reports_method_agreement(tmp_path, capsys):
    chosen = {"a": "full", "b": "lora"}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc([("a@full", 0.9), ("b@lora", 0.4)], "a@full", _methods(chosen, ("a", "full")))))
    b.write_text(json.dumps(_doc([("a@full", 0.8), ("b@lora", 0.6)], "a@full",
                                 _methods({**chosen, "b": "full"}, ("a", "full")))))
    assert main(["compare", str(a), str(b), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top1_agree"] is True and printed["methods"]["agreement_rate"] == 0.5


def _files(tmp_path, cheap, reference):
    a, b = tmp_path / "cheap.json", tmp_path / "ref.json"
    a.write_text(json.dumps(cheap) if isinstance(cheap, dict) else cheap)
    b.write_text(json.dumps(reference) if isinstance(reference, dict) else reference)
    return str(a), str(b)


def test_summary_for_people_and_json_for_machines(tmp_path, capsys):
    cheap = _doc([("a", -1.0), ("b", -2.0), ("c", -3.0)], selected="a", mode="damoc", total=50.0)
    ref = _doc([("a", 0.5), ("b", 0.6), ("c", 0.1)], selected="b", total=400.0, tied=["a"])
    a, b = _files(tmp_path, cheap, ref)
    assert main(["compare", a, b]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # the reference is a grid_search run: no warning
    lines = captured.out.splitlines()
    assert lines[0] == "damoc run vs grid_search run: 3 candidate(s) ranked in both"
    assert "  top-1:           differ (a vs b)" in lines
    assert "  tolerant top-1:  yes (tied with the reference's winner)" in lines
    assert "  Kendall \u03c4:       0.33" in lines and "  Spearman \u03c1:      0.50" in lines  # a,b swapped, c last
    assert any(line.startswith("  savings:         wall time 8.0x less (50.0 s vs 400.0 s, 88% saved)")
               for line in lines)
    assert not captured.out.lstrip().startswith("{")
    assert main(["compare", a, b, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1_agree"] is False and result["tolerant_top1_agree"] is True
    assert result["kendall_tau"] == pytest.approx(1 / 3) and result["wall_time_ratio"] == pytest.approx(8.0)


def test_a_reference_that_is_not_grid_search_is_warned_about(tmp_path, capsys):
    cheap = _doc([("a", 0.9), ("b", 0.5)], selected="a", mode="damoc")
    a, b = _files(tmp_path, cheap, {**cheap, "mode": "damoc"})
    assert main(["compare", a, b]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the reference is a 'damoc' run, not grid_search") and err.count("\n") == 1
    del cheap["mode"]
    a, b = _files(tmp_path, cheap, cheap)
    assert main(["compare", a, b, "--json"]) == 0
    captured = capsys.readouterr()
    assert "unknown mode" in captured.err and json.loads(captured.out)["warnings"]


@pytest.mark.parametrize("ranking,needle", [
    (["a", "b"], "ranking[0]: expected an object, got str"),
    ([{"candidate": 3, "status": "ok", "score": 1.0}], "ranking[0].candidate: expected a name"),
    ([{"candidate": "a", "status": "ok", "score": "high"}], "ranking[0].score: status ok needs a finite number"),
    ([{"candidate": "a", "status": "ok", "score": None}], "ranking[0].score"),
])
def test_malformed_ranking_entries_are_one_error_line(tmp_path, capsys, ranking, needle):
    good = _doc([("a", 0.9)], selected="a")
    a, b = _files(tmp_path, {**good, "ranking": ranking}, good)
    assert main(["compare", a, b]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {a}: {needle}" + err.split(needle, 1)[1] and err.count("\n") == 1
    assert "Traceback" not in err


def test_very_deep_json_is_an_error_not_a_crash(tmp_path, capsys):
    good = json.dumps(_doc([("a", 0.9)], selected="a"))
    a, b = _files(tmp_path, "[" * 200_000 + "]" * 200_000, good)
    assert main(["compare", a, b]) == 2
    assert capsys.readouterr().err == f"error: {a}: cannot read a selection.json: nested too deeply\n"


def test_nan_is_refused_on_input_and_never_printed(tmp_path, capsys):
    good = _doc([("a", 0.9), ("b", 0.5)], selected="a")
    a, b = _files(tmp_path, json.dumps(good).replace("0.9", "NaN"), good)
    assert main(["compare", a, b]) == 2
    assert "NaN is not valid JSON" in capsys.readouterr().err
    # constant scores: tau and rho are undefined (NaN in scipy); the output stays valid JSON with null
    flat = _doc([("a", 0.5), ("b", 0.5)], selected="a")
    a, b = _files(tmp_path, flat, good)
    assert main(["compare", a, b, "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and json.loads(out)["kendall_tau"] is None
    assert main(["compare", a, b]) == 0
    assert "  Kendall \u03c4:       n/a" in capsys.readouterr().out.splitlines()
