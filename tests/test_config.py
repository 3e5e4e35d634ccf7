from pathlib import Path

import pytest
import yaml

from damoc.config import ConfigError, RunConfig, load_config, parse_config
from damoc.config_params import PIPELINE_FIELDS, from_pipeline_arguments, pipeline_defaults, to_pipeline_arguments

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
    # missing next to the config: still next to the config (reported there), never a same-named file in the cwd
    assert cfg.data.eval == str((tmp_path / "e.csv").resolve())
    doc = {**MINIMAL, "candidates": [{"name": "a", "path": "org/model"}, {"name": "b", "path": "./ckpt"}]}
    cfg = load_config(_write(tmp_path, doc))
    assert cfg.candidates[0].path == "org/model"  # a hub id stays a hub id
    assert cfg.candidates[1].path == str((tmp_path / "ckpt").resolve())


def test_overrides_apply_dotted_keys(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), {"filter.ratio": 0.1, "mode": "grid_search"})
    assert cfg.filter.ratio == 0.1 and cfg.mode == "grid_search"


def test_pipeline_arguments_round_trip():
    cfg = parse_config({**MINIMAL, "filter": {"ratio": 0.05, "options": {"graphcut": {"lambda": 0.3}}},
                        "data": {**MINIMAL["data"], "max_eval_samples": None, "fields": {"instruction": None}}})
    args = to_pipeline_arguments(cfg)
    assert args["filter"]["ratio"] == 0.05 and args["filter"]["options"] == {"graphcut": {"lambda": 0.3}}
    assert args["data"]["fields"]["instruction"] == "" and cfg.data.fields.instruction == ""
    assert "max_eval_samples" not in args["data"]  # KFP cannot carry null: left out, the default is null
    assert from_pipeline_arguments(args) == cfg
    assert cfg.filter.method_settings().lambda_ == 0.3


def test_every_nullable_setting_defaults_to_null():
    """Leaving nulls out of pipeline parameters is lossless only while this holds."""
    from damoc.config_params import section_model

    models = [section_model(s) for s in ("data", "filter", "compression", "pruning", "training", "evaluation")]
    models += [RunConfig.model_fields["candidates"].annotation.__args__[0],
               RunConfig.model_fields["data"].annotation.model_fields["fields"].annotation]
    for model in models:
        for name, field in model.model_fields.items():
            if type(None) in getattr(field.annotation, "__args__", ()):
                assert field.default is None, f"{model.__name__}.{name}: nullable with a non-null default"


def test_method_settings_are_validated_against_the_registry():
    cfg = parse_config(MINIMAL)
    assert cfg.filter.options == {"graphcut": {"lambda": 0.4}}  # the chosen method's defaults, filled in
    with pytest.raises(ConfigError, match=r"filter.options: .*graphcut.lambda: Input should be greater"):
        parse_config({**MINIMAL, "filter": {"options": {"graphcut": {"lambda": -1}}}})
    with pytest.raises(ConfigError, match=r"filter.options: .*random.k: unknown setting"):
        parse_config({**MINIMAL, "filter": {"method": "random", "options": {"random": {"k": 1}}}})
    with pytest.raises(ConfigError, match=r"'magic' is not a filtering method; available: .*graphcut"):
        parse_config({**MINIMAL, "filter": {"options": {"magic": {}}}})
    with pytest.raises(ConfigError, match=r"filter.graphcut_lambda: moved to filter.options.graphcut.lambda"):
        parse_config({**MINIMAL, "filter": {"graphcut_lambda": 0.4}})


def test_settings_that_do_nothing_are_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"compression.rewriter: unknown rewriter backend 'gpt9'; available: "):
        parse_config({**MINIMAL, "compression": {"rewrite": True, "rewriter": "gpt9"}})
    with pytest.raises(ConfigError, match=r"training.launcher: unknown training launcher 'slurm'"):
        parse_config({**MINIMAL, "training": {"launcher": "slurm"}})
    with pytest.raises(ConfigError, match=r"data.task: unknown task type 'poetry'"):
        parse_config({**MINIMAL, "data": {**MINIMAL["data"], "task": "poetry"}})


def test_non_finite_numbers_are_bad_input():
    with pytest.raises(ConfigError, match="training.learning_rate"):
        parse_config({**MINIMAL, "training": {"learning_rate": float("inf")}})


def test_set_into_a_scalar_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'data.train' is not a section"):
        load_config(_write(tmp_path, MINIMAL), {"data.train.x": 1})


