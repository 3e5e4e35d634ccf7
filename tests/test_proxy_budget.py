"""training.proxy_steps: a fixed optimizer-step budget for the DaMoC proxies (mode damoc), whatever the filtered set
holds; grid search (the ground truth) keeps its epochs."""
from __future__ import annotations

import pytest

from damoc.config import ConfigError, TrainingConfig, parse_config
from damoc.data.records import write_samples
from damoc.data.schema import Sample
from damoc.workflow.candidate_steps import finetune_step, prune_step
from damoc.workflow.outcome import read_result

SAMPLES = [Sample(id=str(i), instruction="", input=f"q {i}", output=f"a {i}") for i in range(6)]


def _cfg(candidate: dict, mode: str, **training) -> object:
    return parse_config({"mode": mode, "data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"},
                         "candidates": [candidate], "pruning": {"enabled": False},
                         "training": {"epochs": 1, "batch_size": 2, "max_length": 32, **training}})


def test_for_mode_applies_proxy_steps_to_damoc_only():
    settings = TrainingConfig(epochs=3, proxy_steps=40)
    assert settings.for_mode("damoc").max_steps == 40 and settings.for_mode("damoc").epochs == 3
    assert settings.for_mode("grid_search") is settings and settings.max_steps is None
    capped = TrainingConfig(max_steps=7, proxy_steps=40)
    assert capped.for_mode("damoc").max_steps == 40 and capped.for_mode("grid_search").max_steps == 7
    assert TrainingConfig().for_mode("damoc").max_steps is None  # unset: epochs decide
    with pytest.raises(ConfigError, match="proxy_steps"):
        parse_config({"data": {"train": "t", "eval": "e", "task": "extractive_qa"},
                      "candidates": [{"name": "a", "path": "p"}], "training": {"proxy_steps": 0}})


@pytest.mark.parametrize("mode, steps", [("damoc", 5), ("grid_search", 3)])
def test_a_proxy_trains_the_given_steps_and_grid_search_its_epochs(mode, steps, tmp_path, tiny_pair):
    """6 rows, batch 2, 1 epoch = 3 steps; proxy_steps 5 makes the proxy cycle the data for 5."""
    data = tmp_path / "train.jsonl"
    write_samples(SAMPLES, data)
    cand = {"name": "c", "path": str(tiny_pair[1]), "base_path": str(tiny_pair[0])}
    cfg = _cfg(cand, mode, proxy_steps=5)
    prune_step(cfg, cand, data, tmp_path / "pruned", progress=False)
    finetune_step(cfg, cand, tmp_path / "pruned", data, tmp_path / "trained", progress=False)
    stats = read_result(tmp_path / "trained", "c").stages["train"].stats
    assert stats["steps"] == steps
