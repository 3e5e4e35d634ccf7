"""training.method: both — candidates expanded into <name>@full / <name>@lora, trained each way, and the
selection says which method won per model; cost labels of selection.json."""
import json

import pytest
import yaml

from damoc.config import ConfigError, TrainingConfig, load_config, parse_config
from damoc.config_params import from_pipeline_arguments, to_pipeline_arguments
from damoc.data.records import write_samples
from damoc.data.schema import Sample
from damoc.results import CandidateResult, StageResult
from damoc.selection.ranking import build_selection, method_selection, rank_results
from damoc.selection.report import render_report
from damoc.training.methods import check_fanout, split_variant, training_for
from damoc.workflow.candidate_steps import finetune_step
from damoc.workflow.outcome import write_model_ref
from damoc.workflow.rank_step import rank_step

DATA = {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"}


def _cfg(candidates, **training):
    return parse_config({"data": DATA, "candidates": candidates, "training": {"method": "both", **training}})


# ------------------------------------------------------------------ expansion and validation


def test_both_expands_each_candidate_into_a_full_and_a_lora_variant():
    cfg = _cfg([{"name": "a", "path": "x", "base_path": "xb"}, {"name": "b", "path": "y"}])
    assert [(c.name, c.training_method, c.model_name, c.path, c.base_path) for c in cfg.candidates] == [
        ("a@full", "full", "a", "x", "xb"), ("a@lora", "lora", "a", "x", "xb"),
        ("b@full", "full", "b", "y", None), ("b@lora", "lora", "b", "y", None)]
    # the pipeline gets the expanded list, and validating it again inside the pipeline does not expand twice
    args = to_pipeline_arguments(cfg)
    assert [c["name"] for c in args["candidates"]] == ["a@full", "a@lora", "b@full", "b@lora"]
    assert from_pipeline_arguments(args) == cfg
    check_fanout(args["candidates"], cfg)  # what `damoc run` passes is what the ParallelFor runs over


def test_a_candidate_with_its_own_method_is_not_expanded():
    cfg = _cfg([{"name": "big", "path": "x", "training_method": "lora"}, {"name": "small", "path": "y"}])
    assert [c.name for c in cfg.candidates] == ["big", "small@full", "small@lora"]
    # without `both`, nothing is expanded and the override still applies to its candidate
    one = parse_config({"data": DATA, "candidates": [{"name": "big", "path": "x", "training_method": "lora"},
                                                      {"name": "s", "path": "y"}]})
    assert [c.name for c in one.candidates] == ["big", "s"]
    assert training_for(one.training, one.candidates[0]).method == "lora"
    assert training_for(one.training, one.candidates[1]) is one.training  # unchanged: no copy


@pytest.mark.parametrize("candidates, message", [
    ([{"name": "a@lora", "path": "x"}], "candidates.0: name 'a@lora' ends in '@lora' but training_method is None"),
    ([{"name": "a@lora", "path": "x", "training_method": "full"}], "training_method is 'full'"),
    ([{"name": "a", "path": "x"}, {"name": "a@full", "path": "x", "training_method": "full"}],
     "duplicate name(s) ['a@full']"),
    ([{"name": "a@both", "path": "x"}], "candidates.0.name: String should match pattern"),
    ([{"name": "a", "path": "x", "training_method": "both"}], "candidates.0.training_method"),
])
def test_bad_method_combinations_are_rejected_naming_the_key(candidates, message):
    with pytest.raises(ConfigError) as err:
        _cfg(candidates)
    assert message in str(err.value)


def test_yaml_with_both_and_a_bad_method_exits_2_naming_the_key(tmp_path, capsys):
    from damoc.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "candidates": [{"name": "m", "path": "x"}],
                                    "training": {"method": "all"}}))
    assert main(["validate", str(path)]) == 2
    assert "training.method" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"data": DATA, "candidates": [{"name": "m", "path": "x"}],
                                    "training": {"method": "both"}}))
    assert [c.name for c in load_config(path).candidates] == ["m@full", "m@lora"]


def test_an_unexpanded_list_under_both_is_refused_before_the_fan_out():
    cfg = _cfg([{"name": "a", "path": "x"}])
    with pytest.raises(ConfigError, match=r"expanded list \['a@full', 'a@lora'\], got \['a'\]"):
        check_fanout([{"name": "a", "path": "x"}], cfg)


def test_training_for_and_split_variant():
    settings = TrainingConfig(method="both", lora_r=4)
    cfg = _cfg([{"name": "a.b-1", "path": "x"}])
    lora = training_for(settings, cfg.candidates[1])
    assert (lora.method, lora.lora_r, settings.method) == ("lora", 4, "both")
    assert split_variant("a.b-1@lora") == ("a.b-1", "lora") and split_variant("mail@home") == ("mail@home", None)
    with pytest.raises(ValueError, match="'both' is resolved by expanding"):
        training_for(settings, parse_config({"data": DATA, "candidates": [{"name": "a", "path": "x"}]}).candidates[0])


