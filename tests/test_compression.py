"""Stage 2 compression: budget, word-level NLL scorer, iterative compression, gate and dataset stats."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from damoc.compression import compress_dataset, resolve_gate_failures
from damoc.compression.budget import budget, keep_mask, segments
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


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny matmuls: with 2+ threads on a shared, loaded CPU, thread sync costs ~100x the compute.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


def test_iterative_compression_conditions_on_compressed_prefix(scorer):
    text = _text(30)
    spy = SpyScorer(scorer)
    out = compress_text(spy, text, rate=0.5, segment_words=10, context="CTX")
    kept = out.split()
    assert [len(words) for words, _ in spy.calls] == [10, 10, 10]
    assert len(kept) == 15
    assert spy.calls[0][1] == "CTX"
    assert spy.calls[1][1] == "CTX\n" + " ".join(kept[:5])  # compressed, not original, segment 1
    assert spy.calls[2][1] == "CTX\n" + " ".join(kept[:10])
    assert spy.calls[1][1] != "CTX\n" + " ".join(text.split()[:10])


def test_answer_scores_question_conditioned_and_contrastive(scorer):
    question, words = "what reduces fever?", "the treatment reduces fever".split()
    plain = answer_scores(scorer, question, words)
    np.testing.assert_allclose(plain, scorer.word_nll(words, context=question + "\n"))
    np.testing.assert_allclose(answer_scores(scorer, question, words, contrastive=True),
                               scorer.word_nll(words) - plain)
    out = compress_answer(scorer, question, " ".join(words), 0.5, contrastive=True)
    assert len(out.split()) == 2


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(word in it for word in short)


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_compress_sample_word_ratio_per_field(scorer, rate):
    sample = _samples()[0]
    out = compress_sample(scorer, sample, rate, segment_words=20)
    assert out.id == sample.id
    for field in ("instruction", "input", "output"):
        before, after = getattr(sample, field).split(), getattr(out, field).split()
        assert _is_subsequence(after, before)
        per_segment = sum(budget(e - s, rate) for s, e in segments(len(before), 20))
        expected = per_segment if field != "output" else budget(len(before), rate)  # answer: one budget
        assert len(after) == expected
        assert abs(len(after) / len(before) - rate) <= len(segments(len(before), 20)) / len(before)


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

    out, stats = compress_dataset(samples, bertscore_threshold=0.0, **kwargs)
    assert stats["passed_gate"] == 3 and stats["fell_back"] == 0
    assert out == [compress_sample(scorer, s, 0.5, 20) for s in samples]
    assert stats["word_ratio"] == pytest.approx(0.5, abs=0.05)
    assert stats["token_ratio"] < 0.7
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
