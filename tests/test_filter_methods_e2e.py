"""Every registered filtering method end to end through the real pipeline function (kfp.local) on a demo task.

Slow (one kfp.local run per method, ~1-2 min each on 2 cores): `make test-all` runs it; the fast per-method
checks are in test_filter_methods.py / test_filter_algorithms.py.
"""
import json

import pytest
import yaml

from damoc.cli import main
from damoc.filtering import FILTERS

ROWS, RATIO = 40, 0.25


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in FILTERS.names() if not FILTERS.get(m).passes_through])
def test_method_runs_in_the_local_pipeline(method, tmp_path, zoo_dir):
    judge = str(zoo_dir / "tiny-llama" / "chat")
    doc = {
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl",
                 "max_train_samples": ROWS, "max_eval_samples": 4},
        "candidates": [{"name": "tiny-llama", "path": "zoo://tiny-llama"}],
        "filter": {"method": method, "ratio": RATIO,
                   **({"options": {method: {"judge_model": judge}}} if method == "alpagasus" else {})},
        "compression": {"enabled": False, "scorer_model": str(zoo_dir / "tiny-llama" / "base")},
        "pruning": {"enabled": False},
        "training": {"epochs": 1, "batch_size": 8, "max_length": 96},
        "evaluation": {"max_new_tokens": 4, "bootstrap_samples": 100},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-resume"]) == 0
    sel = json.loads((out / "selection.json").read_text())
    stats = sel["stats"]["filter"]["stats"]
    assert stats["method"] == method and stats["n_in"] == ROWS and stats["n_out"] == round(RATIO * ROWS)
    assert [r["status"] for r in sel["ranking"]] == ["ok"] and sel["selected"] == "tiny-llama"
