"""Stage 1 filtering: GraphCut greedy vs definition-level references, random, registry, embeddings."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from damoc.data.schema import Sample
from damoc.filtering import available_filters, filter_samples, get_filter, register
from damoc.filtering import base as filtering_base
from damoc.filtering.base import SampleFilter
from damoc.filtering.graphcut import graphcut_greedy


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _objective(kernel: np.ndarray, chosen: list[int], lam: float) -> float:
    """f(X) = sum_{i in V, j in X} s_ij - lambda * sum_{i, j in X} s_ij, straight from the definition."""
    if not chosen:
        return 0.0
    return float(kernel[:, chosen].sum() - lam * kernel[np.ix_(chosen, chosen)].sum())


def _naive_greedy(emb: np.ndarray, k: int, lam: float) -> list[int]:
    """Reference greedy: dense kernel, gains as f(X + j) - f(X), first maximum wins."""
    kernel = emb @ emb.T
    chosen: list[int] = []
    for _ in range(k):
        base = _objective(kernel, chosen, lam)
        best, best_gain = -1, -math.inf
        for j in range(len(emb)):
            if j in chosen:
                continue
            gain = _objective(kernel, chosen + [j], lam) - base
            if gain > best_gain:
                best, best_gain = j, gain
        chosen.append(best)
    return chosen


def _samples(n: int) -> list[Sample]:
    return [Sample(id=f"s{i}", instruction=f"question {i}", input="", output=f"answer {i}") for i in range(n)]


# --- GraphCut -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.3, 0.45])
@pytest.mark.parametrize("seed", range(5))
def test_graphcut_matches_naive_greedy(seed: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    n, d, k = 40, 8, 12
    emb = _unit_rows(rng.standard_normal((n, d)))
    assert graphcut_greedy(emb, k, lam) == _naive_greedy(emb, k, lam)


def test_graphcut_float32_path_matches_naive() -> None:
    emb = _unit_rows(np.random.default_rng(7).standard_normal((60, 16))).astype(np.float32)
    assert graphcut_greedy(emb, 15, 0.4) == _naive_greedy(emb.astype(np.float64), 15, 0.4)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.45])
@pytest.mark.parametrize("seed", range(4))
def test_graphcut_greedy_within_bound_of_optimum(seed: int, lam: float) -> None:
    # Non-negative vectors -> non-negative cosine kernel, so f is monotone submodular for lambda < 0.5.
    rng = np.random.default_rng(100 + seed)
    n, k = 10, 3
    emb = _unit_rows(np.abs(rng.standard_normal((n, 5))))
    kernel = emb @ emb.T
    optimum = max(_objective(kernel, list(c), lam) for c in itertools.combinations(range(n), k))
    greedy_value = _objective(kernel, graphcut_greedy(emb, k, lam), lam)
    assert greedy_value >= (1 - 1 / math.e) * optimum - 1e-9
    assert greedy_value <= optimum + 1e-9


def _two_clusters_with_duplicate() -> tuple[np.ndarray, int, int]:
    """Cluster A = {u, u (exact duplicate), 2 near u}; cluster B = {v, 3 near v}; u is orthogonal to v.

    Symmetric perturbations make u the most central point overall (largest similarity sum), with its
    duplicate tied, and v the centre of B. Returns (embeddings, index of u, index of v).
    """
    eye = np.eye(8)
    u, v, eps = eye[0], eye[1], 0.1
    a_pts = [u, u, u + eps * eye[2], u - eps * eye[2]]
    b_pts = [v, v + eps * eye[4], v - eps * eye[4], v + eps * eye[5]]
    return _unit_rows(np.array(a_pts + b_pts)), 0, 4


@pytest.mark.parametrize("lam", [0.2, 0.4])
def test_graphcut_skips_duplicate_and_covers_both_clusters(lam: float) -> None:
    emb, u_idx, v_idx = _two_clusters_with_duplicate()
    coverage = (emb @ emb.T).sum(axis=0)
    top_similarity = set(np.argsort(-coverage, kind="stable")[:2].tolist())
    assert top_similarity == {0, 1}  # a naive "most representative" pick takes u and its duplicate
    picked = graphcut_greedy(emb, 2, lam)
    assert picked[0] in {0, 1}
    assert picked[1] == v_idx


def test_graphcut_lambda_zero_is_top_coverage() -> None:
    emb, _, _ = _two_clusters_with_duplicate()
    assert set(graphcut_greedy(emb, 2, 0.0)) == {0, 1}


def test_graphcut_ties_broken_by_lowest_index() -> None:
    emb = np.tile(np.eye(4)[:1], (5, 1))  # five identical points
    assert graphcut_greedy(emb, 3, 0.4) == [0, 1, 2]


def test_graphcut_argument_errors() -> None:
    emb = _unit_rows(np.random.default_rng(0).standard_normal((5, 3)))
    with pytest.raises(ValueError):
        graphcut_greedy(emb, 6)
    with pytest.raises(ValueError):
        graphcut_greedy(emb, 2, lambda_=-0.1)
    filt = get_filter("graphcut")
    settings = filt.Settings()
    with pytest.raises(ValueError, match="needs embeddings"):
        filt.select(2, embeddings=None, samples=_samples(5), seed=0, settings=settings)
    with pytest.raises(ValueError):
        filt.select(2, embeddings=emb[:4], samples=_samples(5), seed=0, settings=settings)
    with pytest.raises(ValueError, match="graphcut.bogus: unknown setting"):
        filter_samples(_samples(5), "graphcut", 0.5, settings={"bogus": 1})


# --- Random -------------------------------------------------------------------------------------------

def test_random_deterministic_distinct_and_sized() -> None:
    filt = get_filter("random")
    samples = _samples(100)
    none = filt.Settings()
    a = filt.select(20, embeddings=None, samples=samples, seed=3, settings=none)
    b = filt.select(20, embeddings=None, samples=samples, seed=3, settings=none)
    c = filt.select(20, embeddings=None, samples=samples, seed=4, settings=none)
    assert a == b and a != c
    assert len(a) == 20 == len(set(a)) and all(0 <= i < 100 for i in a)
    assert filt.select(40, embeddings=None, samples=samples, seed=3, settings=none)[:20] == a  # nested
    assert not filt.needs_embeddings


# --- filter_samples -----------------------------------------------------------------------------------

def test_filter_samples_stats_and_original_order() -> None:
    samples = _samples(10)
    kept, stats = filter_samples(samples, "random", 0.3, seed=1)
    assert len(kept) == 3
    positions = [samples.index(s) for s in kept]
    assert positions == sorted(positions)
    assert stats["method"] == "random" and stats["n_in"] == 10 and stats["n_out"] == 3
    assert stats["ratio"] == 0.3 and stats["embed_seconds"] == 0.0 and stats["seconds"] >= 0.0
    assert filter_samples(samples, "random", 0.01)[1]["n_out"] == 1  # at least one sample kept


@pytest.mark.parametrize("method, ratio", [("none", 0.2), ("graphcut", 1.0)])
def test_filter_samples_keeps_everything(method: str, ratio: float) -> None:
    samples = _samples(7)
    kept, stats = filter_samples(samples, method, ratio)
    assert kept == samples and stats["n_out"] == 7 and stats["embed_seconds"] == 0.0


def test_filter_samples_argument_errors() -> None:
    with pytest.raises(ValueError, match="available"):
        filter_samples(_samples(5), "nope", 0.5)
    with pytest.raises(ValueError, match="available"):
        filter_samples(_samples(5), "nope", 1.0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            filter_samples(_samples(5), "random", bad)


def test_filter_samples_graphcut_with_real_embeddings() -> None:
    texts = ["How do I treat a mild fever?", "What helps bring down a mild fever?",
             "How can I lower a slight fever?", "What is the capital of France?",
             "Explain how a bond's yield relates to its price.", "Translate 'good morning' into German."]
    samples = [Sample(id=str(i), instruction=t, input="", output="") for i, t in enumerate(texts)]
    kept, stats = filter_samples(samples, "graphcut", 0.5, settings={"lambda": 0.4})
    assert stats["n_out"] == 3 and stats["embed_seconds"] > 0.0
    assert [samples.index(s) for s in kept] == sorted(samples.index(s) for s in kept)
    # Same subset as the definition-level greedy on the same embeddings. (With only six samples the
    # coverage term dominates at lambda=0.4, so GraphCut may legitimately keep all three paraphrases.)
    from damoc.embedding import embed_texts

    expected = _naive_greedy(embed_texts(texts).astype(np.float64), 3, 0.4)
    assert [samples.index(s) for s in kept] == sorted(expected)


# --- Registry -----------------------------------------------------------------------------------------

def test_registry_lists_and_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"graphcut", "random"} <= set(available_filters())
    with pytest.raises(ValueError, match="graphcut.*random"):
        get_filter("does-not-exist")

    monkeypatch.setattr(filtering_base.FILTERS, "_entries", dict(filtering_base.FILTERS._entries))

    @register
    class FirstN(SampleFilter):
        name = "first_n"

        def select(self, n_select, *, embeddings, samples, seed, settings):
            return list(range(n_select))

    assert "first_n" in available_filters()
    kept, _ = filter_samples(_samples(8), "first_n", 0.25)
    assert [s.id for s in kept] == ["s0", "s1"]

    with pytest.raises(ValueError, match="already registered"):
        @register
        class Clash(FirstN):  # same name, different class
            pass


# --- Embeddings ---------------------------------------------------------------------------------------

def test_embed_texts_normalised_and_semantic() -> None:
    from damoc.embedding import embed_texts

    emb = embed_texts(["The cat sits on the mat.", "A cat is sitting on a rug.",
                       "Stock markets fell sharply today."])
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
    assert embed_texts([]).shape == (0, 384)
