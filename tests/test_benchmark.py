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


def test_seeded_recipe_names():
    from damoc.benchmark.suite import recipe, seed_variant

    seeded = recipe("paper@seed2")
    assert seeded.overrides["training"] == {"seed": 2}
    assert seeded.overrides["pruning"] == recipe("paper").overrides["pruning"]
    assert "training" not in recipe("paper").overrides  # the base recipe is not changed by the variant
    assert seed_variant("paper@seed2") == ("paper", 2) and seed_variant("paper") == ("paper", None)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipe("nope")
    with pytest.raises(ValueError, match="only pipeline recipes"):
        recipe("0-shot@seed1")


def test_one_grid_run_is_scored_against_the_other_seeds():
    from damoc.benchmark.report import one_grid_run
    from damoc.benchmark.suite import task

    # held out 0: the other seeds give c 0.9 > b 0.5 > a 0.1 (sd 0) while seed 0 ranks a > b > c: tau -1 and its
    # pick a is not tolerated. Held out 1 (or 2): the other two seeds tie a, b, c at 0.5 (sd 0.57): every pick is
    # tolerated and tau is undefined (left out of the mean).
    scores = {"a": [0.9, 0.1, 0.1], "b": [0.5, 0.5, 0.5], "c": [0.1, 0.9, 0.9]}
    truth = {"medical_qa": {c: {s: {"score": v[s], "loglik": -v[s]} for s in range(3)} for c, v in scores.items()}}
    got = one_grid_run(truth, [task("medical_qa")])
    metric = got["metric"]["tasks"]["medical_qa"]
    assert metric["tolerant_top1"] == pytest.approx(2 / 3)
    assert metric["kendall_tau"] == pytest.approx(-1.0) and got["metric"]["kendall_tau"] == pytest.approx(-1.0)
    # loglik = -score inverts seed 0's order, which is then right: c > b > a
    assert got["loglik"]["tasks"]["medical_qa"]["tolerant_top1"] == pytest.approx(1.0)
    assert got["loglik"]["kendall_tau"] == pytest.approx(1.0)


def test_seed_ensemble_averages_the_signal_and_sums_the_cost():
    from damoc.benchmark.agreement import ground_truth_summary
    from damoc.benchmark.report import _seed_ensembles, _seed_spread
    from damoc.benchmark.suite import task

    t = task("medical_qa")
    summaries = {t.name: ground_truth_summary({"a": [0.3, 0.3], "b": [0.2, 0.2], "c": [0.1, 0.1]})}

    def row(name, scores, tau):
        d = {"scores": scores, "flops": 10.0, "seconds": 2.0, "grid_flops": 100.0, "grid_train_flops": 60.0,
             "grid_seconds": 20.0, "saving_train_flops": 12.0, "stage_flops": {"train": 5.0, "evaluate": 3.0},
             "failed": []}
        return {"recipe": name, "signal": "loglik", "tasks": {t.name: d}, "kendall_tau": tau,
                "tolerant_top1": 1.0, "strict_top1": 1.0}

    # seed 0 ranks b first, seed 1 ranks a first by a larger margin: the mean ranks a > b > c
    rows = [row("paper", {"a": -1.0, "b": -0.9, "c": -2.0}, 0.33), row("paper@seed1", {"a": -0.5, "b": -1.2, "c": -2.0}, 1.0)]
    results = {"paper": {}, "paper@seed1": {}}
    (ens,) = _seed_ensembles(rows, results, [t], summaries)
    d = ens["tasks"][t.name]
    assert ens["recipe"] == "paper x2 seeds"
    assert d["pick"] == "a" and d["kendall_tau"] == pytest.approx(1.0)
    assert d["scores"]["a"] == pytest.approx(-0.75)
    assert d["saving_flops"] == pytest.approx(100.0 / 20.0) and d["saving_train_flops"] == pytest.approx(60.0 / 10.0)
    spread = _seed_spread(rows)["paper/loglik"]
    assert spread["seeds"] == [0, 1]
    assert spread["kendall_tau"]["mean"] == pytest.approx(0.665)
    assert spread["kendall_tau"]["sd"] == pytest.approx(math.sqrt(2) * 0.335)
