"""The llmlingua package side by side: checkpoint conversion for its venv, and (slow) a real package run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_legacy_checkpoint_rewrites_what_transformers_4_44_cannot_read(tmp_path):
    run_package = _load(ROOT / "tools" / "llmlingua" / "run_package.py", "run_package")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "float32",
                                                   "rope_parameters": {"rope_theta": 5000.0}}))
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend",
                                                             "backend": "tokenizers", "bos_token": "<s>"}))
    (model / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "merges": [["h", "e"], ["Ġ", "t"]]}}))
    (model / "model.safetensors").write_bytes(b"weights")
    out = run_package.legacy_checkpoint(model, tmp_path / "legacy")
    config = json.loads((out / "config.json").read_text())
    assert config["rope_theta"] == 5000.0 and config["torch_dtype"] == "float32" and "rope_parameters" not in config
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"tokenizer_class": "PreTrainedTokenizerFast",
                                                                      "bos_token": "<s>"}
    assert json.loads((out / "tokenizer.json").read_text())["model"]["merges"] == ["h e", "Ġ t"]
    assert (out / "model.safetensors").is_symlink() and (out / "model.safetensors").read_bytes() == b"weights"


def test_sentences_and_missing_venv_message(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import llmlingua_side_by_side as pkg

    assert pkg.sentences("It works. Really!\nyes") == ["It works.", "Really!", "yes"]
    assert "make llmlingua-venv" in pkg.venv_problem(tmp_path / "nope")


@pytest.mark.slow
def test_package_compresses_in_its_own_venv(zoo_dir):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import llmlingua_side_by_side as pkg
    from damoc.data.schema import Sample

    if pkg.venv_problem(pkg.DEFAULT_VENV):
        pytest.skip(pkg.venv_problem(pkg.DEFAULT_VENV))
    sample = Sample(id="0", instruction="Answer the medical question in a few sentences.",
                    input="What symptoms does Lotimer syndrome cause?",
                    output="Lotimer syndrome usually presents with swollen ankles, chest pain and sore throat. "
                    "It mainly affects the joints. Rest and fluids help most adults within two weeks.")
    for mode in ("llmlingua", "longllmlingua"):
        model = str(zoo_dir / "tiny-llama" / "chat")
        (out,), seconds = pkg.run_package([sample], [{"input": 1.0, "output": 0.3}], model, mode)
        assert out.input == sample.input and out.instruction == sample.instruction
        assert 0 < len(out.output) < len(sample.output) and seconds > 0
