"""The LaCo baseline (damoc.pruning.laco): RDSC arithmetic, the acceptance test, guards, and a checkpoint that
reloads and generates; plus its wiring (pruning.method: laco) and the training-style calibration encoding."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from damoc.pruning.architectures import spec_for
from damoc.pruning.importance import calibration_batches
from damoc.pruning.laco import LacoSettings, collapse_parameters, laco_collapse, laco_prune_checkpoint, rdsc_merge
from damoc.pruning.prune import STATS_FILE

TEXTS = ["the patient reported a mild headache and was given rest and fluids",
         "what is the capital of the northern province",
         "a river flows through the old town"]


def _llama(layers: int = 6, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=64, hidden_size=64, num_hidden_layers=layers,
                               num_attention_heads=2, num_key_value_heads=2, head_dim=32, intermediate_size=128,
                               max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _identity(layer: nn.Module) -> None:
    """A decoder layer that adds nothing to the residual stream: both branches end in a zero projection."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def _amplify(layer: nn.Module, factor: float = 30.0) -> None:
    """Make a layer's residual update large, so dropping it visibly changes the final hidden states."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.mul_(factor)
        layer.mlp.down_proj.weight.mul_(factor)


def _batches():
    torch.manual_seed(1)
    ids = torch.randint(1, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # one padded row: its pad positions must not count
    return [(ids, mask)]


# --- RDSC arithmetic -------------------------------------------------------------------------------------------

def test_rdsc_merge_equals_hand_computation():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.5, 0.0], [1.0, -1.0]])
    c = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    # a + (b - a) + (c - a) = b + c - a
    assert torch.equal(rdsc_merge([a, b, c]), torch.tensor([[1.5, 0.0], [-2.0, -5.0]]))
    assert torch.equal(rdsc_merge([a]), a)
    assert torch.equal(rdsc_merge([a, b]), b)  # collapsing one layer into another keeps the upper one's weights
    half = rdsc_merge([a.half(), b.half(), c.half()])
    assert half.dtype == torch.float16 and torch.equal(half.float(), torch.tensor([[1.5, 0.0], [-2.0, -5.0]]))
    with pytest.raises(ValueError):
        rdsc_merge([])


def test_collapse_parameters_in_place_with_backup_and_skips():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(3, 2)])
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.fill_(float(i + 1))
            layer.bias.fill_(float(10 * (i + 1)))
    backup, merged, skipped = collapse_parameters(layers, 0, 2)
    assert merged == 2 and skipped == []
    assert torch.equal(layers[0].weight, torch.full((2, 2), 1.0 + (2 - 1) + (3 - 1)))  # 4
    assert torch.equal(layers[0].bias, torch.full((2,), 10.0 + (20 - 10) + (30 - 10)))  # 40
    assert torch.equal(backup["weight"], torch.full((2, 2), 1.0))
    assert torch.equal(backup["bias"], torch.full((2,), 10.0))
    assert torch.equal(layers[1].weight, torch.full((2, 2), 2.0))  # collapsed layers are read, not written
    _, merged, skipped = collapse_parameters(layers, 2, 1)  # weight 2x2 vs 2x3: skipped and said why
    assert merged == 1 and skipped == [("weight", "shape differs between the collapsed layers")]


# --- the walk and its acceptance test --------------------------------------------------------------------------

def test_identity_layers_collapse_and_an_active_layer_is_rejected():
    model = _llama()
    layers = spec_for(model.config).layers(model)
    for i in (2, 3, 4):
        _identity(layers[i])
    _amplify(layers[1])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    settings = LacoSettings(layers_per_merge=3, interval=1, threshold=0.999, lowest_layer=1)
    result = laco_collapse(model, _batches(), settings)

    first, second = result["steps"]
    # 1st try at layer 2 (6 layers, the last protected): 3 and 4 into 2, all identities -> same model.
    assert first["layer"] == 2 and first["collapsed"] == [3, 4] and first["accepted"]
    assert first["similarity"] == pytest.approx(1.0, abs=1e-6)
    # 2nd try at 2 - I = 1: the identity (old layer 2) into active layer 1 replaces it -> rejected by T.
    assert second["layer"] == 1 and second["collapsed"] == [2] and not second["accepted"]
    assert second["similarity"] < 0.999
    assert result["pruned_layers"] == [3, 4] and result["kept_layers"] == [0, 1, 2, 5]
    assert result["collapsed_into"] == {"2": [3, 4]}
    assert model.config.num_hidden_layers == 4 and len(layers := spec_for(model.config).layers(model)) == 4
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    state = model.state_dict()
    for name in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"):
        p = "model.layers.{}." + name
        hand = original[p.format(2)] + (original[p.format(3)] - original[p.format(2)]) \
            + (original[p.format(4)] - original[p.format(2)])
        assert torch.allclose(state[p.format(2)], hand, atol=1e-6)
    # the rejected try left layer 1 and the old layer 5 (now 3) exactly as they were
    assert all(torch.equal(state[k], v) for k, v in original.items() if k.startswith("model.layers.1."))
    assert torch.equal(state["model.layers.3.mlp.down_proj.weight"], original["model.layers.5.mlp.down_proj.weight"])


def test_active_model_rejects_every_collapse_and_is_restored_exactly():
    model = _llama()
    for layer in spec_for(model.config).layers(model):
        _amplify(layer)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    result = laco_collapse(model, _batches(), LacoSettings(layers_per_merge=2, interval=1, threshold=0.999,
                                                           lowest_layer=1))
    assert [s["layer"] for s in result["steps"]] == [3, 2, 1]  # top start 6-1-C (last layer protected), down to L
    assert not any(s["accepted"] for s in result["steps"]) and all(s["similarity"] < 0.999 for s in result["steps"])
    assert result["pruned_layers"] == [] and result["merged_tensors"] == 0
    state = model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], v) for k, v in original.items())
    assert model.config.to_dict() == config_before
    assert [layer.self_attn.layer_idx for layer in spec_for(model.config).layers(model)] == list(range(6))


def test_guards_cap_the_collapse():
    model = _llama()
    layers = spec_for(model.config).layers(model)
    for i in range(1, 5):
        _identity(layers[i])
    # max_prune_fraction 0.2 of 6 layers: one removal, so the try at 2 takes only layer 3, then the walk stops
    result = laco_collapse(model, _batches(), LacoSettings(layers_per_merge=3, interval=1, threshold=0.5,
                                                           lowest_layer=1, max_prune_fraction=0.2))
    assert [(s["layer"], s["collapsed"], s["accepted"]) for s in result["steps"]] == [(2, [3], True)]
    assert result["pruned_layers"] == [3] and result["limited_by"] == "max_prune_fraction"
    model = _llama()
    layers = spec_for(model.config).layers(model)
    for i in range(1, 5):
        _identity(layers[i])
    result = laco_collapse(model, _batches(), LacoSettings(layers_per_merge=3, interval=1, threshold=0.5,
                                                           lowest_layer=1, max_prune_fraction=0.9,
                                                           min_layers_kept=4))
    assert model.config.num_hidden_layers == 4 and result["limited_by"] == "min_layers_kept"
    assert 0 not in result["pruned_layers"] and 5 not in result["pruned_layers"]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="layers_per_merge"):
        LacoSettings(layers_per_merge=1)
    with pytest.raises(ValueError, match="interval"):
        LacoSettings(interval=0)
    with pytest.raises(ValueError, match="threshold"):
        LacoSettings(threshold=1.5)


# --- checkpoint, calibration encoding, wiring ------------------------------------------------------------------

def test_laco_checkpoint_reloads_and_generates(tiny_pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, chat_dir = tiny_pair
    out = tmp_path / "laco"
    # T = -1 accepts every try: the most collapsed model the guards allow (at most half of 6 layers)
    stats = laco_prune_checkpoint(str(chat_dir), TEXTS, out, settings=LacoSettings(threshold=-1.0, lowest_layer=1))
    assert stats["method"] == "laco" and stats["num_layers_before"] == 6 and stats["num_layers_after"] == 3
    assert stats["params_after"] < stats["params_before"] and len(stats["similarities"]) == 6
    assert stats["laco_steps"] and all(s["accepted"] for s in stats["laco_steps"])
    assert json.loads((out / STATS_FILE).read_text())["pruned_layers"] == stats["pruned_layers"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    inputs = tok("the patient reported", return_tensors="pt")
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with_cache = model.generate(**inputs, use_cache=True, **kwargs)
    assert with_cache.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(with_cache, model.generate(**inputs, use_cache=False, **kwargs))


def test_calibration_samples_are_encoded_like_training(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from damoc.data.schema import Sample
    from damoc.pruning.calibration import encode_calibration
    from damoc.training.finetune import encode_example

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    sample = Sample("s1", "Answer briefly.", "What is a fever?", "A raised body temperature.")
    for chat_template in (True, False):
        ids = encode_calibration(tok, [sample], 64, chat_template)[0]
        assert ids == encode_example(tok, sample, 64, chat_template)["input_ids"]
    if getattr(tok, "chat_template", None):  # the template's own markers, not the plain format's
        assert encode_calibration(tok, [sample], 64, True) != encode_calibration(tok, [sample], 64, False)
    assert encode_calibration(tok, ["plain text", [5, 6]], 64) == ["plain text", [5, 6]]
    (ids, mask), = calibration_batches(tok, ["plain text", [5, 6, 7]], 64, 8, "cpu")
    assert ids[1, :3].tolist() == [5, 6, 7] and mask[1].tolist()[:4] == [1, 1, 1, 0]


def test_prune_step_with_laco_needs_no_base(tiny_pair, tmp_path):
    from damoc.config import parse_config
    from damoc.data.records import write_samples
    from damoc.data.schema import Sample
    from damoc.workflow.candidate_steps import prune_step

    data = tmp_path / "d.jsonl"
    write_samples([Sample(f"s{i}", "Answer.", f"question {i} about a river", "the old town") for i in range(4)], data)
    cand = {"name": "chatonly", "path": str(tiny_pair[1])}
    cfg = parse_config({"mode": "damoc", "data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"},
                        "candidates": [cand], "training": {"max_length": 32},
                        "pruning": {"method": "laco", "laco_threshold": -1.0, "laco_lowest_layer": 1,
                                    "laco_calibration_samples": 2}})
    result = prune_step(cfg, cand, data, tmp_path / "pruned", progress=False)
    stage = result.stages["prune"]
    assert result.status == "ok" and stage.status == "ok" and not result.flags
    assert stage.stats["method"] == "laco" and stage.stats["calibration_samples"] == 2
    assert stage.stats["num_layers_after"] == 3 and result.layers() == "3/6"


@pytest.mark.parametrize("model_type", ["qwen2", "mistral", "gpt_neox", "gpt2", "phi3", "gemma2", "glm4"])
def test_laco_round_trip_other_families(model_type, tmp_path, tiny_tokenizer_dir):
    """Every family's final state comes from its base model; the collapsed checkpoint reloads, its KV indices
    are renumbered, and generation with and without the cache agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import build_random_pair

    _, chat_dir = build_random_pair(tmp_path / "pair", tiny_tokenizer_dir, model_type)
    out = tmp_path / "laco"
    stats = laco_prune_checkpoint(str(chat_dir), TEXTS, out,
                                  settings=LacoSettings(layers_per_merge=2, threshold=-1.0, lowest_layer=1))
    assert stats["num_layers_after"] == 4 and stats["pruned_layers"] == [2, 4]  # tries at 3 (4 into 3), then 1
    model = AutoModelForCausalLM.from_pretrained(out)
    spec = spec_for(model.config)
    assert spec.num_layers(model.config) == 4 and len(spec.layers(model)) == 4
    tok = AutoTokenizer.from_pretrained(out)
    inputs = tok("the patient reported", return_tensors="pt")
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(model.generate(**inputs, use_cache=True, **kwargs),
                       model.generate(**inputs, use_cache=False, **kwargs))


