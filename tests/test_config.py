from pathlib import Path

import pytest
import yaml

from damoc.config import (ConfigError, RunConfig, from_pipeline_arguments, load_config, parse_config,
                          pipeline_defaults, to_pipeline_arguments)

MINIMAL = {"data": {"train": "t.jsonl", "eval": "e.csv"}, "candidates": [{"name": "a", "path": "/m/a"}]}


def _write(tmp_path: Path, doc) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_minimal_config_gets_documented_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.mode == "damoc" and cfg.filter.method == "graphcut" and cfg.filter.ratio == 0.2
    assert cfg.pruning.threshold == 0.85 and cfg.compression.bertscore_threshold == 0.9
    assert cfg.metric == "bertscore_rougel"
    assert cfg.scorer_model_path() == "/m/a"


@pytest.mark.parametrize("patch,key,needle", [
    ({"filter": {"ratio": 1.5}}, "filter.ratio", "less than or equal to 1"),
    ({"filter": {"method": "magic"}}, "filter.method", "graphcut"),
    ({"training": {"lr": 0.1}}, "training.lr", "unknown key"),
    ({"mode": "fast"}, "mode", "damoc"),
    ({"data": {"train": "t.txt", "eval": "e.jsonl"}}, "data.train", "supported suffix"),
    ({"candidates": []}, "candidates", "at least 1"),
    ({"candidates": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "", "duplicate name"),
    ({"candidates": [{"name": "bad name!", "path": "x"}]}, "candidates.0.name", "pattern"),
])
def test_bad_config_names_key_and_problem(tmp_path, patch, key, needle):
    doc = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, doc))
    text = str(err.value)
    assert str(tmp_path / "run.yaml") in text
    assert key in text and needle in text


def test_missing_required_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        parse_config({"candidates": MINIMAL["candidates"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_config_file(tmp_path):
    (tmp_path / "t.jsonl").write_text("{}\n")
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.data.train == str((tmp_path / "t.jsonl").resolve())
    assert cfg.data.eval == "e.csv"  # does not exist: left as given


def test_overrides_apply_dotted_keys(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), {"filter.ratio": 0.1, "mode": "grid_search"})
    assert cfg.filter.ratio == 0.1 and cfg.mode == "grid_search"


def test_pipeline_arguments_round_trip():
    cfg = parse_config({**MINIMAL, "filter": {"ratio": 0.05}, "data": {**MINIMAL["data"], "max_eval_samples": None,
                                                                      "fields": {"instruction": None}}})
    args = to_pipeline_arguments(cfg)
    assert args["filter_ratio"] == 0.05 and args["data_field_instruction"] == ""
    assert all(v is not None for v in args.values())  # KFP parameters cannot be null
    assert from_pipeline_arguments(args) == cfg


def test_pipeline_signature_mirrors_config_defaults():
    import inspect

    from pipelines.damoc_pipeline import damoc_pipeline

    params = inspect.signature(damoc_pipeline.pipeline_func).parameters
    for key, default in pipeline_defaults().items():
        assert key in params, f"pipeline lacks parameter {key}"
        assert params[key].default == default, key
        assert params[key].annotation is type(default), key
    config_keys = set(pipeline_defaults()) | {"mode", "candidates", "data_train", "data_eval"}
    extra = set(params) - config_keys
    assert extra == {"output_uri", "s3_secret_name"}


def test_validate_component_accepts_exactly_the_config_keys():
    import inspect

    from components.config import validate_config

    params = set(inspect.signature(validate_config.python_func).parameters)
    assert params == set(pipeline_defaults()) | {"mode", "candidates", "data_train", "data_eval", "config"}
    assert isinstance(RunConfig.model_json_schema(), dict)
