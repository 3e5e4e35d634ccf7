"""The BERTScore gate: bert-score with a configurable model and layer; long texts gated whole, in windows."""
from __future__ import annotations

import pytest

from damoc.compression.gate import bertscore_texts, gate_scores, resolve_gate_model, windows
from damoc.data.schema import Sample

WORDS = ("the patient reported a mild headache and was given rest and fluids while the river flows through "
         "the old town past the market").split()


def _long(n: int, shift: int = 0) -> str:
    return " ".join((WORDS * (n // len(WORDS) + 2))[shift:shift + n])


def test_windows_cover_both_texts_whole():
    ref, cand = _long(650), _long(300)
    parts = windows(cand, ref, 200)
    assert len(parts) == 4
    assert " ".join(c for c, _, _ in parts).split() == cand.split()
    assert " ".join(r for _, r, _ in parts).split() == ref.split() and sum(w for *_, w in parts) == 650
    assert windows("a b", "c d", 200) == [("a b", "c d", 2)]


def test_default_model_and_layer():
    path, layer = resolve_gate_model(None, None)
    assert layer == 6 and path
    assert resolve_gate_model(path, 3) == (path, 3)


def test_long_answers_are_gated_not_truncated():
    """A change in the last part of a 700-word answer (past 512 word pieces) lowers the score."""
    original = Sample("x", "answer", "question", _long(700))
    changed_tail = Sample("x", "answer", "question", _long(560) + " " + " ".join(["zebra quantum violin"] * 47))
    same, changed = gate_scores([original, original], [original, changed_tail])
    assert same == pytest.approx(1.0, abs=1e-4)
    assert changed < 0.97


def test_layer_is_configurable_and_empty_candidate_scores_zero():
    cands, refs = ["the patient had a headache", ""], ["the patient reported a mild headache", "text"]
    l6, l2 = bertscore_texts(cands, refs), bertscore_texts(cands, refs, layer=2)
    assert l6[1] == 0.0 and l2[1] == 0.0
    assert 0 < l6[0] < 1 and l6[0] != pytest.approx(l2[0], abs=1e-4)
