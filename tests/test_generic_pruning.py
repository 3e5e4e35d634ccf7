"""Generic discovery of the decoder blocks (damoc.pruning.discovery): families without a JSON file (phi, stablelm,
opt, falcon) are pruned end to end, discovery agrees with every built-in JSON file, and models whose blocks are
not a plain residual chain are refused with a clear error."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from damoc.pruning.architectures import UnsupportedArchitectureError, load_specs, spec_for_model
from damoc.pruning.discovery import check_flow, describe, discover_spec, meta_model
from damoc.pruning.prune import STATS_FILE, prune_checkpoint

TEXTS = ["the patient reported a mild headache and was given rest and fluids",
         "what is the capital of the northern province", "a river flows through the old town"]

# tiny configs (4 blocks) of families that transformers ships and damoc has no JSON file for
NO_JSON = {
    "phi": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128),
    "stablelm": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
                     intermediate_size=128),
    "opt": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, ffn_dim=128, word_embed_proj_dim=64),
    "falcon": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2),
}
# tiny configs of the families with a built-in JSON file whose model class transformers ships
JSON_FAMILIES = {
    "llama": {}, "qwen2": {}, "mistral": {}, "ministral": {}, "phi3": {}, "glm": {}, "glm4": {},
    "gemma2": {}, "gpt_neox": {},
    "gpt2": dict(n_embd=64, n_layer=4, n_head=2, scale_attn_by_inverse_layer_idx=True),
}
_DECODER = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                intermediate_size=128)


def _config(model_type: str, vocab: int = 128, **extra):
    from transformers import AutoConfig

    values = extra if model_type == "gpt2" or model_type in NO_JSON else {**_DECODER, **extra}
    return AutoConfig.for_model(model_type, vocab_size=vocab, max_position_embeddings=128, bos_token_id=1,
                                eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, **values)


def test_no_json_file_for_the_generic_families():
    assert not set(NO_JSON) & set(load_specs())


@pytest.mark.parametrize("model_type", sorted(JSON_FAMILIES))
def test_discovery_equals_the_json_spec(model_type):
    """What discovery reads off the model is what the hand-written file says (where the config has the key)."""
    config = _config(model_type, **JSON_FAMILIES[model_type])
    model = meta_model(config)
    found, written = discover_spec(model), load_specs()[model_type]
    assert (found.layers_path, found.layer_prefix, found.num_layers_key) == \
        (written.layers_path, written.layer_prefix, written.num_layers_key)
    block = written.layers(model)[0]
    present = {path for path in written.layer_index_attrs if _has(block, path)}
    assert set(found.layer_index_attrs) == present and present
    config_keys = config.to_dict()
    assert set(found.per_layer_config_lists) == {k for k in written.per_layer_config_lists if k in config_keys}
    assert set(found.index_dependent_flags) == {k for k in written.index_dependent_flags if k in config_keys}
    assert found.model_type == model_type and not found.requires_remote_code
    assert spec_for_model(model) is written  # the file overrides discovery


def _has(module: nn.Module, dotted: str) -> bool:
    *parents, name = dotted.split(".")
    for part in parents:
        module = getattr(module, part, None)
        if module is None:
            return False
    return isinstance(getattr(module, name, None), int)


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "gpt2"])
def test_hidden_state_flow_holds_on_real_json_families(model_type):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(model_type, **JSON_FAMILIES[model_type]))
    check_flow(model, discover_spec(model))


def _pair(root: Path, tokenizer_dir: Path, model_type: str) -> tuple[Path, Path]:
    """A random base and a 'chat' = base + a small random task vector, with the test tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = _config(model_type, vocab=len(tok), **NO_JSON[model_type])
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, \
        tok.pad_token_id
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    base, chat = root / "base", root / "chat"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(chat)
    tok.save_pretrained(chat)
    return base, chat


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("model_type", sorted(NO_JSON))
def test_round_trip_without_a_json_file(model_type, tmp_path, tiny_tokenizer_dir):
    """prune -> save -> reload with transformers -> the same logits and tokens with and without the KV cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, chat = _pair(tmp_path, tiny_tokenizer_dir, model_type)
    out = tmp_path / "pruned"
    stats = prune_checkpoint(str(chat), str(base), TEXTS, out, rule="fraction", target_fraction=0.25)
    assert stats["architecture"].startswith("generic discovery")
    assert stats["num_layers_before"] == 4 and stats["num_layers_after"] == 3
    (dropped,) = stats["pruned_layers"]
    assert dropped in (1, 2)  # first and last protected
    assert json.loads((out / STATS_FILE).read_text())["pruned_layers"] == [dropped]

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    spec = spec_for_model(model)
    assert model.config.num_hidden_layers == 3 and len(spec.layers(model)) == 3
    for i, block in enumerate(spec.layers(model)):
        assert [getattr(m, "layer_idx") for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)] \
            == [i] * len([m for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)])

    # kept blocks renumbered; the receiver (the kept block before the dropped one) got the merged task vector
    before, after = _state(chat), _state(out)
    prefix = spec.layer_prefix
    receiver, untouched = dropped - 1, 3
    weights = [k.removeprefix(prefix.format(index=0)) for k in after if k.startswith(prefix.format(index=0))]
    assert weights
    moved = sum(not torch.equal(after[prefix.format(index=receiver) + w], before[prefix.format(index=receiver) + w])
                for w in weights)
    assert moved > 0
    assert all(torch.equal(after[prefix.format(index=2) + w], before[prefix.format(index=untouched) + w])
               for w in weights)

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("the patient reported a mild", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[:, -1]
        prefix_out = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], cache=prefix_out.cache, use_cache=True).logits[:, -1]
    assert torch.allclose(full, step, atol=1e-4)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    cached = model.generate(input_ids=ids, use_cache=True, **kwargs)
    uncached = model.generate(input_ids=ids, use_cache=False, **kwargs)
    assert cached.shape[1] > ids.shape[1] and torch.equal(cached, uncached)


# --- what discovery refuses ------------------------------------------------------------------------------------

class _Block(nn.Module):
    def __init__(self, index: int, attr: str = "layer_idx", offset: int = 0):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        setattr(self, attr, index + offset)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor]:
        return (hidden_states + self.proj(hidden_states),)


class _Toy(nn.Module):
    """Four blocks; `wiring` decides what each block receives."""

    def __init__(self, wiring: str = "chain", **block):
        super().__init__()
        self.config = SimpleNamespace(model_type="toy", num_hidden_layers=4, vocab_size=16,
                                      to_dict=lambda: {"model_type": "toy", "num_hidden_layers": 4})
        self.embed = nn.Embedding(16, 8)
        self.blocks = nn.ModuleList([_Block(i, **block) for i in range(4)])
        self.extra = nn.ModuleList([nn.Linear(8, 2) for _ in range(4)])  # same length, fewer parameters
        self.wiring = wiring

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        h = x = self.embed(input_ids)
        for block in self.blocks:
            if self.wiring == "chain":
                h = block(h)[0]
            elif self.wiring == "parallel":  # every block reads the embeddings: not a residual chain
                h = h + block(x)[0]
            else:  # "twice"
                h = block(block(h)[0])[0]
        return h


def test_discovery_picks_the_block_list_and_checks_the_chain():
    spec = discover_spec(_Toy())
    assert spec.layers_path == "blocks" and spec.layer_index_attrs == ("layer_idx",)
    assert spec.num_layers_key == "num_hidden_layers" and spec.source.startswith("generic")
    check_flow(_Toy(), spec)
    assert describe(spec)["layers_path"] == "blocks"


@pytest.mark.parametrize("wiring, message", [("parallel", "residual chain"), ("twice", "ran")])
def test_blocks_that_are_not_a_chain_are_refused(wiring, message):
    model = _Toy(wiring)
    with pytest.raises(UnsupportedArchitectureError, match=message):
        spec_for_model(model)
    spec_for_model(model, check_flow=False)  # structure alone is fine: only the flow check sees the wiring


def test_one_based_layer_numbers_are_refused():
    with pytest.raises(UnsupportedArchitectureError, match="layer_number|positions"):
        discover_spec(_Toy(attr="layer_id", offset=1))


def test_no_block_list_of_the_configured_depth_is_refused():
    model = _Toy()
    model.config.to_dict = lambda: {"model_type": "toy", "num_hidden_layers": 5}
    with pytest.raises(UnsupportedArchitectureError, match="no nn.ModuleList of 5 blocks.*json"):
        discover_spec(model)
