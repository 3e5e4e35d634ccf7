"""`damoc estimate` and the shared cost model (damoc.cost): parameter counts from configs, the projection's
arithmetic, and agreement with the FLOPs the benchmark counts for a real run (within 10%)."""
from __future__ import annotations

import json

import pytest

from damoc import cost
from damoc.config import parse_config


def test_benchmark_flops_is_the_product_cost_model():
    from damoc.benchmark import flops

    assert flops.train_flops is cost.train_flops and flops.eval_flops is cost.eval_flops
    assert flops.MINILM_PARAMS == cost.MINILM_PARAMS


def test_param_counts_from_config_dicts_match_published_sizes():
    # no weights: the meta device; published sizes of the released checkpoints
    qwen = cost.shape_from_dict(dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                     tie_word_embeddings=True))
    llama = cost.shape_from_dict(dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                      vocab_size=128256, tie_word_embeddings=False))
    assert qwen.params == 494_032_768 and qwen.layers == 24
    assert llama.params == 8_030_261_248 and llama.layers == 32
    # one decoder layer of Llama-3.1-8B: attention 4096*(4096+2*1024+4096) + MLP 3*4096*14336 + 2 norms
    assert llama.layer_params == 4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096
    assert llama.after_pruning(8) == llama.params - 8 * llama.layer_params


def test_param_counts_match_the_loaded_zoo_models(zoo_dir):
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    for c in manifest["candidates"]:
        shape = cost.model_shape(str(zoo_dir / c["path"]))
        assert shape.params == c["params"] and shape.layers == c["num_layers"]


def _inputs(params=1_000_000, layers=4, layer_params=200_000):
    shape = cost.ModelShape(params, layers, layer_params)
    return [cost.CandidateInputs("a", shape, 100.0, 20.0, 60.0, 30.0, prunable=True)]


def test_projection_arithmetic():
    recipe = cost.Recipe(train_rows=1000, eval_rows=50, epochs=2, batch_size=10, filter_ratio=0.2,
                         compression_kept=0.5, prune_share=0.25, predict=False)
    res = cost.compare(_inputs(), recipe, gpu_tflops=100.0)
    run, grid = res["damoc"], res["grid_search"]
    # DaMoC: 200 rows of 20 + 0.5 * 80 = 60 tokens, 2 epochs (40 steps x 10 = 400 rows seen), one layer dropped
    assert run["flops"]["train"] == pytest.approx(6 * 800_000 * 200 * 60 * 2)
    assert run["flops"]["evaluate"] == pytest.approx(2 * 800_000 * 50 * 90)  # loglik only
    # grid search: every row whole, every layer, and it generates (the metric is its ground truth)
    assert grid["flops"]["train"] == pytest.approx(6 * 1_000_000 * 1000 * 100 * 2)
    assert grid["flops"]["evaluate"] == pytest.approx(2e6 * 50 * 90 + 2e6 * (50 * 60 + 50 * 64))
    assert res["saving"] == pytest.approx(grid["total_flops"] / run["total_flops"])
    assert grid["gpu_hours"] == pytest.approx(grid["total_flops"] / 100e12 / 3600)


def test_estimate_of_a_config(tmp_path, zoo_dir):
    from damoc.estimate import Assumptions, estimate, format_table

    rows = [{"instruction": "Answer.", "input": f"question number {i} " * 3, "output": f"answer {i} " * 5}
            for i in range(40)]
    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({"data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl")},
                        "candidates": [{"name": "llama", "path": str(zoo_dir / "tiny-llama/chat"),
                                        "base_path": str(zoo_dir / "tiny-llama/base")},
                                       {"name": "neox", "path": str(zoo_dir / "tiny-neox/chat")}],
                        "filter": {"ratio": 0.25}, "compression": {"rate": 0.5},
                        "pruning": {"rule": "fraction", "target_fraction": 0.5},
                        "training": {"epochs": 2, "batch_size": 5}})
    est = estimate(cfg, Assumptions(gate_pass=0.8))
    assert est["damoc"]["train_rows"] == 10 and est["grid_search"]["train_rows"] == 40
    assert est["assumptions"]["compression_kept"] == pytest.approx(0.8 * 0.5 + 0.2)
    assert est["damoc"]["per_candidate"]["llama"]["layers_dropped"] == 2  # half of 4 (a base/chat pair)
    assert est["damoc"]["per_candidate"]["neox"]["layers_dropped"] == 0  # no base_path: not pruned
    assert est["candidates"]["llama"]["params"] == cost.model_shape(str(zoo_dir / "tiny-llama/chat")).params
    assert est["saving_train"] > 4  # 4x fewer rows, fewer tokens, fewer layers
    # end to end the 22.7M-parameter MiniLM embedding every row (filtering) outweighs 1M-parameter candidates
    assert est["damoc"]["flops"]["filter"] > est["damoc"]["flops"]["train"] and est["saving"] < est["saving_train"]
    table = format_table(est)
    assert "grid search" in table and "saving" in table


