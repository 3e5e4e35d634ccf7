"""pruning.on_unsupported: a candidate whose architecture layer pruning does not know is either trained unpruned
(flagged, warned at validation: the default, issue 12's rule) or stops the run at validation (fail), before any
data stage runs: config.json only, no weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from damoc.config import ConfigError, parse_config
from damoc.workflow.preflight import pruning_warnings


def _checkpoint(root: Path, name: str, config: dict) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")  # validation checks tokenizer files exist (never loads them here)
    return path


def _doc(tmp_path: Path, candidates: list[dict], **pruning) -> dict:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"instruction": "Answer.", "input": f"q{i}", "output": f"a{i}"}) + "\n"
                             for i in range(3)))
    return {"mode": "damoc", "data": {"train": str(train), "eval": str(train), "task": "extractive_qa"},
            "candidates": candidates, "pruning": pruning}


@pytest.fixture()
def unsupported(tmp_path) -> list[dict]:
    t5 = _checkpoint(tmp_path, "t5", {"model_type": "t5", "num_layers": 2})  # no causal LM in transformers
    llama = _checkpoint(tmp_path, "llama", {"model_type": "llama", "num_hidden_layers": 4})
    return [{"name": "ok", "path": str(llama), "base_path": str(llama)},
            {"name": "t5-cand", "path": str(t5), "base_path": str(t5)}]


def test_fail_names_candidate_architecture_and_supported_list(tmp_path, unsupported):
    cfg = parse_config(_doc(tmp_path, unsupported, on_unsupported="fail"))
    with pytest.raises(ConfigError) as err:
        pruning_warnings(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("candidates[t5-cand]")
    assert "model_type 't5'" in message
    assert "Described in JSON: " in message and "llama" in message and "qwen2" in message and "gpt_neox" in message
    assert "trust_remote_code" in message  # which supported families need it
    assert "on_unsupported" in message


def test_families_without_a_json_file_are_discovered_not_warned_about(tmp_path):
    phi = _checkpoint(tmp_path, "phi", {"model_type": "phi", "num_hidden_layers": 2})  # discovered generically
    cands = [{"name": "phi", "path": str(phi), "base_path": str(phi)}]
    assert pruning_warnings(parse_config(_doc(tmp_path, cands, on_unsupported="fail"))) == []


def test_unpruned_default_only_warns(tmp_path, unsupported):
    cfg = parse_config(_doc(tmp_path, unsupported))
    assert cfg.pruning.on_unsupported == "unpruned"
    warnings = pruning_warnings(cfg)
    assert len(warnings) == 1 and "t5-cand" in warnings[0] and "unpruned" in warnings[0]


def test_fail_says_trust_remote_code_is_needed(tmp_path):
    internlm = _checkpoint(tmp_path, "internlm", {"model_type": "internlm2", "num_hidden_layers": 4,
                                                   "auto_map": {"AutoModelForCausalLM": "x.Y"}})
    cands = [{"name": "intern", "path": str(internlm), "base_path": str(internlm)}]
    with pytest.raises(ConfigError, match=r"candidates\[intern\].*internlm2.*trust_remote_code: true"):
        pruning_warnings(parse_config(_doc(tmp_path, cands, on_unsupported="fail")))
    trusted = [{**cands[0], "trust_remote_code": True}]
    assert pruning_warnings(parse_config(_doc(tmp_path, trusted, on_unsupported="fail"))) == []


def test_fail_does_not_apply_when_pruning_is_off_or_only_base_is_missing(tmp_path, unsupported):
    assert pruning_warnings(parse_config(_doc(tmp_path, unsupported, on_unsupported="fail", enabled=False))) == []
    chat_only = [{"name": "chatonly", "path": unsupported[0]["path"]}]
    warnings = pruning_warnings(parse_config(_doc(tmp_path, chat_only, on_unsupported="fail")))
    assert len(warnings) == 1 and "no base_path" in warnings[0]
    # LaCo needs no base: nothing to warn about
    assert pruning_warnings(parse_config(_doc(tmp_path, chat_only, method="laco"))) == []


def test_validation_task_fails_before_the_data_stages(tmp_path, unsupported, monkeypatch, capsys):
    """The pipeline's first task, `damoc validate` and `damoc run` all stop; run never reaches kfp.local."""
    from types import SimpleNamespace

    from damoc.cli import main
    from damoc.config_params import to_pipeline_arguments
    from damoc_components.config import validate_config

    doc = _doc(tmp_path, unsupported, on_unsupported="fail")
    artifact = SimpleNamespace(path=str(tmp_path / "config.json"), metadata={})
    with pytest.raises(ConfigError, match=r"candidates\[t5-cand\]"):
        validate_config.python_func(**to_pipeline_arguments(parse_config(doc)), config=artifact)
    assert not (tmp_path / "config.json").exists()  # the data tasks consume this artifact: it never appears

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(config)]) == 2
    assert "candidates[t5-cand]" in capsys.readouterr().err

    import damoc_pipelines.local_runner as local_runner

    def no_run(*args, **kwargs):
        raise AssertionError("the run started although validation should have failed")

    monkeypatch.setattr(local_runner, "run_local", no_run)
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "candidates[t5-cand]" in err and "model_type 't5'" in err
