"""Named zoo suites: the default suite is the quickstart zoo unchanged; "bench" adds other architectures.

Fast: nothing is trained here. The extra specs are instantiated with a tokenizer of an already built default
zoo (skipped when there is none).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from damoc.demo import zoo
from damoc.demo.zoo import CANDIDATES, EXTRA, SUITES, TOKENIZERS, default_zoo_dir, make_model, spec_hash

REPO = Path(__file__).resolve().parents[1]
# spec_hash() of the default suite before suites existed: the quickstart zoo must not be rebuilt
DEFAULT_SPEC_HASH = "6466c6f6ac2d7ae8"


def test_default_suite_is_the_quickstart_zoo_unchanged():
    assert SUITES["default"] is CANDIDATES
    assert [c.name for c in CANDIDATES] == ["tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-neox"]
    assert spec_hash() == spec_hash("default") == DEFAULT_SPEC_HASH
    assert spec_hash("bench") != DEFAULT_SPEC_HASH


def test_suites_are_well_formed():
    from damoc.pruning.architectures import supported_model_types

    tokenizer_ids = {t.id for t in TOKENIZERS}
    for name, specs in SUITES.items():
        assert specs and len({s.name for s in specs}) == len(specs), name
        assert len({s.seed for s in specs}) == len(specs), name
        assert all(s.tokenizer in tokenizer_ids for s in specs), name
    bench = SUITES["bench"]
    assert bench[:len(CANDIDATES)] == CANDIDATES and bench[len(CANDIDATES):] == EXTRA
    assert len(bench) >= 6 and len(EXTRA) >= 2
    assert len({s.model_type for s in bench}) == len(bench)  # one candidate per architecture
    # the benchmark needs a candidate that layer pruning cannot handle, and prunable new ones too
    supported = set(supported_model_types())
    assert any(s.model_type not in supported for s in EXTRA)
    assert any(s.model_type in supported for s in EXTRA)
    # not trivially ordered: the prior (pretraining, chat steps) does not grow with the capacity
    assert len({s.pretrain_steps for s in EXTRA}) == len(EXTRA) and len({s.chat_steps for s in EXTRA}) == len(EXTRA)


def test_zoo_dirs_per_suite(monkeypatch, tmp_path):
    monkeypatch.setenv("DAMOC_HOME", str(tmp_path))
    assert default_zoo_dir() == default_zoo_dir("default") == tmp_path / "zoo"
    assert default_zoo_dir("bench") == tmp_path / "zoo-bench"
    with pytest.raises(ValueError, match="unknown zoo suite"):
        default_zoo_dir("nope")
    with pytest.raises(ValueError, match="unknown zoo suite"):
        spec_hash("nope")


def test_cli_suite_choices_match_the_suites():
    from damoc.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["zoo", "build"])
    assert args.suite == "default"
    assert parser.parse_args(["zoo", "build", "--suite", "bench"]).suite == "bench"
    zoo_build = next(a for a in parser._subparsers._group_actions[0].choices["zoo"]._subparsers._group_actions[0]
                     .choices["build"]._actions if a.dest == "suite")
    assert sorted(zoo_build.choices) == sorted(SUITES)
    with pytest.raises(SystemExit):
        parser.parse_args(["zoo", "build", "--suite", "nope"])


def _fake_zoo(root: Path, suite: str = "default") -> None:
    for t in TOKENIZERS:
        (root / "tokenizers" / t.id).mkdir(parents=True)
        (root / "tokenizers" / t.id / "tokenizer.json").write_text("{}")
    entries = []
    for c in SUITES[suite]:
        for variant in ("base", "chat"):
            (root / c.name / variant).mkdir(parents=True)
            (root / c.name / variant / "config.json").write_text(json.dumps({"model_type": c.model_type}))
        entries.append({"name": c.name, "path": f"{c.name}/chat", "base_path": f"{c.name}/base", "chat_loss": 1.0})
    manifest = {"version": zoo.MANIFEST_VERSION, "suite": suite, "spec_hash": spec_hash(suite), "candidates": entries,
                "tokenizers": [{"id": t.id, "vocab_size": t.vocab_size} for t in TOKENIZERS]}
    (root / zoo.MANIFEST).write_text(json.dumps(manifest))


def test_bench_copies_default_candidates_from_a_complete_default_zoo(monkeypatch, tmp_path):
    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))
    _fake_zoo(default_zoo_dir())
    assert zoo._is_complete(default_zoo_dir()) and not zoo._is_complete(default_zoo_dir(), "bench")
    copied, vocab = zoo._copy_from_default(SUITES["bench"], tmp_path / "build")
    assert set(copied) == {c.name for c in CANDIDATES}
    assert vocab == {t.id: t.vocab_size for t in TOKENIZERS}
    for c in CANDIDATES:
        assert (tmp_path / "build" / c.name / "chat" / "config.json").is_file()
        assert copied[c.name]["copied_from"] == str(default_zoo_dir().resolve())
    assert all((tmp_path / "build" / "tokenizers" / t.id / "tokenizer.json").is_file() for t in TOKENIZERS)
    assert not any((tmp_path / "build" / s.name).exists() for s in EXTRA)


def test_bench_copies_nothing_from_a_stale_default_zoo(monkeypatch, tmp_path):
    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))
    _fake_zoo(default_zoo_dir())
    manifest_path = default_zoo_dir() / zoo.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "spec_hash": "0" * 16}))
    assert zoo._copy_from_default(SUITES["bench"], tmp_path / "build") == ({}, {})
    assert not (tmp_path / "build").exists()


def _built_tokenizer_dir(tok_id: str) -> Path | None:
    for root in (default_zoo_dir(), REPO / ".cache" / "damoc" / "zoo"):
        if (root / "tokenizers" / tok_id / "tokenizer.json").is_file():
            return root / "tokenizers" / tok_id
    return None


@pytest.mark.parametrize("spec", EXTRA, ids=lambda s: s.name)
def test_extra_spec_instantiates_and_runs_a_forward_pass(spec):
    from transformers import PreTrainedTokenizerFast

    path = _built_tokenizer_dir(spec.tokenizer)
    if path is None:
        pytest.skip(f"no built default zoo with tokenizer {spec.tokenizer}")
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = make_model(spec, tok).eval()
    cfg = model.config
    assert cfg.model_type == spec.model_type and cfg.vocab_size == len(tok)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert head_dim == 64
    assert zoo._estimated_cost(spec) > 0
    ids = tok(["### Instruction:\nWrite the number as digits.\n\n### Input:\nseven"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(out.loss)


def test_copy_into_the_default_dir_itself_does_not_wait_for_its_own_lock(monkeypatch, tmp_path):
    """ensure_zoo(default dir, suite="bench") holds the default dir's lock while it copies from it."""
    import threading

    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))
    _fake_zoo(default_zoo_dir())
    result = {}

    def copy():
        with zoo._build_lock(default_zoo_dir().resolve()):
            result["copied"] = zoo._copy_from_default(SUITES["bench"], tmp_path / "build", default_zoo_dir())[0]

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "deadlock on the default zoo's build lock"
    assert set(result["copied"]) == {c.name for c in CANDIDATES}
