"""Stage 3 (layer pruning with sparse merging) on random base/chat pairs of every supported family."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_random_pair
from damoc.pruning.architectures import (ArchitectureSpec, UnsupportedArchitectureError, load_specs, spec_for,
                                         supported_model_types)
from damoc.pruning.importance import layer_similarities
from damoc.pruning.merge import merge_pruned_layers, receiving_layer, sparsify
from damoc.pruning.prune import (STATS_FILE, PruningError, _save_atomically, _trim_config, choose_layers,
                                 choose_layers_by_fraction,
                                 compute_alphas, drop_layers, prune_checkpoint)

# every spec whose model class is in the installed transformers (internlm2 and phi3small are remote code only:
# tests/test_pruning_settings.py checks their specs on a stand-in module tree)
FAMILIES = ["llama", "qwen2", "mistral", "ministral", "gpt_neox", "gpt2", "phi3", "gemma2", "glm", "glm4"]
TEXTS = ["the patient reported a mild headache and was given rest and fluids",
         "what is the capital of the northern province",
         "a river flows through the old town"]


def _layer_index_values(model, spec: ArchitectureSpec) -> list[list[int]]:
    """Every `layer_idx` attribute found anywhere inside each decoder layer, per layer."""
    return [[m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
            for layer in spec.layers(model)]


def _assert_cache_consistent(model, tokenizer) -> None:
    """Greedy generation with and without the KV cache must agree (a stale layer_idx breaks the cache path)."""
    inputs = tokenizer("the patient reported", return_tensors="pt")
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with_cache = model.generate(**inputs, use_cache=True, **kwargs)
    without_cache = model.generate(**inputs, use_cache=False, **kwargs)
    assert with_cache.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(with_cache, without_cache)


# --- end to end ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", FAMILIES)
def test_prune_checkpoint_reloads_and_generates(model_type, tmp_path, tiny_tokenizer_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, chat_dir = build_random_pair(tmp_path / "pair", tiny_tokenizer_dir, model_type)
    out = tmp_path / "pruned"
    stats = prune_checkpoint(str(chat_dir), str(base_dir), TEXTS, out, threshold=0.0, max_prune_fraction=0.34)

    assert stats["skipped"] is False
    assert stats["num_layers_before"] == 6 and stats["num_layers_after"] == 4
    assert len(stats["pruned_layers"]) == 2 and 0 not in stats["pruned_layers"] and 5 not in stats["pruned_layers"]
    assert len(stats["similarities"]) == 6 and stats["params_after"] < stats["params_before"]
    assert set(stats["alphas"]) == {str(p) for p in stats["pruned_layers"]}
    assert json.loads((out / STATS_FILE).read_text())["pruned_layers"] == stats["pruned_layers"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers

    model = AutoModelForCausalLM.from_pretrained(out)
    spec = spec_for(model.config)
    assert model.config.num_hidden_layers == 4 and len(spec.layers(model)) == 4
    layer_types = getattr(model.config, "layer_types", None)
    assert layer_types is None or len(layer_types) == 4
    assert all(values and set(values) == {i} for i, values in enumerate(_layer_index_values(model, spec)))
    _assert_cache_consistent(model, AutoTokenizer.from_pretrained(out))


def test_prune_checkpoint_merges_task_vectors_into_receiver(tiny_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir, chat_dir = tiny_pair
    stats = prune_checkpoint(str(chat_dir), str(base_dir), TEXTS, tmp_path / "out", threshold=0.0,
                             max_prune_fraction=0.34, keep_fraction=0.3, alpha=0.5)
    pruned = stats["pruned_layers"]
    kept = [i for i in range(6) if i not in pruned]
    chat = AutoModelForCausalLM.from_pretrained(chat_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    out = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    receivers = {receiving_layer(p, kept) for p in pruned}
    name = "self_attn.q_proj.weight"
    for new_index, old_index in enumerate(kept):
        expected = chat[f"model.layers.{old_index}.{name}"].clone()
        for p in pruned:
            if receiving_layer(p, kept) == old_index:
                tau = chat[f"model.layers.{p}.{name}"] - base[f"model.layers.{p}.{name}"]
                expected += 0.5 * sparsify(tau, 0.3)
        actual = out[f"model.layers.{new_index}.{name}"]
        if old_index in receivers:
            assert not torch.equal(actual, chat[f"model.layers.{old_index}.{name}"])
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_drop_layers_in_memory_renumbers_kv_cache_indices(model_type, tiny_tokenizer_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    if model_type == "gpt2":
        config = AutoConfig.for_model("gpt2", n_embd=64, n_layer=5, n_head=2, **common)
    elif model_type == "gpt_neox":
        config = AutoConfig.for_model("gpt_neox", hidden_size=64, num_hidden_layers=5, num_attention_heads=2,
                                      intermediate_size=128, **common)
    else:
        config = AutoConfig.for_model(model_type, hidden_size=64, num_hidden_layers=5, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=128, head_dim=32, **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    spec = spec_for(model.config)
    drop_layers(model, [0, 2, 4], spec)
    assert spec.num_layers(model.config) == 3 and len(spec.layers(model)) == 3
    assert [set(v) for v in _layer_index_values(model, spec)] == [{0}, {1}, {2}]
    _assert_cache_consistent(model, tokenizer)


# --- importance ------------------------------------------------------------------------------------------------

def test_layer_similarities_match_manual_computation(tiny_pair, tiny_tokenizer_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    batched = layer_similarities(model, tokenizer, TEXTS, batch_size=3)  # padded batch
    single = layer_similarities(model, tokenizer, TEXTS, batch_size=1)  # no padding at all
    np.testing.assert_allclose(batched, single, atol=1e-5)

    # hidden_states[l] enters layer l and hidden_states[l + 1] leaves it, except the last entry (post-norm)
    sums, count = np.zeros(5), 0
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            states = model(input_ids=ids, output_hidden_states=True).hidden_states
            for layer in range(5):
                sums[layer] += torch.nn.functional.cosine_similarity(states[layer][0], states[layer + 1][0],
                                                                     dim=-1).sum().item()
            count += ids.shape[1]
    np.testing.assert_allclose(batched[:5], sums / count, atol=1e-5)
    assert batched.shape == (6,) and np.all(batched <= 1.0 + 1e-6)


def test_layer_similarities_rejects_empty_calibration(tiny_pair, tiny_tokenizer_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with pytest.raises(ValueError, match="at least one"):
        layer_similarities(model, tokenizer, [])


# --- merging ---------------------------------------------------------------------------------------------------

TOY = ArchitectureSpec(model_type="toy", layers_path="layers", num_layers_key="n", layer_index_attrs=("idx",))


def test_sparsify_keeps_top_k_by_magnitude():
    tau = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 0.05]])
    assert torch.equal(sparsify(tau, 0.34), torch.tensor([[0.0, -5.0, 0.0], [2.0, 0.0, 0.0]]))  # round(2.04)=2
    assert torch.equal(sparsify(tau, 1.0), tau) and torch.equal(sparsify(tau, 0.0), torch.zeros_like(tau))
    big = torch.randn(1000)
    kept = sparsify(big, 0.2)
    assert int((kept != 0).sum()) == 200
    assert kept.abs().max() == big.abs().max() and kept[kept != 0].abs().min() >= big.abs().kthvalue(801).values


def test_sparsify_breaks_ties_by_index_and_keeps_dtype():
    tau = torch.tensor([1.0, -1.0, 1.0, 1.0, 0.5])
    assert torch.equal(sparsify(tau, 0.4), torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0]))
    half = torch.tensor([3.0, -1.0, 2.0, 0.0], dtype=torch.bfloat16)
    out = sparsify(half, 0.5)
    assert out.dtype == torch.bfloat16 and torch.equal(out.float(), torch.tensor([3.0, 0.0, 2.0, 0.0]))
    with pytest.raises(ValueError):
        sparsify(tau, 1.5)


def _toy_state_dicts() -> tuple[dict, dict]:
    base = {f"layers.{i}.w": torch.full((2, 2), float(i)) for i in range(4)}
    base.update({f"layers.{i}.steps": torch.tensor([i]) for i in range(4)})  # integer buffer: never merged
    base["layers.2.odd"] = torch.zeros(3)  # no counterpart in the receiver: skipped
    base["head.w"] = torch.ones(2)
    chat = {key: value.clone() for key, value in base.items()}
    chat["layers.1.w"] += torch.tensor([[1.0, -4.0], [0.5, 2.0]])
    chat["layers.2.w"] += torch.tensor([[0.0, 3.0], [-1.0, 0.1]])
    chat["layers.2.steps"] += 7
    chat["layers.2.odd"] += 1.0
    return chat, base


def test_merge_into_nearest_preceding_kept_layer():
    chat, base = _toy_state_dicts()
    chat_before = {key: value.clone() for key, value in chat.items()}
    merged = merge_pruned_layers(chat, base, pruned=[1, 2], kept=[0, 3], alphas={1: 0.5, 2: 0.25},
                                 keep_fraction=0.5, spec=TOY)
    # layer 1: top-2 of [[1,-4],[.5,2]] -> [[0,-4],[0,2]] * 0.5; layer 2: top-2 of [[0,3],[-1,.1]] -> * 0.25
    expected = torch.tensor([[0.0, -2.0], [0.0, 1.0]]) + torch.tensor([[0.0, 0.75], [-0.25, 0.0]])
    assert torch.equal(merged["layers.0.w"], expected)  # layer 0 of chat is all zeros
    for key in ("layers.3.w", "layers.1.w", "layers.2.w", "layers.0.steps", "head.w"):
        assert merged[key] is chat[key]
    assert all(torch.equal(chat[key], chat_before[key]) for key in chat)  # inputs untouched


def test_merge_into_following_kept_layer_when_none_precedes():
    chat, base = _toy_state_dicts()
    chat["layers.0.w"] = chat["layers.0.w"] + torch.tensor([[10.0, 0.0], [0.0, -1.0]])
    merged = merge_pruned_layers(chat, base, pruned=[0], kept=[1, 2, 3], alphas={0: 2.0}, keep_fraction=0.25,
                                 spec=TOY)
    assert torch.equal(merged["layers.1.w"], chat["layers.1.w"] + torch.tensor([[20.0, 0.0], [0.0, 0.0]]))
    assert receiving_layer(0, [1, 2]) == 1 and receiving_layer(3, [0, 2, 5]) == 2
    with pytest.raises(ValueError, match="both pruned and kept"):
        merge_pruned_layers(chat, base, pruned=[1], kept=[1, 2], alphas={1: 1.0}, keep_fraction=1.0, spec=TOY)


# --- choosing layers, alphas, configs --------------------------------------------------------------------------

def test_choose_layers_threshold_cap_and_ends():
    s = [0.99, 0.90, 0.70, 0.95, 0.86, 0.99]
    assert choose_layers(s, 0.85, 1.0) == [1, 3, 4]  # never the first or last layer
    assert choose_layers(s, 0.85, 0.34) == [1, 3]  # cap floor(2.04)=2 keeps the most similar
    assert choose_layers(s, 0.85, 0.0) == []
    assert choose_layers(s, 0.999, 1.0) == []
    assert choose_layers([0.9, 0.9, 0.9, 0.9, 0.9], 0.5, 0.2) == [1]  # tie: lower index
    assert choose_layers([0.9, float("nan"), 0.95, 0.9], 0.5, 1.0) == [2]
    assert choose_layers([0.99, 0.99], 0.0, 1.0) == []
    assert len(choose_layers([0.9] * 100, 0.5, 0.29)) == 29
    with pytest.raises(ValueError):
        choose_layers(s, 0.85, 1.5)


def test_choose_layers_by_fraction_drops_the_same_share_of_every_candidate():
    s = [0.99, 0.60, 0.70, 0.95, 0.86, 0.99]
    assert choose_layers_by_fraction(s, 0.34) == [3, 4]  # round(2.04) = 2 most similar interior layers
    assert choose_layers_by_fraction(s, 0.5) == [2, 3, 4]  # below any threshold still counts: same share for all
    assert choose_layers_by_fraction(s, 0.0) == []
    assert choose_layers_by_fraction([0.9] * 4, 0.25) == [1]  # tie: lower index
    assert choose_layers_by_fraction([0.1, float("nan"), 0.2, 0.3], 0.5) == [1, 2]  # NaN only when needed
    assert choose_layers_by_fraction([0.1, float("nan"), 0.2, 0.3], 0.25) == [2]  # NaN last
    assert choose_layers_by_fraction([0.5, 0.5, 0.5], 0.9) == [1]  # never the first or last
    with pytest.raises(ValueError):
        choose_layers_by_fraction(s, 1.0)


def test_compute_alphas():
    s = np.array([0.5, 0.9, 0.95, 0.5])
    alphas = compute_alphas(s, [1, 2], "importance")
    assert alphas.keys() == {1, 2} and math.isclose(alphas[1], 0.1) and math.isclose(alphas[2], 0.05)
    assert compute_alphas(s, [2], 0.3) == {2: 0.3}
    for bad in ("normalised", True, float("nan")):
        with pytest.raises(ValueError):
            compute_alphas(s, [1], bad)


def test_trim_config_keeps_per_layer_entries_of_kept_layers():
    from transformers import AutoConfig

    qwen = AutoConfig.for_model("qwen2", num_hidden_layers=4, use_sliding_window=True, sliding_window=16,
                                max_window_layers=2)
    _trim_config(qwen, [0, 3], spec_for(qwen))
    assert qwen.num_hidden_layers == 2 and qwen.layer_types == ["full_attention", "sliding_attention"]
    # transformers 5 heterogeneous configs: per-layer overrides are keyed by layer index and must be renumbered
    llama = AutoConfig.for_model("llama", num_hidden_layers=4, intermediate_size=128,
                                 per_layer_config={1: {"intermediate_size": 96}, 2: {"intermediate_size": 80}})
    _trim_config(llama, [0, 2, 3], spec_for(llama))
    assert [layer.intermediate_size for layer in llama.per_layer_config] == [128, 80, 128]


# --- skipping and errors ---------------------------------------------------------------------------------------

def test_no_base_skips_and_writes_nothing(tiny_pair, tmp_path):
    stats = prune_checkpoint(str(tiny_pair[1]), None, TEXTS, tmp_path / "out")
    assert stats["skipped"] is True and "base" in stats["reason"]
    assert stats["num_layers_before"] == stats["num_layers_after"] == 6 and stats["pruned_layers"] == []
    assert not (tmp_path / "out").exists()


def test_mismatched_base_and_chat_raise(tiny_pair, tmp_path, tiny_tokenizer_dir):
    shallow_base, _ = build_random_pair(tmp_path / "shallow", tiny_tokenizer_dir, "llama", layers=4)
    with pytest.raises(PruningError, match="num_hidden_layers"):
        prune_checkpoint(str(tiny_pair[1]), str(shallow_base), TEXTS, tmp_path / "out")
    other_base, _ = build_random_pair(tmp_path / "mistral", tiny_tokenizer_dir, "mistral")
    with pytest.raises(PruningError, match="same architecture"):
        prune_checkpoint(str(tiny_pair[1]), str(other_base), TEXTS, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_architecture_names_supported_types_and_how_to_add(tmp_path):
    from transformers import AutoConfig

    with pytest.raises(UnsupportedArchitectureError) as info:
        spec_for(AutoConfig.for_model("bert"))
    message = str(info.value)
    assert "'bert'" in message and "llama" in message and "gpt_neox" in message and "bert.json" in message

    (tmp_path / "bert.json").write_text(json.dumps({
        "model_type": "bert", "layers_path": "bert.encoder.layer", "num_layers_key": "num_hidden_layers",
        "layer_index_attrs": ["attention.self.layer_idx"]}))
    spec = spec_for(AutoConfig.for_model("bert"), extra_dirs=[tmp_path])
    assert spec.prefix(3) == "bert.encoder.layer.3."
    (tmp_path / "broken.json").write_text(json.dumps({"model_type": "x", "layers_path": "a", "typo": 1}))
    with pytest.raises(ValueError, match="lacks"):
        load_specs([tmp_path])


def test_builtin_specs_cover_required_families():
    assert set(FAMILIES) <= set(supported_model_types())
    assert spec_for(type("C", (), {"model_type": "gpt2"})()).num_layers_key == "n_layer"


def test_save_is_atomic(tmp_path):
    target = tmp_path / "ckpt"

    def failing(directory: Path) -> None:
        (directory / "model.safetensors").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _save_atomically(target, failing)
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "old.txt").write_text("old")
    _save_atomically(target, lambda d: (d / "new.txt").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and [p.name for p in target.iterdir()] == ["new.txt"]
