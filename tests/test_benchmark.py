"""The selection-fidelity benchmark's scoring: agreement against known values, FLOPs arithmetic, the halving
schedule, and determinism of a run on one machine (same inputs, same scores)."""
import math

import pytest

from damoc.benchmark.agreement import agreement, ground_truth_summary
from damoc.benchmark import flops
from damoc.benchmark.recipes import halving_schedule


def test_ground_truth_summary_and_tolerant_top1():
    truth = ground_truth_summary({"a": [0.50, 0.54, 0.52], "b": [0.50, 0.51, 0.52], "c": [0.1, 0.1, 0.1]})
    assert truth["best"] == "a" and truth["order"] == ["a", "b", "c"]
    assert truth["std"]["a"] == pytest.approx(0.02) and truth["tolerance"] == pytest.approx(0.02)
    assert truth["tolerated"] == ["a", "b"]  # b is 0.01 below a, within a's seed sd
    picked_b = agreement({"a": 0.2, "b": 0.3, "c": 0.1}, truth)
    assert picked_b["pick"] == "b" and not picked_b["strict_top1"] and picked_b["tolerant_top1"]
    assert picked_b["kendall_tau"] == pytest.approx(1 / 3) and picked_b["regret"] == pytest.approx(0.01)
    picked_c = agreement({"a": 0.2, "b": 0.1, "c": 0.3}, truth)
    assert not picked_c["tolerant_top1"] and picked_c["kendall_tau"] == pytest.approx(-1 / 3)
    perfect = agreement({"a": 3.0, "b": 2.0, "c": 1.0}, truth)
    assert perfect["strict_top1"] and perfect["kendall_tau"] == pytest.approx(1.0)
    assert perfect["spearman_rho"] == pytest.approx(1.0)
    # a failed candidate (no proxy score) ranks last for the proxy and is never picked
    failed = agreement({"a": None, "b": 2.0, "c": 1.0}, truth)
    assert failed["pick"] == "b" and failed["kendall_tau"] == pytest.approx(-1 / 3)
    assert agreement({"a": None}, truth)["pick"] is None


def test_flops_estimates():
    # 10 samples, 1000 tokens per epoch, 5 steps of 4 = 2 epochs seen, 1M params: 6 * 1e6 * 1000 * 2
    assert flops.train_flops({"samples": 10, "tokens": 1000, "steps": 5, "params": 1_000_000}, 4) == 1.2e10
    assert flops.train_flops({}, 4) == 0.0
    assert flops.eval_flops(100, 50, 10, 2, 8, predict=False) == 2 * 100 * 60
    assert flops.eval_flops(100, 50, 10, 2, 8, predict=True) == 2 * 100 * 60 + 2 * 100 * (50 + 16)
    assert flops.eval_flops(100, 50, 10, 2, 8, predict=True, choice_options=4) == 5 * 2 * 100 * 60
    assert flops.prune_flops({"status": "skipped", "stats": {}}, 100) == 0.0
    assert flops.prune_flops({"status": "ok", "stats": {"params_before": 10}}, 100) == 2000.0
    stage = {"status": "ok", "stats": {"tokens_in": 100, "tokens_out": 60, "words_in": 80, "words_out": 50}}
    assert flops.compress_flops(stage, 1000) == pytest.approx(2 * 1000 * 100 + 2 * flops.MINILM_PARAMS * 130 * 1.3)


def test_halving_schedule_spends_the_budget_evenly_over_rounds():
    plan = halving_schedule(7, 40)  # 280 steps over 3 rounds: 93 per round
    assert plan == [(7, 13), (4, 23), (2, 46)]
    assert halving_schedule(2, 10) == [(2, 10)]
    assert halving_schedule(4, 10) == [(4, 5), (2, 10)]
    for n in range(2, 12):
        plan = halving_schedule(n, 30)
        assert len(plan) == math.ceil(math.log2(n)) and plan[-1][0] == 2
        assert sum(alive * steps for alive, steps in plan) <= n * 30


def test_a_selection_is_deterministic_on_one_machine(tmp_path, zoo_dir):
    """Same inputs, same scores: two in-process runs of the same small config agree to the last bit."""
    from damoc.config import parse_config
    from damoc.demo.data import write_demo
    from damoc.workflow.inprocess import run_inprocess

    data = write_demo("extractive_closed", tmp_path / "data", n_train=24, n_eval=6, seed=3)
    cands = [{"name": n, "path": str(zoo_dir / n / "chat"), "base_path": str(zoo_dir / n / "base")}
             for n in ("tiny-llama", "tiny-neox")]
    cfg = parse_config({"data": {"train": str(data["train"]), "eval": str(data["eval"]), "task": "extractive_qa"},
                        "candidates": cands, "filter": {"method": "random", "ratio": 0.5},
                        "compression": {"enabled": False},
                        "pruning": {"rule": "fraction", "target_fraction": 0.25, "calibration_samples": 4},
                        "training": {"max_steps": 3, "batch_size": 4, "max_length": 96, "learning_rate": 0.005},
                        "evaluation": {"max_new_tokens": 4, "bootstrap_samples": 200}})
    first = run_inprocess(cfg, tmp_path / "a")
    second = run_inprocess(cfg, tmp_path / "b")
    key = lambda sel: [(r["candidate"], r["score"], r.get("loglik")) for r in sel["ranking"]]  # noqa: E731
    assert key(first) == key(second) and all(r["status"] == "ok" for r in first["ranking"])
    assert first["uncertainty"] == second["uncertainty"]
    layers = first["stats"]["candidates"]["tiny-neox"]["prune"]["stats"]
    assert layers["rule"] == "fraction" and layers["num_layers_after"] == 4  # round(0.25 * 5) = 1 layer dropped
