"""End to end: the real pipeline function through kfp.local on the demo zoo, in each mode."""
import json
import shutil

import pytest
import yaml

from damoc.cli import main

SMALL = {
    "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl", "task": "qa_long",
             "max_train_samples": 240, "max_eval_samples": 12},
    "candidates": [
        {"name": "tiny-llama", "path": "zoo://tiny-llama", "base_path": "zoo://tiny-llama/base"},
        {"name": "tiny-qwen2", "path": "zoo://tiny-qwen2", "base_path": "zoo://tiny-qwen2/base"},
        {"name": "tiny-mistral", "path": "zoo://tiny-mistral", "base_path": "zoo://tiny-mistral/base"},
        {"name": "tiny-neox", "path": "zoo://tiny-neox"},  # no base: pruning skipped for this one
        {"name": "broken", "path": "BROKEN"},  # config and tokenizer load (preflight passes), weights do not
    ],
    "filter": {"method": "graphcut", "ratio": 0.25},
    "compression": {"rate": 0.6, "bertscore_threshold": 0.85, "scorer_model": "zoo://tiny-llama/base"},
    "pruning": {"threshold": 0.5, "max_prune_fraction": 0.25},
    "training": {"epochs": 1, "batch_size": 16, "max_length": 128},
    "evaluation": {"max_new_tokens": 24},
}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, zoo_dir):
    root = tmp_path_factory.mktemp("cfg")
    broken = root / "broken"
    shutil.copytree(zoo_dir / "tiny-neox" / "chat", broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    doc = yaml.safe_load(yaml.safe_dump(SMALL))
    doc["candidates"][-1]["path"] = str(broken)
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _check_common(out, mode):
    sel = json.loads((out / "selection.json").read_text())
    assert sel["mode"] == mode and sel["metric"] == "bertscore_rougel"
    ranking = {r["candidate"]: r for r in sel["ranking"]}
    assert set(ranking) == {c["name"] for c in SMALL["candidates"]}
    ok = [r for r in sel["ranking"] if r["status"] == "ok"]
    assert [r["rank"] for r in ok] == [1, 2, 3, 4] and sel["selected"] == ok[0]["candidate"]
    assert all(0.0 < r["metric_score"] <= 1.0 for r in ok)
    # damoc ranks by the references' log-likelihood (evaluation.rank_by); grid search by the task metric
    assert all(r["score"] == (r["loglik"] if mode == "damoc" else r["metric_score"]) for r in ok)
    assert ranking["broken"]["status"] == "failed" and ranking["broken"]["error"].startswith("train: ")
    assert set(sel["cost"]["train_seconds"]) == set(ranking)
    assert sel["cost"]["total_seconds"] > sum(sel["cost"]["train_seconds"].values()) / 2
    report = (out / "report.md").read_text()
    assert f"mode `{mode}`" in report and "| 1 | " + sel["selected"] in report
    return sel


def test_damoc_mode_end_to_end(config_path, tmp_path):
    out = tmp_path / "damoc"
    assert main(["run", str(config_path), "--out", str(out)]) == 0
    sel = _check_common(out, "damoc")
    stats = sel["stats"]
    assert stats["filter"]["stats"]["n_out"] == 60 and stats["filter"]["status"] == "ok"
    assert stats["compress"]["status"] == "ok" and stats["compress"]["stats"]["word_ratio"] < 1.0
    cands = stats["candidates"]
    assert cands["tiny-neox"]["prune"]["status"] == "skipped"
    pruned = cands["tiny-qwen2"]["prune"]["stats"]
    assert pruned["num_layers_after"] == pruned["num_layers_before"] - len(pruned["pruned_layers"])
    assert cands["tiny-llama"]["train"]["stats"]["samples"] == 60


def test_grid_search_mode_end_to_end(config_path, tmp_path):
    out = tmp_path / "grid"
    assert main(["run", str(config_path), "--mode", "grid_search", "--out", str(out)]) == 0
    sel = _check_common(out, "grid_search")
    stats = sel["stats"]
    assert stats["filter"]["status"] == "skipped" and stats["compress"]["status"] == "skipped"
    assert all(c["prune"]["status"] == "skipped" for c in stats["candidates"].values())
    assert stats["candidates"]["tiny-llama"]["train"]["stats"]["samples"] == 240


def test_failed_run_keeps_earlier_results(config_path, tmp_path, capsys):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "selection.json").write_text('{"previous": true}')
    bad = yaml.safe_load(config_path.read_text())
    bad["data"]["fields"] = {"input": "question"}  # the demo data has no such column
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    assert "column(s) not found: input -> 'question'" in capsys.readouterr().err
    assert json.loads((out / "selection.json").read_text()) == {"previous": True}
    shutil.rmtree(out)


def test_failed_task_exits_1_and_keeps_earlier_results(config_path, tmp_path, capsys):
    out = tmp_path / "keep2"
    (out / "runs" / "r0").mkdir(parents=True)  # an earlier run's layout (a plain report.md would be refused)
    (out / "runs" / "r0" / "report.md").write_text("previous report")
    (out / "current").symlink_to("runs/r0")
    (out / "report.md").symlink_to("current/report.md")
    # a filter whose scorer does not exist fails the filter task (a broken *compression* scorer only skips
    # compression, reported): the run fails with exit 1 and the earlier results stay
    assert main(["run", str(config_path), "--out", str(out), "--set", "filter.method=superfiltering",
                 "--set", "filter.options.superfiltering.scorer_model=/no/scorer"]) == 1
    assert "run failed" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "previous report" and not (out / "selection.json").exists()
