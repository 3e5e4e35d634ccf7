"""Registries are the single source of what exists: a method registered from this module (a plugin) flows
through config validation, the pipeline parameters and a local kfp.local run, with no other file changed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from damoc.filtering.base import FILTERS, SampleFilter
from damoc.registry import Registry, RegistryError, SettingsModel, load_plugins

TOY = "test_every_kth"


class EveryKthSettings(SettingsModel):
    k: int = Field(2, ge=1, description="keep every k-th sample first")


class EveryKth(SampleFilter):
    """Toy method: samples 0, k, 2k, ... first, then the rest in order."""

    name = TOY
    description = "toy test method"
    Settings = EveryKthSettings

    def select(self, n_select, *, embeddings, samples, seed, settings):
        order = [i for i in range(len(samples)) if i % settings.k == 0]
        order += [i for i in range(len(samples)) if i % settings.k]
        return order[:n_select]


# Imported as a plugin ($DAMOC_PLUGINS) by the pipeline's task processes: register at import there.
if os.environ.get("DAMOC_TEST_TOY_PLUGIN") == "1":
    FILTERS.register(TOY, EveryKth(), replace=True)


@pytest.fixture
def toy_method(monkeypatch):
    FILTERS.register(TOY, EveryKth(), replace=True)
    monkeypatch.setenv("DAMOC_TEST_TOY_PLUGIN", "1")
    monkeypatch.setenv("DAMOC_PLUGINS", Path(__file__).stem)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                     os.environ.get("PYTHONPATH")])))
    yield TOY
    FILTERS.unregister(TOY)


def test_registry_errors_list_what_exists():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(RegistryError, match="unknown widget 'b'; available: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    with pytest.raises(ValueError, match="use letters"):
        reg.register("bad name", 3)


def test_plugins_named_in_the_environment_are_imported(monkeypatch, tmp_path):
    (tmp_path / "damoc_test_plugin_mod.py").write_text(
        "from damoc.compression.rewriters import REWRITERS\nREWRITERS.register('echo_test', object())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DAMOC_PLUGINS", "damoc_test_plugin_mod")
    from damoc.compression.rewriters import REWRITERS

    try:
        assert "damoc_test_plugin_mod" in load_plugins(force=True)
        assert "echo_test" in REWRITERS
    finally:
        REWRITERS.unregister("echo_test")
    monkeypatch.setenv("DAMOC_PLUGINS", "no_such_damoc_plugin")
    with pytest.raises(RegistryError, match="cannot import plugin module 'no_such_damoc_plugin'"):
        load_plugins(force=True)
    monkeypatch.delenv("DAMOC_PLUGINS")
    load_plugins(force=True)


@pytest.mark.slow  # scorer, judge and gradient methods on the tiny zoo: minutes on 2 cores
def test_every_registered_filter_runs_with_its_default_settings(zoo_dir):
    from damoc.data.schema import Sample
    from damoc.filtering import FILTERS as registry, filter_samples

    scorer = str(zoo_dir / "tiny-llama" / "chat")
    samples = [Sample(str(i), "", f"question {i} about topic {i % 3}", f"answer {i}") for i in range(12)]
    for name in registry.names():
        filt = registry.get(name)
        settings = {"judge_model": scorer} if getattr(filt, "needs_judge", False) else None
        kept, stats = filter_samples(samples, name, 0.5, seed=1, scorer_model=scorer, settings=settings)
        expected = 12 if registry.get(name).passes_through else 6
        assert stats["method"] == name and len(kept) == expected, name
        assert len({s.id for s in kept}) == len(kept), name


def test_toy_method_through_config_pipeline_parameters_and_a_local_run(toy_method, tmp_path, zoo_dir):
    from damoc.cli import main
    from damoc.config import ConfigError, parse_config
    from damoc.config_params import from_pipeline_arguments, parameter_descriptions, to_pipeline_arguments

    doc = {
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl",
                 "max_train_samples": 30, "max_eval_samples": 3},
        "candidates": [{"name": "tiny-llama", "path": "zoo://tiny-llama"}],
        "filter": {"method": TOY, "ratio": 0.2, "options": {TOY: {"k": 3}}},
        "compression": {"enabled": False},
        "pruning": {"enabled": False},
        "training": {"epochs": 1, "batch_size": 8, "max_length": 64},
        "evaluation": {"max_new_tokens": 4},
    }
    cfg = parse_config(doc)
    assert cfg.filter.method_settings() == EveryKthSettings(k=3)
    with pytest.raises(ConfigError, match=rf"{TOY}.k: Input should be greater than or equal to 1"):
        parse_config({**doc, "filter": {"method": TOY, "options": {TOY: {"k": 0}}}})
    args = to_pipeline_arguments(cfg)
    assert args["filter"]["options"][TOY] == {"k": 3}
    assert from_pipeline_arguments(args) == cfg
    assert TOY in parameter_descriptions()["filter"]

    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["run", str(config_path), "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["stats"]["filter"]["stats"]["method"] == TOY
    assert sel["stats"]["filter"]["stats"]["n_out"] == 6
    [selected] = [p for p in (out / "pipeline_root").rglob("selected") if p.is_file()]
    ids = [json.loads(line)["id"] for line in selected.read_text().splitlines()]
    assert ids == [f"train-{i + 1}" for i in (0, 3, 6, 9, 12, 15)]  # every 3rd row: the setting arrived
    assert sel["ranking"][0]["status"] == "ok"
