"""Compression methods (compression.method): damoc, and the LLMLingua / LongLLMLingua baselines."""
from __future__ import annotations

import json

import numpy as np
import pytest

from damoc.compression.coarse import dynamic_rates, keep_by_rank, sentence_spans
from damoc.compression.compressor import Budget, count_units, split_words
from damoc.compression.methods import METHODS
from damoc.config import ConfigError, parse_config
from damoc.data.schema import Sample

MINIMAL = {"data": {"train": "t.jsonl", "eval": "e.csv"}, "candidates": [{"name": "a", "path": "/m/a"}]}
PARTS = ("instruction", "input", "output")
RELATED = "Lotimer syndrome usually presents with swollen ankles and chest pain."
ANSWER = f"The river flows past the old market. {RELATED} Trains run on steel rails every day."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def llama(zoo_dir):
    from damoc.compression.scorer import PerplexityScorer

    return PerplexityScorer(str(zoo_dir / "tiny-llama" / "chat"))


@pytest.fixture(scope="module")
def qwen(zoo_dir):
    # tiny-qwen2's chat model conditions on its context (it copies), so p(question | sentence) ranks
    # sentences; tiny-llama's barely moves with the context.
    from damoc.compression.scorer import PerplexityScorer

    return PerplexityScorer(str(zoo_dir / "tiny-qwen2" / "chat"))


@pytest.fixture(scope="module")
def demo_samples() -> list[Sample]:
    from damoc.demo.builtin import demo_data_dir

    lines = (demo_data_dir("qa_long") / "train.jsonl").read_text().splitlines()[:16]
    return [Sample(id=str(i), **json.loads(line)) for i, line in enumerate(lines)]


def _run(method: str, scorer, samples, budget, counters=None, **settings) -> list[Sample]:
    entry, cache = METHODS.get(method), {}
    counters = {} if counters is None else counters
    return [entry.compress_sample(scorer, s, budget, settings=entry.Settings(**settings), segment_words=200,
                                  answer_scoring="conditional", instruction_cache=cache, counters=counters)
            for s in samples]


def _tokens(scorer, samples) -> int:
    return sum(count_units(scorer, getattr(s, p)) for s in samples for p in PARTS)


# --- registry and config ------------------------------------------------------------------------------

def test_registered_methods_and_default_is_damoc():
    assert METHODS.names() == ["damoc", "llmlingua", "longllmlingua"]
    cfg = parse_config(MINIMAL)
    assert cfg.compression.method == "damoc" and cfg.compression.method_options == {"damoc": {}}


def test_unknown_method_is_a_config_error_naming_key_and_methods():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "compression": {"method": "selective_context"}})
    text = str(err.value)
    assert "compression.method" in text and "selective_context" in text
    assert "damoc, llmlingua, longllmlingua" in text


def test_method_settings_validated_and_defaults_filled():
    cfg = parse_config({**MINIMAL, "compression": {"method": "longllmlingua",
                                                   "method_options": {"longllmlingua": {"dynamic_ratio": 0.2}}}})
    assert cfg.compression.method_options["longllmlingua"]["dynamic_ratio"] == 0.2
    assert cfg.compression.method_options["longllmlingua"]["coarse_factor"] == 1.0
    with pytest.raises(ConfigError, match="llmlingua.k: unknown setting"):
        parse_config({**MINIMAL, "compression": {"method": "llmlingua", "method_options": {"llmlingua": {"k": 2}}}})


# --- pure coarse helpers (hand-computed) ----------------------------------------------------------------

def test_sentence_spans():
    words, gaps = split_words("One two. Three four!\nfive six\nseven")
    assert sentence_spans(words, gaps) == [(0, 2), (2, 4), (4, 6), (6, 7)]


def test_keep_by_rank_takes_ranked_segments_until_the_coarse_budget():
    costs = np.array([5, 10, 4])
    # rank order 2, 0, 1; budget 9: 4, then 4 + 5 = 9 reaches it: segment 1 dropped
    assert keep_by_rank(np.array([2, 0, 1]), costs, 9).tolist() == [True, False, True]
    # rank order 2, 1, 0; budget 9: 4, then 4 + 10 = 14 crosses it (kept), segment 0 dropped
    assert keep_by_rank(np.array([2, 1, 0]), costs, 9).tolist() == [False, True, True]
    # a budget of 0 still keeps the best-ranked segment
    assert keep_by_rank(np.array([1, 0, 2]), costs, 0).tolist() == [False, True, False]


