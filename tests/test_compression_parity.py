"""Parity with the llmlingua package at equal ratio: short parts kept whole, the coarse stage carrying the cut."""
from __future__ import annotations

import json

import pytest

from damoc.compression.coarse import BaselineSettings
from damoc.compression.compressor import Budget, count_units
from damoc.compression.methods import METHODS
from damoc.data.schema import Sample

PARTS = ("instruction", "input", "output")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- Budget.part_rates(keep_whole_below) — hand-computed --------------------------------------------------

def test_short_question_kept_whole_and_its_cut_moved_to_the_answer():
    budget = Budget(rate=0.78, instruction_rate=1.0)
    tokens = {"instruction": 24, "input": 20, "output": 76}
    # off: one shared rate (0.78 * 120 - 24) / 96 = 0.725
    assert budget.part_rates(tokens) == pytest.approx({"instruction": 1.0, "input": 0.725, "output": 0.725})
    # on: the 20-token question whole, the answer keeps (93.6 - 24 - 20) / 76 = 0.65263
    rates = budget.part_rates(tokens, keep_whole_below=64)
    assert rates == pytest.approx({"instruction": 1.0, "input": 1.0, "output": 49.6 / 76})
    assert sum(rates[p] * n for p, n in tokens.items()) == pytest.approx(0.78 * 120)  # the sample's rate holds


def test_only_the_shortest_part_is_kept_whole_the_last_free_part_carries_the_cut():
    budget = Budget(rate=0.8, instruction_rate=1.0)
    tokens = {"instruction": 24, "input": 20, "output": 40}  # both under 64
    # question first (shortest); the answer cannot be kept whole too: (67.2 - 24 - 20) / 40 = 0.58
    assert budget.part_rates(tokens, keep_whole_below=64) == pytest.approx(
        {"instruction": 1.0, "input": 1.0, "output": 0.58})


def test_a_short_part_is_cut_when_the_others_cannot_absorb_its_share():
    budget = Budget(rate=0.5, instruction_rate=1.0)
    tokens = {"instruction": 24, "input": 20, "output": 30}
    # whole question would need the answer at (37 - 44) / 30 < 0: keep the shared (37 - 24) / 50 = 0.26
    assert budget.part_rates(tokens, keep_whole_below=64) == pytest.approx(
        {"instruction": 1.0, "input": 0.26, "output": 0.26})
    # nor is a part under the threshold kept when the answer would drop under min_rate
    tight = Budget(rate=0.5, instruction_rate=1.0, min_rate=0.3)
    assert tight.part_rates({"instruction": 10, "input": 20, "output": 70}, keep_whole_below=64) == \
        pytest.approx({"instruction": 1.0, "input": 40 / 90, "output": 40 / 90})


def test_fixed_rates_and_long_parts_are_left_alone():
    tokens = {"instruction": 24, "input": 20, "output": 76}
    fixed = Budget(rate=0.78, instruction_rate=1.0, question_rate=0.5)
    assert fixed.part_rates(tokens, keep_whole_below=64) == fixed.part_rates(tokens)
    long_q = {"instruction": 24, "input": 80, "output": 76}
    budget = Budget(rate=0.7, instruction_rate=1.0)
    assert budget.part_rates(long_q, keep_whole_below=64) == budget.part_rates(long_q)


def test_baseline_defaults():
    settings = BaselineSettings()
    assert settings.coarse_factor == 1.0 and settings.keep_whole_below == 64
    assert "keep_whole_below" in METHODS.get("llmlingua").Settings.model_fields
    assert "keep_whole_below" in METHODS.get("longllmlingua").Settings.model_fields


# --- on the tiny zoo ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(zoo_dir):
    from damoc.compression.scorer import PerplexityScorer

    return PerplexityScorer(str(zoo_dir / "tiny-llama" / "chat"))


@pytest.fixture(scope="module")
def demo_samples() -> list[Sample]:
    from damoc.demo.builtin import demo_data_dir

    lines = (demo_data_dir("qa_long") / "train.jsonl").read_text().splitlines()[:12]
    return [Sample(id=str(i), **json.loads(line)) for i, line in enumerate(lines)]


def _run(method, scorer, samples, budget, **settings) -> list[Sample]:
    entry, cache, counters = METHODS.get(method), {}, {}
    return [entry.compress_sample(scorer, s, budget, settings=entry.Settings(**settings), segment_words=200,
                                  answer_scoring="conditional", instruction_cache=cache, counters=counters)
            for s in samples]


