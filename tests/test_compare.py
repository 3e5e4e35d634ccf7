"""`damoc compare`: candidates missing or failed in one run, and the fine-tuning method agreement (Table 7)."""
import json

import pytest

from damoc.cli import main
from damoc.selection.agreement import compare_selections, coverage, method_agreement


def _doc(ranking, selected=None, methods=None):
    """A hand-made selection.json: ranking rows (candidate, score or None for failed)."""
    rows = [{"candidate": c, "score": s, "status": "ok" if s is not None else "failed"} for c, s in ranking]
    return {"selected": selected, "ranking": rows, "methods": methods,
            "cost": {"total_seconds": 10.0, "train_seconds": {c: 1.0 for c, _ in ranking}}}


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
    assert main(["compare", str(a), str(b)]) == 2
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
    assert main(["compare", str(a), str(b)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top1_agree"] is True and printed["methods"]["agreement_rate"] == 0.5
