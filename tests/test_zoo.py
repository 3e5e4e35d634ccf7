"""The built-in tiny zoo: distinct architectures and tokenizers, loadable HF checkpoints, real task vectors."""
from __future__ import annotations

import pytest
import torch

from damoc.training.prompt import format_prompt
from damoc.demo.zoo import CANDIDATES, load_manifest


@pytest.fixture(scope="module")
def manifest(zoo_dir):
    return load_manifest(zoo_dir)


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _generate(model, tok, prompt: str, n: int = 12) -> str:
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_manifest_lists_distinct_architectures_and_tokenizers(manifest, zoo_dir):
    cands = manifest["candidates"]
    assert manifest["version"] == 1 and manifest["build_seconds"] > 0
    assert len(cands) == len(CANDIDATES) >= 4
    assert len({c["name"] for c in cands}) == len(cands)
    assert {"llama", "qwen2", "mistral", "gpt_neox"} <= {c["model_type"] for c in cands}
    vocab_by_tok = {c["tokenizer"]: c["vocab_size"] for c in cands}
    assert len(vocab_by_tok) >= 2 and len(set(vocab_by_tok.values())) >= 2
    for c in cands:
        assert c["path"] == f"{c['name']}/chat" and c["base_path"] == f"{c['name']}/base"
        assert 4 <= c["num_layers"] <= 6 and c["params"] > 0
        assert (zoo_dir / c["path"] / "config.json").is_file() and (zoo_dir / c["base_path"] / "config.json").is_file()


@pytest.mark.parametrize("spec", CANDIDATES, ids=lambda s: s.name)
def test_base_and_chat_load_generate_and_differ(spec, manifest, zoo_dir):
    entry = next(c for c in manifest["candidates"] if c["name"] == spec.name)
    base, base_tok = _load(zoo_dir / entry["base_path"])
    chat, chat_tok = _load(zoo_dir / entry["path"])
    cfg = chat.config
    assert cfg.model_type == entry["model_type"] and cfg.num_hidden_layers == entry["num_layers"]
    assert sum(p.numel() for p in chat.parameters()) == entry["params"]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert head_dim >= 64
    for tok in (base_tok, chat_tok):
        assert tok.bos_token and tok.eos_token and tok.pad_token and len(tok) == entry["vocab_size"]
    assert _generate(base, base_tok, "On Monday Anna went to")  # base continues text
    # chat - base is a real task vector in every layer
    chat_state, base_state = chat.state_dict(), base.state_dict()
    assert chat_state.keys() == base_state.keys()
    changed = [k for k in chat_state if not torch.equal(chat_state[k], base_state[k])]
    assert len(changed) >= len(chat_state) // 2


@pytest.mark.parametrize("spec", CANDIDATES, ids=lambda s: s.name)
def test_chat_model_conditions_on_the_prompt(spec, manifest, zoo_dir):
    entry = next(c for c in manifest["candidates"] if c["name"] == spec.name)
    chat, tok = _load(zoo_dir / entry["path"])
    # same instruction, different inputs -> different answers (the answer depends on the input). The
    # weakest candidate tells apart only some pairs, so: the number pair, and at least half of all pairs.
    pairs = {"Write the number as digits.": ("two", "seven"),
             "Which season comes after the given season?": ("spring", "autumn"),
             "Which day comes after the given day?": ("Monday", "Friday"),
             "Where does the animal live?": ("fox", "seal")}
    answers = {i: [_generate(chat, tok, format_prompt(i, x)) for x in xs] for i, xs in pairs.items()}
    assert all(o.strip() for outs in answers.values() for o in outs)
    numbers = answers["Write the number as digits."]
    assert numbers[0] != numbers[1], numbers
    assert sum(a != b for a, b in answers.values()) >= len(pairs) / 2, answers
    # different instructions, same input -> different answers
    by_task = {_generate(chat, tok, format_prompt(i, "spring")) for i in
               ("Which season comes after the given season?", "Repeat the input exactly.", "Write the plural of the word.")}
    assert len(by_task) >= 2, by_task
    # it stops: the eos after the response was learned
    ids = tok(format_prompt("Which season comes after the given season?", "winter"), return_tensors="pt",
              add_special_tokens=False)
    with torch.no_grad():
        out = chat.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.eos_token_id in out[0, ids["input_ids"].shape[1]:].tolist()