def test_finetune_step_trains_each_variant_its_own_way(tmp_path, tiny_pair):
    data = tmp_path / "d.jsonl"
    write_samples([Sample(id=str(i), instruction="", input=f"q {i}", output=f"a {i}") for i in range(4)], data)
    cfg = _cfg([{"name": "t", "path": str(tiny_pair[1])}], epochs=1, batch_size=4, max_length=32, lora_r=2)
    stats = {}
    for cand in cfg.candidates:
        model_in = tmp_path / f"in-{cand.training_method}"
        write_model_ref(model_in, cand.path)
        result = finetune_step(cfg, cand.model_dump(), model_in, data, tmp_path / f"out-{cand.training_method}",
                               progress=False)
        assert result.status == "ok", result.error
        stats[cand.training_method] = result.stages["train"].stats
    assert stats["full"]["method"] == "full" and stats["full"]["trainable_params"] == stats["full"]["params"]
    assert stats["lora"]["method"] == "lora" and 0 < stats["lora"]["trainable_params"] < stats["lora"]["params"]
    assert stats["full"]["accelerators"] == stats["lora"]["accelerators"]  # 0 on CPU, GPUs held on a GPU


# ------------------------------------------------------------------ method decision in the ranking


def _res(name, score, *, failed=False, diverged=False, train=None):
    stages = {"train": StageResult(stage="train", seconds=(train or {}).pop("wall", 0.0),
                                   stats={"loss_is_finite": not diverged, **(train or {})})}
    r = CandidateResult(candidate=name, score=score, stages=stages)
    if failed:
        r.status, r.error, r.score = "failed", "train: OOM", None
    return r


VARIANTS = {f"{m}@{k}": (m, k) for m in ("a", "b", "c", "d") for k in ("full", "lora")}


def test_method_decision_per_model_and_overall_pick():
    results = [_res("a@full", -1.0), _res("a@lora", -1.25),      # a: full wins by 0.25
               _res("b@full", -2.0), _res("b@lora", -0.5),       # b: lora wins by 1.5, and is the overall best
               _res("c@full", -0.1, diverged=True), _res("c@lora", -3.0),  # c: full diverged, ranked last
               _res("d@full", None, failed=True), _res("d@lora", -4.0)]    # d: full failed: lora by default
    sel = build_selection(mode="damoc", metric="m", results=results, stage_results=[], stage_seconds={},
                          total_seconds=1.0, variants=VARIANTS)
    methods = sel["methods"]
    assert sel["selected"] == "b@lora"
    assert (methods["selected_model"], methods["selected_method"]) == ("b", "lora")
    per = methods["per_model"]
    assert {m: r["chosen"] for m, r in per.items()} == {"a": "full", "b": "lora", "c": "lora", "d": "lora"}
    assert per["a"]["margin"] == pytest.approx(0.25) and per["b"]["margin"] == pytest.approx(1.5)
    assert per["c"]["margin"] == pytest.approx(-2.9)  # chosen despite a lower score: the other diverged
    assert per["d"] == {"chosen": "lora", "scores": {"full": None, "lora": -4.0},
                        "candidates": {"full": "d@full", "lora": "d@lora"}, "note": "chosen by default: full failed"}
    report = render_report(sel)
    assert "**Selected model and method:** `b` with lora fine-tuning" in report
    assert "| a | -1.0000 | -1.2500 | full | 0.2500 |  |" in report
    assert "| d | — | -4.0000 | lora | — | chosen by default: full failed |" in report


def test_no_method_decision_without_pairs_or_when_every_variant_failed():
    ranking = rank_results([_res("a@full", 0.5), _res("b@lora", 0.4)])
    assert method_selection(ranking, VARIANTS) is None  # each model trained one way only
    ranking = rank_results([_res("a@full", None, failed=True), _res("a@lora", None, failed=True)])
    assert method_selection(ranking, VARIANTS) == {
        "per_model": {"a": {"chosen": None, "scores": {"full": None, "lora": None},
                            "candidates": {"full": "a@full", "lora": "a@lora"}}},
        "selected_model": None, "selected_method": None}