def _tokens(scorer, samples, parts=PARTS) -> int:
    return sum(count_units(scorer, getattr(s, p)) for s in samples for p in parts)


@pytest.mark.parametrize("method", ["llmlingua", "longllmlingua"])
def test_modes_keep_short_questions_whole_and_still_meet_the_rate(llama, demo_samples, method):
    budget = Budget(rate=0.6, instruction_rate=1.0)
    out = _run(method, llama, demo_samples, budget)
    short = [i for i, s in enumerate(demo_samples) if count_units(llama, s.input) <= 64]
    assert short and all(out[i].input == demo_samples[i].input for i in short)
    kept = _tokens(llama, out) / _tokens(llama, demo_samples)
    assert abs(kept - 0.6) <= 0.05 * 0.6, kept
    # the answers carried the questions' cut: cut harder than the sample's rate
    assert _tokens(llama, out, ("output",)) / _tokens(llama, demo_samples, ("output",)) < 0.6 - 0.05
    # off: the questions are cut too
    off = _run(method, llama, demo_samples, budget, keep_whole_below=0)
    assert sum(o.input != s.input for o, s in zip(off, demo_samples)) >= len(short) // 2


def test_equal_ratio_quality_beats_the_previous_defaults(zoo_dir, demo_samples):
    """The point of the defaults: at the package's ratio (~0.78) mean BERTScore is higher than with the
    previous settings (coarse_factor 1.5, every part cut): 100 samples gave 0.85 -> 0.90 (compress.md)."""
    from damoc.compression import compress_dataset

    scorer = str(zoo_dir / "tiny-llama" / "chat")
    run = lambda **o: compress_dataset(demo_samples, scorer_model=scorer, rate=0.78, bertscore_threshold=0.9,  # noqa: E731
                                       instruction_rate=1.0, method="llmlingua", gate_failure="best_attempt",
                                       method_options=o)[1]
    new, old = run(), run(coarse_factor=1.5, keep_whole_below=0)
    assert abs(new["token_ratio"] - old["token_ratio"]) < 0.03
    assert new["mean_bertscore"] > old["mean_bertscore"] + 0.02, (new["mean_bertscore"], old["mean_bertscore"])


ANSWER = ("The river flows past the old market near the station. Lotimer syndrome usually presents with swollen "
          "ankles and chest pain. Trains run on steel rails every day of the week.")


def _sentences(text: str) -> list[str]:
    from damoc.compression.coarse import sentence_spans
    from damoc.compression.compressor import split_words

    words, gaps = split_words(text)
    return [" ".join(words[s:e]) for s, e in sentence_spans(words, gaps)]


def test_crossing_trim_cuts_one_sentence_and_keeps_the_others_whole(llama):
    sample = Sample(id="t", instruction="Answer.", input="What does Lotimer syndrome cause?", output=ANSWER)
    budget = Budget(rate=0.5, instruction_rate=1.0, question_rate=1.0, answer_rate=0.55)
    whole = _sentences(ANSWER)
    (crossing,) = _run("llmlingua", llama, [sample], budget)
    (spread,) = _run("llmlingua", llama, [sample], budget, trim="spread")
    for out in (crossing, spread):  # both meet the answer's budget (within one word)
        assert abs(count_units(llama, out.output) / count_units(llama, ANSWER) - 0.55) < 0.08, out.output
    # coarse keeps two of the three sentences; one stays whole, the words of the other are cut
    full = [s for s in whole if s in crossing.output]
    assert len(full) == 1, crossing.output
    rest = crossing.output.replace(full[0], "").split()
    assert any(set(rest) < set(s.split()) for s in whole if s != full[0]), crossing.output
    assert not any(s in spread.output for s in whole), spread.output  # spread: every kept sentence loses words


def test_trim_crossing_declines_when_the_sentence_cannot_absorb_the_cut(llama):
    import numpy as np

    from damoc.compression.compressor import split_words
    from damoc.compression.llmlingua_mode import trim_crossing

    words, gaps = split_words(ANSWER)
    mask = np.zeros(len(words), dtype=bool)
    mask[:10] = True
    before = mask.copy()
    span = (0, 10)
    cost = count_units(llama, " ".join(words[:10]))
    assert not trim_crossing(llama, words, gaps, mask, span, cost + 1, "", "tokens", 200)
    assert not trim_crossing(llama, words, gaps, mask, span, 0, "", "tokens", 200)
    assert (mask == before).all()
    assert trim_crossing(llama, words, gaps, mask, span, 4, "", "tokens", 200)
    assert mask[10:].sum() == 0 and 0 < mask[:10].sum() < 10
