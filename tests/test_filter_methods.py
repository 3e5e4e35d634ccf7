"""The scorer-, judge- and target-based filters (superfiltering, deita, cherry, mods, car, alpagasus, less),
embedding modes/chunking/cache, coverage stats and bad-input messages. Few rows, the tiny zoo as scorer."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from damoc.data.schema import Sample
from damoc.filtering import FILTERS, filter_samples, get_filter
from damoc.filtering.base import FilterContext
from damoc.registry import RegistryError

SCORER_METHODS = ["superfiltering", "deita", "cherry", "mods", "car", "less"]
TOPICS = ["fever", "headache", "river", "market", "capital", "bridge"]


def _samples(n: int = 12) -> list[Sample]:
    return [Sample(f"s{i}", "Answer the question." if i % 2 else "",
                   f"what about the {TOPICS[i % len(TOPICS)]} number {i}?",
                   f"the {TOPICS[(i * 5) % len(TOPICS)]} is " + "very " * (i % 4) + f"important {i}")
            for i in range(n)]


@pytest.fixture(scope="module")
def scorer(zoo_dir) -> str:
    return str(zoo_dir / "tiny-llama" / "chat")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))


def test_all_twelve_methods_registered_with_documented_settings() -> None:
    assert set(SCORER_METHODS + ["alpagasus", "graphcut", "dq", "kcenter", "random", "lma"]) <= set(FILTERS.names())
    for name in SCORER_METHODS + ["alpagasus"]:
        filt = get_filter(name)
        assert filt.takes_context() and filt.description
        for key, field in filt.Settings.model_fields.items():
            assert field.description, (name, key)
        assert filt.needs_scorer or filt.needs_judge


@pytest.mark.parametrize("method", SCORER_METHODS)
def test_scorer_methods_select_the_right_count_deterministically(method, scorer) -> None:
    samples = _samples(12)
    opts = {"clusters": 3} if method == "cherry" else {"projection_dim": 64} if method == "less" else {}
    runs = [filter_samples(samples, method, 0.5, seed=s, scorer_model=scorer, settings=opts) for s in (3, 3)]
    (kept, stats), (kept2, _) = runs
    assert len(kept) == 6 == stats["n_out"] and len({s.id for s in kept}) == 6
    assert [s.id for s in kept] == [s.id for s in kept2]
    assert stats["method"] == method and stats["seconds"] > 0
    if get_filter(method).needs_embeddings:
        cov = stats["coverage"]
        assert sum(c["total"] for c in cov["per_cluster"]) == 12
        assert sum(c["kept"] for c in cov["per_cluster"]) == 6


def test_scorer_model_setting_wins_and_missing_scorer_names_the_key(scorer) -> None:
    kept, _ = filter_samples(_samples(6), "superfiltering", 0.5, settings={"scorer_model": scorer})
    assert len(kept) == 3
    with pytest.raises(ValueError, match=r"filter\.options\.superfiltering\.scorer_model"):
        filter_samples(_samples(6), "superfiltering", 0.5)


def test_superfiltering_keeps_highest_ifd_below_one(scorer) -> None:
    from damoc.filtering.scoring import ScorerSettings, ifd

    samples = _samples(10)
    scores = ifd(samples, scorer, ScorerSettings())
    ctx = FilterContext(scorer_model=scorer)
    picked = get_filter("superfiltering").select(4, embeddings=None, samples=samples, seed=0,
                                                 settings=get_filter("superfiltering").Settings(), context=ctx)
    below = [i for i in np.argsort(-scores, kind="stable") if scores[i] < 1]
    assert picked[:min(4, len(below))] == [int(i) for i in below[:4]]
    assert ctx.stats["ifd_below_1"] == len(below)


def test_deita_never_admits_a_pair_above_threshold(scorer) -> None:
    from damoc.filtering.deita import DeitaSettings

    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 16))
    emb = np.repeat(base, 3, axis=0) + 0.01 * rng.normal(size=(12, 16))  # 4 groups of near-duplicates
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    filt = get_filter("deita")
    for threshold in (0.5, 0.9):
        picked = filt.select(4, embeddings=emb, samples=_samples(12), seed=0,
                             settings=DeitaSettings(threshold=threshold, scorer_model=scorer))
        sims = emb[picked] @ emb[picked].T
        assert len(picked) == 4 and (sims[~np.eye(4, dtype=bool)] <= threshold).all()
    with pytest.raises(ValueError, match=r"only 4 of the 5 rows.*filter\.options\.deita\.threshold"):
        filt.select(5, embeddings=emb, samples=_samples(12), seed=0,
                    settings=DeitaSettings(threshold=0.9, scorer_model=scorer))


def test_rating_expectation_is_a_probability_weighted_mean(scorer) -> None:
    from damoc.filtering.scoring import load_scorer, rating_expectation

    model, tok = load_scorer(scorer)
    got = rating_expectation(model, tok, ["Rate this: good answer. Score:", "x"], range(1, 7), batch_size=1)
    assert ((got >= 1) & (got <= 6)).all()
    np.testing.assert_allclose(got, rating_expectation(model, tok, ["Rate this: good answer. Score:", "x"],
                                                       range(1, 7), batch_size=2), rtol=1e-5)


def test_cherry_and_car_cores() -> None:
    from damoc.filtering.car import car_select
    from damoc.filtering.cherry import cherry_select, proportional_quota

    assert proportional_quota(np.array([5, 3, 2]), 5).tolist() == [3, 1, 1]
    ifd_ = np.array([0.5, 0.9, 1.2, 0.1, 0.8, np.nan])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert cherry_select(ifd_, labels, 2) == [1, 4]
    assert cherry_select(ifd_, labels, 6) == [1, 0, 4, 3, 2, 5]
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    assert car_select(scores, np.array([0, 0, 0, 1, 1, 2]), 4, 1) == [0, 1, 3, 5]


class _Judge(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        rating = "5" if "good" in text else "4.5 - fine" if "ok" in text else "2\nbad"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": rating}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_alpagasus_endpoint_judge() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        samples = [Sample(str(i), "q", "", out) for i, out in enumerate(["bad", "good", "ok", "good", "bad"])]
        kept, stats = filter_samples(samples, "alpagasus", 0.6,
                                     settings={"endpoint": f"http://127.0.0.1:{server.server_port}/v1"})
        assert [s.id for s in kept] == ["1", "2", "3"]
        assert stats["rated_at_least_min"] == 3 and stats["judge_unparsable"] == 0
    finally:
        server.shutdown()


def test_alpagasus_local_judge_and_missing_judge(scorer) -> None:
    kept, stats = filter_samples(_samples(8), "alpagasus", 0.5, settings={"judge_model": scorer})
    again, _ = filter_samples(_samples(8), "alpagasus", 0.5, settings={"judge_model": scorer})
    assert len(kept) == 4 and [s.id for s in kept] == [s.id for s in again]
    assert 0 <= stats["objective"] <= 5
    with pytest.raises(RegistryError, match=r"filter\.options\.alpagasus\.endpoint.*judge_model"):
        filter_samples(_samples(8), "alpagasus", 0.5)


def test_less_uses_eval_target_when_given(scorer) -> None:
    samples = _samples(10)
    target = [Sample("t", "", samples[4].input, samples[4].output)]
    kept, stats = filter_samples(samples, "less", 0.1, scorer_model=scorer, target_samples=target,
                                 settings={"projection_dim": 256})
    assert [s.id for s in kept] == ["s4"] and stats["less_target"] == "eval samples"
    _, stats = filter_samples(samples, "less", 0.3, scorer_model=scorer, settings={"projection_dim": 64})
    assert stats["less_target"] == "1 held-out training rows"


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_ratio_outside_unit_interval(ratio) -> None:
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        filter_samples(_samples(4), "random", ratio)


def test_fewer_rows_than_to_keep() -> None:
    with pytest.raises(ValueError, match="no training rows"):
        filter_samples([], "random", 0.5)
    with pytest.raises(ValueError, match="cannot keep 5 rows: only 4 rows"):
        get_filter("random").select(5, embeddings=None, samples=_samples(4), seed=0, settings=None)
    from damoc.filtering.algorithms import lma_select

    with pytest.raises(ValueError, match="cannot keep 5 rows: only 4 rows"):
        lma_select(_samples(4), 5)


# --- embeddings --------------------------------------------------------------------------------------------

def test_long_texts_are_chunked_not_truncated() -> None:
    from damoc.embedding import encode_texts

    head = "the patient has a fever and a cough. " * 60
    long_a, long_b = head + "the answer is kidney failure. " * 40, head + "the market sells fresh fish. " * 40
    emb, chunked = encode_texts(["short text", long_a, long_b])
    assert chunked == 2
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[1] @ emb[2] < 0.99  # the tails differ, so truncation to the shared head would make them equal


def test_embed_modes_cache_and_stats(tmp_path) -> None:
    from damoc.embedding import cache_dir, embed_samples

    samples = _samples(6)
    whole, st = embed_samples(samples)
    assert whole.shape == (6, 384) and st["embed_cache"] == "miss" and st["embed_chunked"] == 0
    again, st2 = embed_samples(samples)
    assert st2["embed_cache"] == "hit" and np.array_equal(whole, again)
    assert len(list(cache_dir().glob("*.npz"))) == 1
    qa, st3 = embed_samples(samples, mode="qa_separate")
    assert qa.shape == (6, 768) and st3["embed_texts"] == 12
    np.testing.assert_allclose(np.linalg.norm(qa, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="embed mode"):
        embed_samples(samples, mode="tokens")  # type: ignore[arg-type]
    kept, stats = filter_samples(samples, "graphcut", 0.5, embed="qa_separate")
    assert stats["embed_mode"] == "qa_separate" and stats["coverage"]["expected_share"] == 0.5


def test_coverage_on_request_for_methods_that_do_not_embed() -> None:
    kept, stats = filter_samples(_samples(10), "lma", 0.3, coverage=True, coverage_clusters=3)
    cov = stats["coverage"]
    assert cov["clusters"] == 3 and sum(c["kept"] for c in cov["per_cluster"]) == 3
    assert [c["total"] for c in cov["per_cluster"]] == sorted((c["total"] for c in cov["per_cluster"]), reverse=True)
    _, stats = filter_samples(_samples(10), "lma", 0.3)
    assert "coverage" not in stats


def test_objective_in_stats_for_graphcut_and_kcenter() -> None:
    from damoc.filtering.algorithms import covering_radius
    from damoc.filtering.graphcut import graphcut_greedy

    emb = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    samples = _samples(30)
    ctx = FilterContext()
    gc = get_filter("graphcut")
    order = gc.select(6, embeddings=emb, samples=samples, seed=0, settings=gc.Settings(), context=ctx)
    assert order == graphcut_greedy(emb, 6, 0.4)
    kernel = emb.astype(np.float64) @ emb.T.astype(np.float64)
    assert ctx.stats["objective"] == pytest.approx(kernel[:, order].sum() - 0.4 * kernel[np.ix_(order, order)].sum())
    ctx = FilterContext()
    kc = get_filter("kcenter")
    order = kc.select(6, embeddings=emb, samples=samples, seed=0, settings=kc.Settings(), context=ctx)
    assert ctx.stats["objective"] == pytest.approx(covering_radius(emb, order))