def test_dynamic_rates_solve_the_budget():
    costs = np.array([10, 10, 10])
    # b = 0.5: [0.5 + 0.3, 0.5, 0.5 - 0.3]
    assert dynamic_rates(np.array([0, 1, 2]), costs, 15, 0.3) == pytest.approx([0.8, 0.5, 0.2], abs=1e-6)
    # clipped at 1: 1 + b + (b - 0.3) = 2.7 -> b = 1.0
    assert dynamic_rates(np.array([0, 1, 2]), costs, 27, 0.3) == pytest.approx([1.0, 1.0, 0.7], abs=1e-6)
    assert dynamic_rates(np.array([2, 0, 1]), costs, 15, 0.0) == pytest.approx([0.5, 0.5, 0.5], abs=1e-6)


# --- behaviour on the tiny zoo ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["damoc", "llmlingua", "longllmlingua"])
@pytest.mark.parametrize("rate", [0.4, 0.6])
def test_each_method_meets_the_token_budget_within_5_percent(llama, demo_samples, method, rate):
    out = _run(method, llama, demo_samples, Budget(rate=rate))
    kept = _tokens(llama, out) / _tokens(llama, demo_samples)
    assert abs(kept - rate) <= 0.05 * rate, kept
    assert all(o.id == s.id and o.instruction == s.instruction for o, s in zip(out, demo_samples))


def test_longllmlingua_keeps_the_sentence_related_to_the_question(qwen):
    sample = Sample(id="q", instruction="Answer the medical question in a few sentences.",
                    input="What symptoms does Lotimer syndrome cause?", output=ANSWER)
    budget = Budget(rate=0.5, instruction_rate=1.0, question_rate=1.0, answer_rate=0.35)
    counters: dict = {}
    (out,) = _run("longllmlingua", qwen, [sample], budget, counters, coarse_factor=1.0)
    assert out.output and set(out.output.split()) <= set(RELATED.split()), out.output
    assert counters == {"segments": 3, "segments_dropped": 2}
    # LLMLingua ranks by the sentence's own perplexity, blind to the question: it keeps another one
    (plain,) = _run("llmlingua", qwen, [sample], budget, coarse_factor=1.0)
    assert not set(plain.output.split()) <= set(RELATED.split()), plain.output


def test_llmlingua_prunes_whole_sentences_where_damoc_prunes_words(llama):
    sample = Sample(id="c", instruction="Answer the medical question in a few sentences.",
                    input="What symptoms does Lotimer syndrome cause?", output=ANSWER)
    budget = Budget(rate=0.5, instruction_rate=1.0, question_rate=1.0, answer_rate=0.4)
    (ours,) = _run("damoc", llama, [sample], budget)
    (base,) = _run("llmlingua", llama, [sample], budget, coarse_factor=1.0)
    assert ours.output != base.output
    sentences = ["The river flows past the old market.", RELATED, "Trains run on steel rails every day."]
    touched = lambda text: sum(bool(set(text.split()) & set(s.split())) for s in sentences)  # noqa: E731
    assert touched(base.output) < 3  # a whole sentence dropped by the coarse stage
    assert touched(ours.output) == 3  # word-level: every sentence keeps something


def test_methods_are_deterministic(llama, demo_samples):
    for method in ("llmlingua", "longllmlingua"):
        assert _run(method, llama, demo_samples[:4], Budget(rate=0.5)) == \
            _run(method, llama, demo_samples[:4], Budget(rate=0.5))


def test_baselines_do_not_rewrite_by_default_and_report_their_stats(zoo_dir, demo_samples):
    from damoc.compression import compress_dataset

    calls = []

    class Backend:  # would rewrite anything it is given
        errors = 0

        def generate(self, conversations):
            calls.append(len(conversations))
            return [None] * len(conversations)

    scorer = str(zoo_dir / "tiny-llama" / "chat")
    out, stats = compress_dataset(demo_samples[:6], scorer_model=scorer, rate=0.4, bertscore_threshold=1.0,
                                  rewriter=Backend(), method="llmlingua", gate_failure="best_attempt")
    assert calls == [] and stats["rewrite_attempts"] == 0 and stats["still_failing"] == 6
    assert stats["method"] == "llmlingua" and stats["method_settings"]["coarse_factor"] == 1.0
    assert stats["method_stats"]["segments"] >= 6
    assert sum(b["count"] for b in stats["bertscore_histogram"]) == 6
    _, stats = compress_dataset(demo_samples[:6], scorer_model=scorer, rate=0.4, bertscore_threshold=1.0,
                                rewriter=Backend(), method="llmlingua", method_options={"allow_rewrite": True},
                                rewrite_rounds=1)
    assert calls == [6] and stats["rewrite_attempts"] == 6