def test_prune_step_calibrates_on_samples_encoded_like_training(tmp_path, monkeypatch):
    """The damoc method gets Sample objects (encoded by training's encode_example inside) with training's
    chat_template and max_length, not plain-format strings."""
    import damoc.pruning.prune as prune_module
    from damoc.config import parse_config
    from damoc.data.records import write_samples
    from damoc.data.schema import Sample
    from damoc.workflow.candidate_steps import prune_step

    seen = {}

    def fake_prune(chat, base, calibration, out, **kwargs):
        seen.update(calibration=calibration, **kwargs)
        return {"num_layers_before": 4, "num_layers_after": 3}

    monkeypatch.setattr(prune_module, "prune_checkpoint", fake_prune)
    data = tmp_path / "d.jsonl"
    rows = [Sample(f"s{i}", "Answer.", f"question {i}", "yes") for i in range(5)]
    write_samples(rows, data)
    for name in ("chat", "base"):
        (tmp_path / name).mkdir()
    cand = {"name": "c", "path": str(tmp_path / "chat"), "base_path": str(tmp_path / "base")}
    cfg = parse_config({"mode": "damoc", "data": {"train": "t.jsonl", "eval": "e.jsonl", "task": "extractive_qa"},
                        "candidates": [cand], "training": {"max_length": 48, "chat_template": False},
                        "pruning": {"calibration_samples": 3}})
    result = prune_step(cfg, cand, data, tmp_path / "pruned", progress=False)
    assert result.status == "ok" and result.layers() == "3/4", result.error
    assert seen["calibration"] == rows[:3] and seen["chat_template"] is False and seen["max_length"] == 48