def test_rank_step_groups_the_variants_of_a_both_config(tmp_path):
    cfg = _cfg([{"name": "a", "path": "x"}, {"name": "b", "path": "y"}])
    results = [_res("a@full", 0.3), _res("a@lora", 0.6), _res("b@full", 0.5)]  # b@lora never reported
    sel = rank_step(cfg, [r.model_dump_json() for r in results], [], started_at=0.0,
                    selection_out=tmp_path / "s.json", report_out=tmp_path / "r.md")
    assert sel["selected"] == "a@lora" and sel["methods"]["selected_method"] == "lora"
    assert sel["methods"]["per_model"]["b"]["chosen"] == "full"
    assert sel["methods"]["per_model"]["b"]["note"] == "chosen by default: lora failed"
    assert json.loads((tmp_path / "s.json").read_text())["methods"] == sel["methods"]


# ------------------------------------------------------------------ cost labels


def test_cost_splits_trainer_runtime_from_load_save_and_counts_gpu_hours(tmp_path):
    cfg = parse_config({"data": DATA, "candidates": [{"name": n, "path": n} for n in ("gpu2", "cpu", "job", "old")]})
    results = [
        _res("gpu2", 0.4, train={"wall": 1800.0, "train_seconds": 1500.0, "load_seconds": 200.0,
                                 "save_seconds": 99.5, "accelerators": 2}),
        _res("cpu", 0.3, train={"wall": 60.0, "train_seconds": 50.0, "load_seconds": 4.0, "save_seconds": 5.0,
                                "accelerators": 0}),
        _res("job", 0.2, train={"wall": 900.0, "train_seconds": 700.0, "load_seconds": 10.0, "save_seconds": 20.0,
                                "accelerators": 1, "gpu_hours": 4.0}),  # a PyTorchJob's own nodes x GPUs x time
        _res("old", 0.1, train={"wall": 10.0}),  # a result from before these figures existed
    ]
    sel = rank_step(cfg, [r.model_dump_json() for r in results], [StageResult(stage="filter", seconds=3.0)],
                    started_at=0.0, selection_out=tmp_path / "s.json", report_out=tmp_path / "r.md")
    cost = sel["cost"]
    assert cost["stage_seconds"]["train"] == 2770.0 and cost["stage_seconds"]["filter"] == 3.0
    assert cost["stage_seconds_basis"] == {"filter": "wall", "prune": "sum_over_candidates",
                                           "train": "sum_over_candidates", "evaluate": "sum_over_candidates"}
    assert cost["train_seconds"] == {"gpu2": 1800.0, "cpu": 60.0, "job": 900.0, "old": 10.0}
    assert cost["train_runtime_seconds"] == {"gpu2": 1500.0, "cpu": 50.0, "job": 700.0, "old": None}
    assert cost["train_load_save_seconds"] == {"gpu2": 299.5, "cpu": 9.0, "job": 30.0, "old": None}
    assert cost["gpu_hours"] == {"gpu2": 1.0, "cpu": 0.0, "job": 4.0, "old": None}
    report = (tmp_path / "r.md").read_text()
    assert "| train | 2,770.0 | summed over candidates |" in report and "| GPU-hours | 5.000 GPU-hours" in report


# ------------------------------------------------------------------ end to end (kfp.local, demo zoo)


@pytest.mark.slow
def test_local_pipeline_with_both_methods_ranks_every_variant(tmp_path, zoo_dir):
    from damoc.cli import main

    config = {
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl", "task": "qa_long",
                 "max_train_samples": 64, "max_eval_samples": 8},
        "candidates": [{"name": "tiny-llama", "path": "zoo://tiny-llama", "base_path": "zoo://tiny-llama/base"},
                       {"name": "tiny-qwen2", "path": "zoo://tiny-qwen2"}],
        "filter": {"method": "random", "ratio": 0.5},
        "compression": {"enabled": False},
        "pruning": {"threshold": 0.5, "max_prune_fraction": 0.25},
        "training": {"method": "both", "max_steps": 2, "batch_size": 8, "max_length": 96, "lora_r": 4},
        "evaluation": {"max_new_tokens": 8, "bootstrap_samples": 100},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    variants = {"tiny-llama@full", "tiny-llama@lora", "tiny-qwen2@full", "tiny-qwen2@lora"}
    assert {r["candidate"] for r in sel["ranking"] if r["status"] == "ok"} == variants
    stats = sel["stats"]["candidates"]
    assert {n: stats[n]["train"]["stats"]["method"] for n in variants} == {n: n.split("@")[1] for n in variants}
    per = sel["methods"]["per_model"]
    assert set(per) == {"tiny-llama", "tiny-qwen2"} and all(r["chosen"] in ("full", "lora") for r in per.values())
    assert f"{sel['methods']['selected_model']}@{sel['methods']['selected_method']}" == sel["selected"]
    report = (out / "report.md").read_text()
    assert "## Fine-tuning method per model (full vs LoRA)" in report and "**Selected model and method:**" in report
    assert set(sel["cost"]["gpu_hours"]) == variants and all(v == 0.0 for v in sel["cost"]["gpu_hours"].values())
