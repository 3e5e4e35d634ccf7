"""Numeric cores of the filtering methods (damoc.filtering.algorithms) against brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest

from damoc.data.schema import Sample
from damoc.filtering.algorithms import (covering_radius, deita_select, dq_bins, dq_select, facility_location_greedy,
                                        facility_location_value, ifd_scores, kcenter_greedy, lma_select,
                                        superfiltering_select)
from damoc.filtering.algorithms.dq import allocate, bin_sizes
from damoc.filtering.graphcut import graphcut_greedy


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rand(seed: int, n: int = 40, d: int = 8) -> np.ndarray:
    return _unit_rows(np.random.default_rng(seed).standard_normal((n, d)))


def _assert_greedy_path(objective, n: int, picks: list[int], tol: float = 1e-9) -> None:
    """Each pick has the largest definition-level gain given the picks before it, up to `tol`. Exact ties
    are common in facility location (two uncovered points that only cover each other gain the same), and
    there the summation order, not the index, decides."""
    for step, j in enumerate(picks):
        base = objective(picks[:step])
        gains = np.array([objective(picks[:step] + [i]) - base if i not in picks[:step] else -math.inf
                          for i in range(n)])
        assert gains[j] >= gains.max() - tol, f"step {step}: pick {j} is not a greedy choice"


def _brute_greedy(objective, n: int, k: int, with_tie_free: bool = False):
    """Greedy on gains f(X + j) - f(X) evaluated from the definition; first maximum wins.

    with_tie_free: also return how many leading steps had a unique best gain (no other within 1e-9).
    """
    chosen: list[int] = []
    tie_free = None
    for step in range(k):
        base = objective(chosen)
        gains = np.array([(objective(chosen + [j]) - base if j not in chosen else -math.inf) for j in range(n)])
        chosen.append(int(np.argmax(gains)))
        if tie_free is None and np.sum(gains >= gains.max() - 1e-9) > 1:
            tie_free = step
    return (chosen, k if tie_free is None else tie_free) if with_tie_free else chosen


# --- facility location ----------------------------------------------------------------------------------

def _fl_objective(kernel: np.ndarray):
    return lambda chosen: float(np.maximum(kernel[:, chosen].max(axis=1), 0).sum()) if chosen else 0.0


@pytest.mark.parametrize("optimizer", ["incremental", "lazy", "naive"])
@pytest.mark.parametrize("seed", range(4))
def test_facility_location_matches_brute_force(seed: int, optimizer: str) -> None:
    emb = _rand(seed)
    # tiny memory budget and batch: many blocks and many lazy rounds
    got = facility_location_greedy(emb, 12, optimizer=optimizer, batch_size=3, memory_budget_mb=0.001)
    _assert_greedy_path(_fl_objective(emb @ emb.T), len(emb), got)
    # Up to the reference's first near-tie the sequences are identical.
    expected, tie_free = _brute_greedy(_fl_objective(emb @ emb.T), len(emb), 12, with_tie_free=True)
    assert tie_free >= 5 and got[:tie_free] == expected[:tie_free]


def test_facility_location_lazy_batch_sizes_and_float32_agree() -> None:
    emb = _rand(11, n=200, d=16)
    ref = facility_location_greedy(emb, 30, optimizer="naive")
    for bs in (1, 8, 500):
        assert facility_location_greedy(emb, 30, optimizer="lazy", batch_size=bs) == ref
    assert facility_location_greedy(emb, 30, optimizer="incremental", memory_budget_mb=0.01) == ref
    assert facility_location_greedy(emb.astype(np.float32), 30) == ref
    # unnormalised input with normalize=True is the cosine kernel
    assert facility_location_greedy(emb * np.arange(1, 201)[:, None], 30) == ref


def test_facility_location_value_and_stochastic() -> None:
    emb = _rand(5, n=150, d=12)
    kernel = emb @ emb.T
    sel = facility_location_greedy(emb, 15)
    assert facility_location_value(emb, sel, memory_budget_mb=0.001) == pytest.approx(_fl_objective(kernel)(sel))
    a = facility_location_greedy(emb, 15, optimizer="stochastic", seed=1)
    assert a == facility_location_greedy(emb, 15, optimizer="stochastic", seed=1)
    assert len(set(a)) == 15
    assert facility_location_value(emb, a) <= facility_location_value(emb, sel) + 1e-9
    assert facility_location_value(emb, a) >= 0.9 * facility_location_value(emb, sel)
    assert facility_location_greedy(emb, 0) == []
    with pytest.raises(ValueError):
        facility_location_greedy(emb, 151)
    with pytest.raises(ValueError):
        facility_location_greedy(emb, 3, optimizer="bogus")


# --- graphcut (reused from damoc.filtering.graphcut) ----------------------------------------------------

@pytest.mark.parametrize("lam", [0.3, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_graphcut_matches_brute_force(seed: int, lam: float) -> None:
    emb = _rand(20 + seed)
    kernel = emb @ emb.T

    def f(chosen):
        return float(kernel[:, chosen].sum() - lam * kernel[np.ix_(chosen, chosen)].sum()) if chosen else 0.0

    assert graphcut_greedy(emb, 12, lam) == _brute_greedy(f, len(emb), 12)


# --- k-center -------------------------------------------------------------------------------------------

def _brute_kcenter(emb: np.ndarray, k: int, first: int) -> list[int]:
    dist = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    chosen = [first]
    while len(chosen) < k:
        d = dist[:, chosen].min(axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


def _brute_radius(emb: np.ndarray, chosen: list[int]) -> float:
    return float(np.linalg.norm(emb[:, None, :] - emb[None, chosen, :], axis=2).min(axis=1).max())


@pytest.mark.parametrize("seed", range(4))
def test_kcenter_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((60, 5)) * rng.uniform(0.5, 2, size=(60, 1))  # not unit-norm
    picks = kcenter_greedy(emb, 15, seed=seed)
    assert picks == _brute_kcenter(emb, 15, int(np.random.default_rng(seed).integers(60)))
    nearest_mean = int(np.argmin(np.linalg.norm(emb - emb.mean(axis=0), axis=1)))
    by_mean = kcenter_greedy(emb, 15, start="mean")
    assert by_mean == _brute_kcenter(emb, 15, nearest_mean)
    for sel in (picks, by_mean, picks[:3]):
        assert covering_radius(emb, sel, memory_budget_mb=0.001) == pytest.approx(_brute_radius(emb, sel))
    # radius is non-increasing along the pick order, and Gonzalez's 2-approximation bound holds vs brute force
    radii = [covering_radius(emb, picks[:m]) for m in range(1, 16)]
    assert all(a >= b - 1e-12 for a, b in zip(radii, radii[1:]))


def test_kcenter_initial_duplicates_and_errors() -> None:
    emb = _rand(3, n=30, d=4)
    full = kcenter_greedy(emb, 10, seed=7)
    assert kcenter_greedy(emb, 7, initial=full[:3]) == full[3:]  # continuing from a seed set
    dup = np.tile(np.eye(3)[:1], (4, 1))
    assert sorted(kcenter_greedy(dup, 4, start="mean")) == [0, 1, 2, 3]
    assert covering_radius(emb, []) == math.inf
    with pytest.raises(ValueError):
        kcenter_greedy(emb, 31)
    with pytest.raises(ValueError):
        kcenter_greedy(emb, 28, initial=[0, 1, 2])


# --- DQ -------------------------------------------------------------------------------------------------

def test_dq_bins_partition_and_first_bin_is_graphcut() -> None:
    emb = _rand(9, n=103, d=6)
    bins = dq_bins(emb, n_bins=10, lambda_=1.0)
    assert [len(b) for b in bins] == bin_sizes(103, 10) == [11, 11, 11] + [10] * 7
    assert sorted(i for b in bins for i in b) == list(range(103))
    assert bins[0] == graphcut_greedy(emb, 11, 1.0)
    rest = np.setdiff1d(np.arange(103), bins[0])
    assert bins[1] == rest[graphcut_greedy(emb[rest], 11, 1.0)].tolist()


def test_dq_select_distinct_sized_deterministic() -> None:
    emb = _rand(10, n=120, d=6)
    a = dq_select(emb, 17, n_bins=5, seed=3)
    assert len(a) == 17 == len(set(a)) and all(0 <= i < 120 for i in a)
    assert a == dq_select(emb, 17, n_bins=5, seed=3)
    assert a != dq_select(emb, 17, n_bins=5, seed=4)
    bins = dq_bins(emb, 5)
    assert [sum(i in set(b) for i in a) for b in bins] == allocate(17, [24] * 5) == [4, 4, 3, 3, 3]
    assert sorted(dq_select(emb, 120, n_bins=5)) == list(range(120))
    assert dq_select(emb, 0) == []


# --- LMA, Superfiltering, Deita --------------------------------------------------------------------------

def test_lma_longest_first_ties_by_index() -> None:
    samples = [Sample(id=str(i), instruction="q", input="", output=o)
               for i, o in enumerate(["aa", "a", "aaaa", "aa", "aaa"])]
    assert lma_select(samples, 3) == [2, 4, 0]
    assert lma_select(samples, 4) == [2, 4, 0, 3]
    assert lma_select(samples, 2, length=lambda s: -len(s)) == [1, 0]


def test_superfiltering_select() -> None:
    ifd = [0.5, 1.2, 0.9, float("nan"), 0.9, 1.0, 0.1]
    assert superfiltering_select(ifd, 3) == [2, 4, 0]
    assert superfiltering_select(ifd, 6) == [2, 4, 0, 6]
    assert superfiltering_select(ifd, 7, fill=True) == [2, 4, 0, 6, 5, 1, 3]


def _brute_deita(scores, emb, k, thr):
    emb = _unit_rows(emb)
    out = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if len(out) < k and all(emb[i] @ emb[j] <= thr for j in out):
            out.append(i)
    return out


@pytest.mark.parametrize("thr", [0.2, 0.5, 0.9])
def test_deita_threshold_and_matches_sequential_walk(thr: float) -> None:
    rng = np.random.default_rng(int(thr * 10))
    emb = rng.standard_normal((300, 4)) + 2.0  # correlated directions, so many pairs exceed the threshold
    scores = rng.integers(0, 5, size=300).astype(float)  # many ties
    for block in (1, 7, 256, 1000):
        got = deita_select(scores, emb, 50, thr, block_size=block)
        assert got == _brute_deita(scores, emb, 50, thr)
    u = _unit_rows(emb[got])
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    assert sims.max() <= thr + 1e-12
    assert len(got) <= 50


# --- IFD ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tiny_tokenizer_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                      num_key_value_heads=1, head_dim=64, intermediate_size=128, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval(), tok


def _hand_ifd(model, tok, smp: Sample, use_bos: bool) -> float:
    """exp(HF mean loss on the answer given Q) / exp(HF mean loss on the answer alone)."""
    import torch

    from damoc.training.prompt import format_prompt

    q = tok(format_prompt(smp.instruction, smp.input), add_special_tokens=False)["input_ids"]
    a = tok(smp.output, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if use_bos else []
    ignore = -100

    def loss(prefix, answer, skip_first):
        ids = torch.tensor([prefix + answer])
        labels = torch.tensor([[ignore] * len(prefix) + ([ignore] if skip_first else []) + answer[skip_first:]])
        with torch.no_grad():
            return float(model(input_ids=ids, labels=labels).loss)

    skip = 0 if use_bos else 1
    return math.exp(loss(bos + q, a, skip)) / math.exp(loss(bos, a, skip))


def test_ifd_matches_hand_computation(tiny_lm) -> None:
    model, tok = tiny_lm
    samples = [Sample(id="0", instruction="what is the capital", input="of the northern province",
                      output="the old town by the river"),
               Sample(id="1", instruction="", input="the patient reported a mild headache",
                      output="rest and fluids within two days in most adults and the fever"),
               Sample(id="2", instruction="answer in one short sentence", input="", output="the market"),
               Sample(id="3", instruction="anything", input="", output="")]
    got = ifd_scores("unused", samples, model=model, tokenizer=tok, batch_size=3)  # padded batches
    for i in range(3):
        assert got[i] == pytest.approx(_hand_ifd(model, tok, samples[i], use_bos=True), rel=1e-5)
    assert math.isnan(got[3])

    class NoBos:  # GPT-2-like tokenizer without BOS: the first answer token is skipped in both runs
        def __init__(self, inner):
            self._inner, self.bos_token_id, self.pad_token_id = inner, None, inner.pad_token_id
            self.eos_token_id = inner.eos_token_id

        def __call__(self, *a, **k):
            return self._inner(*a, **k)

    got_nobos = ifd_scores("unused", samples[:3], model=model, tokenizer=NoBos(tok), batch_size=2)
    for i in range(3):
        assert got_nobos[i] == pytest.approx(_hand_ifd(model, tok, samples[i], use_bos=False), rel=1e-5)
    assert superfiltering_select(got, 2, fill=True) != []


def test_ifd_loads_from_path(tiny_lm, tmp_path) -> None:
    model, tok = tiny_lm
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    smp = [Sample(id="0", instruction="q", input="the river", output="flows past the market")]
    assert ifd_scores(str(tmp_path), smp)[0] == pytest.approx(ifd_scores("x", smp, model=model, tokenizer=tok)[0])