def test_every_setting_has_a_description():
    from damoc.config_params import key_rows

    rows = key_rows(RunConfig)
    for section in ("data", "filter", "compression", "pruning", "training", "evaluation"):
        assert any(k.startswith(section + ".") for k, *_ in rows)
    missing = [k for k, _, _, desc in rows if not desc]
    assert not missing, f"settings without a description: {missing}"


def test_pipeline_signature_is_derived_from_the_schema():
    import inspect

    from damoc.config import SECTIONS
    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    params = inspect.signature(damoc_pipeline.pipeline_func).parameters
    defaults = pipeline_defaults()
    assert set(params) == set(PIPELINE_FIELDS) | {"output_uri", "s3_secret_name", "api_key_secret_name"}
    assert set(SECTIONS) | {"mode", "candidates"} == set(PIPELINE_FIELDS)
    assert set(RunConfig.model_fields) == set(PIPELINE_FIELDS) | {"resources"}  # compile time, not a parameter
    for key, default in defaults.items():
        assert params[key].default == default, key
    assert params["filter"].default["options"] == {"graphcut": {"lambda": 0.4}}
    assert params["data"].default["fields"]["instruction"] == "instruction"


def test_validate_component_accepts_exactly_the_config_sections():
    import inspect

    from damoc_components.config import validate_config

    params = set(inspect.signature(validate_config.python_func).parameters)
    assert params == set(PIPELINE_FIELDS) | {"config"}


def test_validate_component_rebuilds_the_config(tmp_path):
    from types import SimpleNamespace

    from damoc_components.config import validate_config

    cfg = parse_config({**MINIMAL, "filter": {"ratio": 0.1}})
    artifact = SimpleNamespace(path=str(tmp_path / "config.json"), metadata={})
    validate_config.python_func(**to_pipeline_arguments(cfg), config=artifact)
    assert RunConfig.model_validate_json((tmp_path / "config.json").read_text()) == cfg
    assert artifact.metadata["candidates"] == len(cfg.candidates)  # started_at: fingerprint-data (uncached)


def test_empty_required_data_keys_are_reported_missing():
    args = to_pipeline_arguments(parse_config(MINIMAL))
    args["data"] = pipeline_defaults()["data"]
    with pytest.raises(ConfigError, match="data.train: required key is missing"):
        from_pipeline_arguments(args)


def test_duplicate_keys_and_non_utf8_configs_are_bad_input(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("data: {train: t.jsonl, eval: e.csv}\ncandidates: [{name: a, path: x}]\nmode: damoc\n"
                   "filter: {ratio: 0.1}\nfilter: {ratio: 0.5}\n")
    with pytest.raises(ConfigError, match=r"(?s)duplicate key 'filter'.*line 5"):
        load_config(dup)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("mode: damoc  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin)


def test_unknown_keys_and_names_get_a_did_you_mean():
    doc = {**MINIMAL, "trainig": {}, "training": {"learnig_rate": 0.1}, "filter": {"method": "graphcutt"},
           "candidates": [{"name": "a", "path": "/m/a", "base_pth": "/m/b"}]}
    text = str(pytest.raises(ConfigError, parse_config, doc).value)
    assert "  trainig: unknown key; did you mean training?" in text
    assert "  training.learnig_rate: unknown key; did you mean training.learning_rate?" in text
    assert "  candidates.0.base_pth: unknown key; did you mean candidates.0.base_path?" in text
    assert "unknown filtering method 'graphcutt' (did you mean graphcut?); available:" in text
    # nothing close: no guess, still the pointer to the key list
    text = str(pytest.raises(ConfigError, parse_config, {**MINIMAL, "zzz": 1}).value)
    assert "  zzz: unknown key (keys: `damoc config table`" in text and "did you mean" not in text


def test_set_errors_are_blamed_on_set_not_on_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL)
    text = str(pytest.raises(ConfigError, load_config, path, {"filter.ratio": 3}).value)
    assert text.startswith(f"invalid --set value (applied to {path}):")
    assert "  --set filter.ratio: Input should be less than or equal to 1" in text
    text = str(pytest.raises(ConfigError, load_config, path, {"evaluation.rank_bi": "metric"}).value)
    assert "  --set evaluation.rank_bi: unknown key; did you mean evaluation.rank_by?" in text
    # the file's own mistake stays the file's; --set can index list items
    path = _write(tmp_path, {**MINIMAL, "filter": {"ratio": 2}})
    text = str(pytest.raises(ConfigError, load_config, path, {"filter.seed": 1}).value)
    assert text.startswith(f"invalid run configuration in {path}:") and "  filter.ratio: " in text
    assert "--set" not in text
    cfg = load_config(_write(tmp_path, MINIMAL), {"candidates.0.path": "/m/other"})
    assert cfg.candidates[0].path == "/m/other"