def test_cli_estimate_json(tmp_path, zoo_dir, capsys):
    from damoc.cli import main

    rows = [{"instruction": "", "input": f"q {i}", "output": f"a {i}"} for i in range(8)]
    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{train: train.jsonl, eval: eval.jsonl}}\ncandidates:\n"
                      f"  - {{name: llama, path: {zoo_dir / 'tiny-llama/chat'}}}\n")
    assert main(["estimate", str(config), "--json", "--gpu-tflops", "100", "--set", "filter.ratio=0.5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu_tflops"] == 100 and doc["damoc"]["train_rows"] == 4 and doc["grid_search"]["train_rows"] == 8
    with pytest.raises(SystemExit) as err:  # argparse: a fraction outside [0, 1]
        main(["estimate", str(config), "--gate-pass", "1.5"])
    assert err.value.code == 2


# ----------------------------------------------------------------------------------------------------------
# agreement with a measured run

def _run_config(zoo_dir, data_dir, **over):
    doc = {"mode": "damoc",
           "data": {"train": str(data_dir / "train.jsonl"), "eval": str(data_dir / "eval.jsonl"), "task": "qa_long",
                    "max_train_samples": 96, "max_eval_samples": 12},
           "candidates": [{"name": n, "path": str(zoo_dir / n / "chat"), "base_path": str(zoo_dir / n / "base")}
                          for n in ("tiny-llama", "tiny-qwen2")],
           "filter": {"method": "graphcut", "ratio": 0.5, "options": {"graphcut": {"lambda": 0.4}}},
           "compression": {"rate": 0.75, "scorer_model": str(zoo_dir / "tiny-llama" / "base")},
           "pruning": {"threshold": 0.85, "calibration_samples": 8},
           "training": {"method": "full", "epochs": 2, "batch_size": 16, "max_length": 128},
           "evaluation": {"rank_by": "loglik", "predict": False, "batch_size": 16}}
    doc.update(over)
    return parse_config(doc)


@pytest.mark.slow
def test_estimate_agrees_with_a_measured_run_within_10_percent(tmp_path, zoo_dir):
    """A real in-process run on demo data; its FLOPs counted as the benchmark counts them (damoc.cost on the
    stage statistics) vs the projection given the fractions the run measured (kept tokens, layers pruned)."""
    from damoc.demo.data import write_demo
    from damoc.estimate import Assumptions, projected_cost
    from damoc.workflow.inprocess import run_candidate, run_data_stages

    data_dir = tmp_path / "data"
    write_demo("qa_long", data_dir, n_train=96, n_eval=12)
    cfg = _run_config(zoo_dir, data_dir)
    data = run_data_stages(cfg, tmp_path / "work")
    results = [run_candidate(cfg, c.model_dump(), data, tmp_path / "work") for c in cfg.candidates]
    compress = next(s for s in data.results if s.stage == "compress").stats
    dropped = {r.candidate: r.stages["prune"].stats["num_layers_before"] - r.stages["prune"].stats["num_layers_after"]
               for r in results}
    measured_fractions = Assumptions(compression_kept=compress["token_ratio"], dropped_layers=dropped)
    doc = projected_cost(cfg, results, data.results, measured_fractions)
    assert doc["measured_flops"] > 0
    assert abs(doc["projection_error"]) < 0.10, doc
    for stage in ("filter", "compress", "train", "evaluate"):
        measured, projected = doc["measured_stage_flops"][stage], doc["projected_stage_flops"][stage]
        assert abs(projected - measured) / measured < 0.15, (stage, projected, measured)
    # the rank step writes the projection (default assumptions) beside the same measured FLOPs
    from damoc.workflow.rank_step import rank_step

    sel = rank_step(cfg, results, data.results, 0.0, tmp_path / "selection.json", tmp_path / "report.md")
    written = sel["projected_cost"]
    assert written["measured_flops"] == pytest.approx(doc["measured_flops"])
    assert written["assumptions"]["gate_pass"] == 0.92 and abs(written["projection_error"]) < 0.25
