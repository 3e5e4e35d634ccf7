"""Stage 2 compression: budget, word-level NLL scorer, iterative compression, gate and dataset stats."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from damoc.compression import compress_dataset, resolve_gate_failures
from damoc.compression.budget import budget, keep_mask, segments  # noqa: F401
from damoc.compression.compressor import (answer_scores, compress_answer, compress_sample, compress_text,
                                          join_kept, split_words)
from damoc.compression.scorer import PerplexityScorer
from damoc.data.schema import Sample

SENTENCES = [
    "the patient reported a mild headache and was given rest and fluids",
    "a river flows through the old town past the market and the bridge",
    "the treatment reduces fever within two days in most adults",
    "what is the capital of the northern province and how large is it",
]


def _text(n_words: int, offset: int = 0) -> str:
    pool = " ".join(SENTENCES[offset:] + SENTENCES[:offset]).split() * 10
    return " ".join(pool[:n_words])


def _samples() -> list[Sample]:
    return [
        Sample(id=f"s{i}", instruction="answer the question using the context given below in one short sentence",
               input=_text(45, i), output=_text(30, i + 1))
        for i in range(3)
    ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scorer(tiny_pair) -> PerplexityScorer:
    return PerplexityScorer(str(tiny_pair[0]))


class SpyScorer:
    """Delegates to a real scorer and records every (words, context) query."""

    def __init__(self, inner: PerplexityScorer) -> None:
        self.inner, self.calls = inner, []

    def word_nll(self, words, context=""):
        self.calls.append((list(words), context))
        return self.inner.word_nll(words, context)


# --- budget -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.1, 0.33, 0.5, 0.6, 0.9])
def test_keep_mask_keeps_ceil_rate_highest_in_order(rate):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=37)
    mask = keep_mask(scores, rate)
    k = math.ceil(round(rate * 37, 9))
    assert mask.sum() == k
    assert set(np.flatnonzero(mask)) == set(np.argsort(-scores)[:k])
    kept = scores[mask]
    assert np.all(kept >= scores[~mask].max())


def test_budget_edges_and_ties():
    assert budget(5, 0.6) == 3  # 0.6 * 5 is 3.0000000000000004 in floating point
    assert budget(3, 0.01) == 1 and budget(0, 0.5) == 0 and budget(4, 1.0) == 4
    assert keep_mask(np.zeros(4), 0.5).tolist() == [True, True, False, False]  # ties: earlier word wins
    assert keep_mask(np.array([1.0, 3.0, 2.0]), 0.5).tolist() == [False, True, True]
    assert segments(7, 3) == [(0, 3), (3, 6), (6, 7)] and segments(0, 3) == []


# --- scorer -------------------------------------------------------------------------------------------

def _token_nlls(scorer: PerplexityScorer, text: str) -> tuple[list[int], np.ndarray]:
    """Hand computation: BOS + tokens, one forward pass, -log softmax at each next token."""
    ids = [scorer.tokenizer.bos_token_id] + scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits[:-1].double(), dim=-1)
    return ids, -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


def test_word_nll_equals_hand_computation(scorer):
    words = "the patient reported a mild headache".split()
    expected = []
    for k in range(len(words)):
        # With a space-splitting pre-tokenizer, word k's tokens are those added by extending the prefix.
        before = _token_nlls(scorer, " ".join(words[:k]))[1] if k else np.zeros(0)
        ids, after = _token_nlls(scorer, " ".join(words[:k + 1]))
        assert np.allclose(after[:len(before)], before, atol=1e-5)  # tokenization is prefix-stable here
        expected.append(after[len(before):].sum())
    np.testing.assert_allclose(scorer.word_nll(words), expected, rtol=1e-5, atol=1e-5)


def test_word_nll_with_context_equals_slice_of_concatenation(scorer):
    context = "what is the capital of the northern province, and how large is it?"
    words = "a river flows through the old town.".split()
    joint = scorer.word_nll(context.split() + words)
    np.testing.assert_allclose(scorer.word_nll(words, context=context), joint[-len(words):], rtol=1e-5, atol=1e-5)
    assert not np.allclose(scorer.word_nll(words), joint[-len(words):])  # the context does condition


def test_word_nll_handles_empty_and_odd_text(scorer):
    assert scorer.word_nll([]).shape == (0,)
    values = scorer.word_nll(["héadache,", "x", "\u2014"], context="ctx\n")
    assert values.shape == (3,) and np.all(np.isfinite(values)) and np.all(values > 0)


def test_sliding_window_truncates_context_from_the_left(scorer):
    short = copy.copy(scorer)  # same model, a 16-token window
    short.max_length = 16
    ids = [short.tokenizer.bos_token_id] + short.tokenizer(_text(40), add_special_tokens=False)["input_ids"]
    assert len(ids) > 32
    nll = short.token_nll(ids)
    full = scorer.token_nll(ids)
    np.testing.assert_allclose(nll[:16], full[:16], rtol=1e-5, atol=1e-5)  # first window starts at 0
    last = short.token_nll(ids[-16:])[-1]  # the last target sees exactly the 15 tokens before it
    assert nll[-1] == pytest.approx(last, rel=1e-5)
    assert not np.allclose(nll, full)
    words = _text(40).split()
    assert np.all(np.isfinite(short.word_nll(words, context=_text(20, 2))))


# --- compressor ---------------------------------------------------------------------------------------

def test_split_and_join_keep_line_breaks():
    words, gaps = split_words("  Question:\nwhat is it?\n\nAnswer: yes ")
    assert words == ["Question:", "what", "is", "it?", "Answer:", "yes"]
    assert join_kept(words, gaps, np.array([1, 0, 1, 1, 0, 1], bool)) == "Question:\nis it?\nyes"


def _tokens(scorer, text: str) -> int:
    return scorer.count_tokens(text)


def test_stream_scores_equal_word_nll_given_the_compressed_prefix(scorer):
    """The KV-cached stream scores a segment exactly as a fresh pass over context + compressed prefix."""
    from damoc.compression.scorer import open_stream, word_token_ids

    stream = open_stream(scorer, "CTX")
    first = _text(10).split()
    ids = word_token_ids(scorer.tokenizer, first, [" "] * 10, " ")
    stream.score([t for w in ids for t in w])
    kept = [w for k, w in enumerate(first) if k % 2 == 0]
    stream.append([t for k, w in enumerate(ids) if k % 2 == 0 for t in w])
    second = _text(12, 1).split()
    ids2 = word_token_ids(scorer.tokenizer, second, [" "] * 12, " ")
    nll = stream.score([t for w in ids2 for t in w])
    per_word = np.array([nll[sum(map(len, ids2[:k])):sum(map(len, ids2[:k + 1]))].sum() for k in range(12)])
    expected = scorer.word_nll(second, context="CTX " + " ".join(kept))
    np.testing.assert_allclose(per_word, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(per_word, scorer.word_nll(second, context="CTX " + " ".join(first)), atol=1e-3)


def test_stream_cost_is_linear_in_row_length(scorer):
    """Tokens run through the model grow linearly with the text (not with prefix x segments)."""
    from damoc.compression import scorer as scorer_mod

    counted = []
    original = scorer_mod.KVStream._forward

    def spy(self, ids):
        counted.append(len(ids))
        return original(self, ids)

    scorer_mod.KVStream._forward = spy
    try:
        costs = []
        for n_words in (200, 800):
            counted.clear()
            compress_text(scorer, _text(n_words), 0.5, segment_words=20)
            costs.append(sum(counted) / _tokens(scorer, _text(n_words)))
    finally:
        scorer_mod.KVStream._forward = original
    assert costs[1] < 1.3 * costs[0] and costs[1] < 4  # per-token cost flat (window 256 here)


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_compress_text_meets_the_token_budget(scorer, rate):
    text = _text(300)
    out = compress_text(scorer, text, rate, segment_words=40, context="answer the question")
    assert _is_subsequence(out.split(), text.split())
    assert abs(_tokens(scorer, out) / _tokens(scorer, text) - rate) <= 0.05 * rate


def _dataset(n: int = 6) -> list[Sample]:
    return [Sample(id=f"d{i}", instruction="answer the question using the context given below in one short "
                   "sentence", input=_text(60 + 10 * i, i), output=_text(40 + 5 * i, i + 1)) for i in range(n)]


@pytest.mark.parametrize("rate", [0.4, 0.6])
def test_budget_controller_kept_token_fraction_within_5_percent(scorer, rate):
    """Instruction protected, question and answer solved per sample so the DATASET keeps `rate` of tokens."""
    from damoc.compression import Budget

    samples, cache = _dataset(), {}
    out = [compress_sample(scorer, s, Budget(rate=rate), 40, instruction_cache=cache) for s in samples]
    count = lambda ss: sum(_tokens(scorer, getattr(s, p)) for s in ss for p in ("instruction", "input", "output"))  # noqa: E731
    assert abs(count(out) / count(samples) - rate) <= 0.05 * rate
    assert all(o.instruction == s.instruction for o, s in zip(out, samples))  # protected
    assert len(cache) == 1  # identical instructions: compressed once


def test_part_rates_fixed_and_solved(scorer):
    from damoc.compression import Budget
    from damoc.compression.budget import solve_part_rates

    assert solve_part_rates(0.5, {"a": 100, "b": 300}, {"a": 1.0, "b": None}) == {"a": 1.0, "b": pytest.approx(1 / 3)}
    assert solve_part_rates(0.1, {"a": 100, "b": 100}, {"a": 1.0, "b": None})["b"] == 0.05  # clamped
    sample = _dataset(1)[0]
    budget = Budget(rate=0.5, instruction_rate=0.5, question_rate=0.3, answer_rate=0.8)
    out = compress_sample(scorer, sample, budget, 40)
    for part, rate in (("instruction", 0.5), ("input", 0.3), ("output", 0.8)):
        ratio = _tokens(scorer, getattr(out, part)) / _tokens(scorer, getattr(sample, part))
        assert abs(ratio - rate) <= 0.1, (part, ratio)


def test_select_by_density_fills_within_one_word():
    from damoc.compression.budget import select_by_density

    mask = select_by_density(np.array([5.0, 1.0, 4.0, 3.0]), np.array([5, 1, 1, 3]), 4)
    assert mask.tolist() == [False, True, True, False] or mask.sum() >= 2
    assert np.array([5, 1, 1, 3])[mask].sum() <= 4
    assert not select_by_density(np.ones(3), np.ones(3), 0).any()


def test_answer_scores_question_conditioned_and_contrastive(scorer):
    question, words = "what reduces fever?", "the treatment reduces fever".split()
    plain = answer_scores(scorer, question, words)
    np.testing.assert_allclose(plain, scorer.word_nll(words, context=question + "\n"))
    np.testing.assert_allclose(answer_scores(scorer, question, words, "contrastive"),
                               scorer.word_nll(words) - plain)
    out = compress_answer(scorer, question, " ".join(words), 0.5, "contrastive")
    assert 1 <= len(out.split()) < 4 and _is_subsequence(out.split(), words)
    with pytest.raises(ValueError, match="conditional or contrastive"):
        answer_scores(scorer, question, words, "bogus")


class TableScorer:
    """NLLs from a table: without the question the answer word 'paris' is surprising, with it predictable
    (the question names it); 'sunny' is surprising either way."""

    def __init__(self, tokenizer):
        self.tokenizer, self.max_length = tokenizer, 256

    def word_nll(self, words, context=""):
        with_q = {"paris": 0.5, "sunny": 6.0, "it": 1.0, "is": 1.0}
        without = {"paris": 9.0, "sunny": 6.5, "it": 1.2, "is": 1.1}
        table = with_q if "paris" in context else without
        return np.array([table.get(w, 2.0) for w in words])


def test_contrastive_and_conditional_choose_differently(scorer):
    stub = TableScorer(scorer.tokenizer)
    question, answer = "is paris sunny", "it is paris sunny"
    tokens = [len(scorer.tokenizer(" " + w if i else w, add_special_tokens=False)["input_ids"])
              for i, w in enumerate(answer.split())]
    rate = max(tokens[2], tokens[3]) / sum(tokens) + 1e-6  # room for one of the two content words
    conditional = compress_answer(stub, question, answer, rate, "conditional")
    contrastive = compress_answer(stub, question, answer, rate, "contrastive")
    assert "sunny" in conditional.split() and "paris" not in conditional.split()
    assert "paris" in contrastive.split()  # the word the question makes predictable: it answers it
    assert conditional != contrastive


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(word in it for word in short)


def test_rate_one_is_identity(scorer, tiny_pair):
    samples = _samples()
    odd = Sample("odd", "  spaced   instruction\n", "line one\n\nline two", "out")
    assert compress_sample(scorer, odd, 1.0) == odd
    out, stats = compress_dataset(samples, scorer_model=str(tiny_pair[0]), rate=1.0, bertscore_threshold=0.9)
    assert out == samples
    assert stats["word_ratio"] == 1.0 and stats["token_ratio"] == 1.0 and stats["fell_back"] == 0


# --- gate and dataset ---------------------------------------------------------------------------------

def _check_stats(stats: dict, samples: list[Sample], out: list[Sample], scorer: PerplexityScorer) -> None:
    assert stats["n"] == len(samples) == len(out)
    assert stats["passed_gate"] + stats["rewritten"] + stats["fell_back"] == stats["n"]
    assert stats["words_in"] == sum(len(s.text.split()) for s in samples)
    assert stats["words_out"] == sum(len(s.text.split()) for s in out)
    tokens = lambda ss: sum(scorer.count_tokens(t) for s in ss for t in (s.instruction, s.input, s.output))  # noqa: E731
    assert stats["tokens_in"] == tokens(samples) and stats["tokens_out"] == tokens(out)
    assert stats["word_ratio"] == pytest.approx(stats["words_out"] / stats["words_in"])
    assert stats["token_ratio"] == pytest.approx(stats["tokens_out"] / stats["tokens_in"])
    assert 0.0 < stats["mean_bertscore"] <= 1.0 + 1e-6 and stats["seconds"] > 0


def test_gate_threshold_one_falls_back_and_zero_passes_all(scorer, tiny_pair):
    samples = _samples()
    kwargs = dict(scorer_model=str(tiny_pair[0]), rate=0.5, segment_words=20)
    out, stats = compress_dataset(samples, bertscore_threshold=1.0, **kwargs)
    assert out == samples and stats["fell_back"] == 3 and stats["passed_gate"] == 0
    assert stats["word_ratio"] == 1.0 and stats["rate"] == 0.5 and stats["threshold"] == 1.0
    _check_stats(stats, samples, out, scorer)

    out, stats = compress_dataset(samples, bertscore_threshold=0.0, instruction_rate=None, **kwargs)
    assert stats["passed_gate"] == 3 and stats["fell_back"] == 0
    assert out == [compress_sample(scorer, s, 0.5, 20) for s in samples]
    assert stats["token_ratio"] == pytest.approx(0.5, rel=0.05)
    assert set(stats["parts"]) == {"instruction", "input", "output"}
    _check_stats(stats, samples, out, scorer)


def test_rewriter_hook_replaces_failures_that_then_pass(monkeypatch):
    import damoc.compression.gate as gate

    originals = [Sample(str(i), "", "q", f"answer {i}") for i in range(3)]
    compressed = [Sample(str(i), "", "q", "") for i in range(3)]
    revised = Sample("1", "", "q", "good")
    monkeypatch.setattr(gate, "gate_scores", lambda o, c, m=None: [0.95 if s.output == "good" else 0.1
                                                                          for s in c])
    seen = {}

    def rewriter(failed_originals, failed_compressed, examples):
        seen["n"], seen["examples"] = len(failed_originals), examples
        return [revised, None]

    final, fate = resolve_gate_failures(originals, compressed, [0.95, 0.2, 0.3], 0.9, rewriter)
    assert seen == {"n": 2, "examples": [compressed[0]]}
    assert fate == ["passed", "rewritten", "fell_back"]
    assert final == [compressed[0], revised, originals[2]]
    final, fate = resolve_gate_failures(originals, compressed, [0.95, 0.2, 0.3], 0.9)
    assert final == [compressed[0], originals[1], originals[2]]
