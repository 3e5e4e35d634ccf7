"""Stage 3 settings (issue 9): merge sparsity reading, coefficient and target checked against hand computations;
guards; merged/skipped accounting; per-layer stats; base tensors read one at a time from (sharded) safetensors;
the config.json-only architecture check; the remote-code specs on a stand-in module tree."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from damoc.pruning.architectures import (ArchitectureSpec, UnsupportedArchitectureError, check_architecture,
                                         load_specs, spec_for)
from damoc.pruning.merge import (SafetensorsReader, kept_share, merge_coefficients, merge_pruned_layers,
                                 merge_pruned_layers_with_report, receivers, sparsify)
from damoc.pruning.prune import (choose_layers, choose_layers_by_fraction, drop_layers, prune_checkpoint,
                                 selection_limit)

TEXTS = ["the patient reported a mild headache and was given rest and fluids",
         "what is the capital of the northern province",
         "a river flows through the old town"]
TOY = ArchitectureSpec(model_type="toy", layers_path="layers", num_layers_key="n", layer_index_attrs=("idx",))

# Task vectors of layers 1 and 2 (base is all i for layer i, so chat - base is exactly these).
TAU1 = torch.tensor([[1.0, -4.0], [0.5, 2.0]])
TAU2 = torch.tensor([[0.0, 3.0], [-1.0, 0.1]])


def _toy() -> tuple[dict, dict]:
    base = {f"layers.{i}.w": torch.full((2, 2), float(i)) for i in range(4)}
    base.update({f"layers.{i}.steps": torch.tensor([i]) for i in range(4)})  # integer buffer: never merged
    base["layers.2.odd"] = torch.zeros(3)  # no counterpart in a receiver: skipped
    chat = {key: value.clone() for key, value in base.items()}
    chat["layers.1.w"] += TAU1
    chat["layers.2.w"] += TAU2
    chat["layers.2.odd"] += 1.0
    return chat, base


# --- sparsity reading ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reading, fraction, expected_share", [("keep", 0.25, 0.25), ("drop", 0.25, 0.75),
                                                               ("keep", 0.2, 0.2), ("drop", 0.2, 0.8)])
def test_sparsity_reading_hand_computation(reading, fraction, expected_share):
    share = kept_share(fraction, reading)
    assert math.isclose(share, expected_share)
    chat, base = _toy()
    merged = merge_pruned_layers(chat, base, pruned=[1], kept=[0, 2, 3], alphas={1: 1.0}, keep_fraction=share,
                                 spec=TOY)
    if expected_share == 0.25:  # 1 of 4 entries kept: the largest |value|, -4
        delta = torch.tensor([[0.0, -4.0], [0.0, 0.0]])
    elif expected_share == 0.75:  # 3 of 4 kept: 0.5 zeroed
        delta = torch.tensor([[1.0, -4.0], [0.0, 2.0]])
    else:  # 0.2 -> round(0.8) = 1 kept; 0.8 -> round(3.2) = 3 kept
        delta = (torch.tensor([[0.0, -4.0], [0.0, 0.0]]) if expected_share == 0.2
                 else torch.tensor([[1.0, -4.0], [0.0, 2.0]]))
    assert torch.equal(merged["layers.0.w"], delta)  # layer 0 is all zeros in chat
    with pytest.raises(ValueError):
        kept_share(0.2, "sparsity")


# --- coefficients ----------------------------------------------------------------------------------------------

def test_coefficients_hand_computation():
    s = [0.5, 0.9, 0.7, 0.5, 0.96, 0.2]
    imp = merge_coefficients(s, [1, 2, 4], "importance")
    assert imp.keys() == {1, 2, 4}
    assert all(math.isclose(imp[p], v) for p, v in {1: 0.1, 2: 0.3, 4: 0.04}.items())
    norm = merge_coefficients(s, [1, 2, 4], "normalized")  # runs [1, 2] and [4]
    assert math.isclose(norm[1], 0.1 / 0.4) and math.isclose(norm[2], 0.3 / 0.4) and norm[4] == 1.0
    assert merge_coefficients([0.1, 1.0, 1.0, 0.1], [1, 2], "normalized") == {1: 0.5, 2: 0.5}  # all IS 0: equal
    assert merge_coefficients(s, [1, 4], "constant", 0.7) == {1: 0.7, 4: 0.7}
    for bad in (("weird", 1.0), ("constant", float("nan")), ("constant", True)):
        with pytest.raises(ValueError):
            merge_coefficients(s, [1], *bad)


@pytest.mark.parametrize("coefficient", ["importance", "normalized", "constant"])
def test_merge_with_each_coefficient_equals_hand_computation(coefficient):
    chat, base = _toy()
    s = [0.3, 0.9, 0.8, 0.3]  # IS: layer 1 -> 0.1, layer 2 -> 0.2; one run [1, 2] merging into layer 0
    alphas = merge_coefficients(s, [1, 2], coefficient, 2.0)
    expected_alpha = {"importance": (0.1, 0.2), "normalized": (1 / 3, 2 / 3), "constant": (2.0, 2.0)}[coefficient]
    merged = merge_pruned_layers(chat, base, pruned=[1, 2], kept=[0, 3], alphas=alphas, keep_fraction=0.5,
                                 spec=TOY)
    # top-2 of TAU1: [[0,-4],[0,2]]; top-2 of TAU2: [[0,3],[-1,0]]
    expected = (expected_alpha[0] * torch.tensor([[0.0, -4.0], [0.0, 2.0]])
                + expected_alpha[1] * torch.tensor([[0.0, 3.0], [-1.0, 0.0]]))
    torch.testing.assert_close(merged["layers.0.w"], expected, rtol=0, atol=1e-6)
    assert merged["layers.3.w"] is chat["layers.3.w"]


# --- targets ---------------------------------------------------------------------------------------------------

def test_receivers_for_each_target():
    kept = [0, 3, 5]
    assert receivers(1, kept, "preceding") == [(0, 1.0)] and receivers(1, kept, "following") == [(3, 1.0)]
    assert receivers(4, kept, "split") == [(3, 0.5), (5, 0.5)]
    assert receivers(6, kept, "following") == [(5, 1.0)] and receivers(6, kept, "split") == [(5, 1.0)]
    assert receivers(0, [2, 4], "preceding") == [(2, 1.0)]
    with pytest.raises(ValueError):
        receivers(1, kept, "nearest")


def test_merge_split_and_following_hand_computation():
    chat, base = _toy()
    split = merge_pruned_layers(chat, base, pruned=[1], kept=[0, 2, 3], alphas={1: 0.5}, keep_fraction=0.5,
                                spec=TOY, target="split")
    half = 0.25 * torch.tensor([[0.0, -4.0], [0.0, 2.0]])  # share 0.5 x alpha 0.5
    assert torch.equal(split["layers.0.w"], chat["layers.0.w"] + half)
    assert torch.equal(split["layers.2.w"], chat["layers.2.w"] + half)
    following = merge_pruned_layers(chat, base, pruned=[1, 2], kept=[0, 3], alphas={1: 1.0, 2: 1.0},
                                    keep_fraction=1.0, spec=TOY, target="following")
    assert torch.equal(following["layers.3.w"], chat["layers.3.w"] + TAU1 + TAU2)
    assert following["layers.0.w"] is chat["layers.0.w"]


def test_report_counts_merged_and_skipped_with_names():
    chat, base = _toy()
    del base["layers.1.w"]  # missing in base
    _, report = merge_pruned_layers_with_report(chat, base, pruned=[1, 2], kept=[0, 3], alphas={1: 1.0, 2: 1.0},
                                                keep_fraction=1.0, spec=TOY)
    stats = report.to_dict()
    assert stats["merged_tensors"] == 1 and stats["receiver_tensors_changed"] == 1  # layers.2.w -> layers.0.w
    reasons = dict(report.skipped)
    assert set(reasons) == {"layers.1.w", "layers.1.steps", "layers.2.steps", "layers.2.odd"}
    assert "missing in the base" in reasons["layers.1.w"] and "not floating point" in reasons["layers.1.steps"]
    assert "no layers.0.odd" in reasons["layers.2.odd"]
    assert stats["skipped_tensors"] == 4 and {e["tensor"] for e in stats["skipped"]} == set(reasons)


# --- guards ----------------------------------------------------------------------------------------------------

def test_guards_min_layers_kept_and_protect_first_last():
    s = [0.99, 0.95, 0.97, 0.96, 0.98]
    assert choose_layers(s, 0.9, 1.0) == [1, 2, 3]
    assert choose_layers(s, 0.9, 1.0, protect_first_last=False, min_layers_kept=1) == [0, 2, 3, 4]
    assert choose_layers(s, 0.9, 1.0, protect_first_last=False, min_layers_kept=3) == [0, 4]
    assert choose_layers(s, 0.9, 1.0, min_layers_kept=4) == [2]
    assert choose_layers_by_fraction(s, 0.6, protect_first_last=False) == [0, 2, 4]
    assert choose_layers_by_fraction(s, 0.6, max_prune_fraction=0.2) == [2]  # the cap applies to both rules
    with pytest.raises(ValueError):
        choose_layers(s, 0.9, 1.0, min_layers_kept=0)


def test_selection_limit_names_the_deciding_guard():
    s = [0.99, 0.95, 0.97, 0.96, 0.98, 0.5]
    kw = dict(rule="threshold", threshold=0.9, target_fraction=0.25, min_layers_kept=2, protect_first_last=True)
    assert selection_limit(s, choose_layers(s, 0.9, 1.0), max_prune_fraction=1.0, **kw) == "protect_first_last"
    assert selection_limit(s, choose_layers(s, 0.9, 0.34), max_prune_fraction=0.34, **kw) == "max_prune_fraction"
    kw["min_layers_kept"] = 5
    assert selection_limit(s, choose_layers(s, 0.9, 1.0, min_layers_kept=5), max_prune_fraction=1.0,
                           **kw) == "min_layers_kept"
    every = choose_layers(s, 0.94, 1.0, protect_first_last=False, min_layers_kept=1)
    assert every == [0, 1, 2, 3, 4] and selection_limit(s, every, max_prune_fraction=1.0, rule="threshold",
                                                        threshold=0.94, target_fraction=0.0, min_layers_kept=1,
                                                        protect_first_last=False) is None
    assert selection_limit(s, choose_layers_by_fraction(s, 0.5), max_prune_fraction=1.0, rule="fraction",
                           threshold=0.0, target_fraction=0.5, min_layers_kept=2, protect_first_last=True) is None


# --- end to end: settings, stats, safetensors shards -----------------------------------------------------------

def test_prune_checkpoint_settings_and_per_layer_stats(tiny_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir, chat_dir = tiny_pair
    stats = prune_checkpoint(str(chat_dir), str(base_dir), TEXTS, tmp_path / "out", threshold=0.0,
                             max_prune_fraction=0.34, keep_fraction=0.3, sparsity_reading="drop",
                             coefficient="normalized", merge_target="split")
    pruned = stats["pruned_layers"]
    kept = [i for i in range(6) if i not in pruned]
    assert stats["base_read"].startswith("safetensors") and stats["merge"]["skipped_tensors"] == 0
    assert stats["merge"]["merged_tensors"] > 0 and stats["merge"]["kept_share"] == pytest.approx(0.7)
    assert stats["pruned_flags"] == [i in pruned for i in range(6)] and stats["limited_by"] == "max_prune_fraction"
    layers = stats["layers"]
    assert [entry["index"] for entry in layers] == list(range(6))
    assert all(entry["params"] > 0 and entry["similarity"] == stats["similarities"][entry["index"]]
               for entry in layers)
    assert stats["params_before"] - stats["params_after"] == sum(layers[p]["params"] for p in pruned)

    sims = stats["similarities"]
    alphas = merge_coefficients(sims, pruned, "normalized")
    chat = AutoModelForCausalLM.from_pretrained(chat_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    out = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    name = "mlp.down_proj.weight"
    for new_index, old_index in enumerate(kept):
        expected = chat[f"model.layers.{old_index}.{name}"].clone()
        for p in pruned:
            for k, share in receivers(p, kept, "split"):
                if k == old_index:
                    tau = chat[f"model.layers.{p}.{name}"] - base[f"model.layers.{p}.{name}"]
                    expected += share * alphas[p] * sparsify(tau, 0.7)
        torch.testing.assert_close(out[f"model.layers.{new_index}.{name}"], expected, rtol=0, atol=1e-6)


def test_sharded_base_is_read_tensor_by_tensor(tiny_pair, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir, chat_dir = tiny_pair
    sharded = tmp_path / "base-sharded"
    AutoModelForCausalLM.from_pretrained(base_dir).save_pretrained(sharded, max_shard_size="200KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    reader = SafetensorsReader(sharded)
    whole = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    key = "model.layers.3.self_attn.q_proj.weight"
    assert torch.equal(reader.get(key), whole[key]) and reader.shape(key) == tuple(whole[key].shape)
    assert reader.get("nope") is None and "nope" not in reader
    assert SafetensorsReader.try_open(tmp_path) is None  # no weights at all

    for tok_file in Path(base_dir).glob("*token*"):
        (sharded / tok_file.name).write_bytes(tok_file.read_bytes())
    kwargs = dict(threshold=0.0, max_prune_fraction=0.34, coefficient="constant", merge_alpha=0.5)
    one = prune_checkpoint(str(chat_dir), str(base_dir), TEXTS, tmp_path / "a", **kwargs)
    many = prune_checkpoint(str(chat_dir), str(sharded), TEXTS, tmp_path / "b", **kwargs)
    assert many["base_read"].startswith("safetensors") and many["merge"] == one["merge"]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_legacy_alpha_argument_still_means_constant(tiny_pair, tmp_path):
    stats = prune_checkpoint(str(tiny_pair[1]), str(tiny_pair[0]), TEXTS, tmp_path / "out", threshold=0.0,
                             max_prune_fraction=0.2, alpha=0.25)
    assert stats["coefficient"] == "constant" and stats["merge_alpha"] == 0.25
    assert set(stats["alphas"].values()) == {0.25}
    with pytest.raises(ValueError):
        prune_checkpoint(str(tiny_pair[1]), str(tiny_pair[0]), TEXTS, tmp_path / "x", merge_target="middle")
    assert not (tmp_path / "x").exists()


# --- architecture check (config.json only) ---------------------------------------------------------------------

def _config_dir(tmp_path: Path, name: str, config: dict) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_check_architecture_accepts_supported_and_explains_the_rest(tiny_pair, tmp_path):
    check_architecture(tiny_pair[1])  # a real checkpoint: passes
    yi = _config_dir(tmp_path, "yi", {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                      "num_hidden_layers": 48})  # Yi-1.5-9B-Chat's config says llama
    check_architecture(yi)

    check_architecture(_config_dir(tmp_path, "phi2", {"model_type": "phi", "num_hidden_layers": 32}))  # generic
    with pytest.raises(UnsupportedArchitectureError) as info:
        check_architecture(_config_dir(tmp_path, "t5", {"model_type": "t5", "num_layers": 2}))
    message = str(info.value)
    assert "'t5'" in message and "llama" in message and "glm4" in message and "t5.json" in message
    assert "internlm2" in message and "trust_remote_code" in message and "causal-LM class" in message

    internlm = _config_dir(tmp_path, "internlm", {
        "model_type": "internlm2", "num_hidden_layers": 32,
        "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}})
    with pytest.raises(UnsupportedArchitectureError, match="trust_remote_code: true"):
        check_architecture(internlm)
    check_architecture(internlm, trust_remote_code=True)
    with pytest.raises(UnsupportedArchitectureError, match="trust_remote_code"):
        check_architecture(_config_dir(tmp_path, "chatglm", {"model_type": "chatglm", "num_layers": 40,
                                                             "auto_map": {"AutoConfig": "x.Y"}}))
    with pytest.raises(UnsupportedArchitectureError, match="n_layer"):
        check_architecture(_config_dir(tmp_path, "gpt2", {"model_type": "gpt2", "num_hidden_layers": 4}))
    with pytest.raises(UnsupportedArchitectureError, match="config.json"):
        check_architecture(tmp_path / "missing")


# --- remote-code specs on a stand-in module tree ---------------------------------------------------------------

class _Attention(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.layer_idx = index
        self.wqkv = nn.Linear(4, 12)


class _InternLM2Layer(nn.Module):
    """The attributes modeling_internlm2.InternLM2DecoderLayer has that pruning touches."""

    def __init__(self, index: int):
        super().__init__()
        self.layer_idx = index
        self.attention = _Attention(index)


class _Phi3SmallLayer(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.self_attn = _Attention(index)


@pytest.mark.parametrize("model_type, layer_cls", [("internlm2", _InternLM2Layer), ("phi3small", _Phi3SmallLayer)])
def test_remote_code_specs_on_their_module_layout(model_type, layer_cls):
    spec = load_specs()[model_type]
    assert spec.requires_remote_code and spec.architectures and "trust_remote_code" in spec.notes
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([layer_cls(i) for i in range(5)])
    model.config = SimpleNamespace(model_type=model_type, num_hidden_layers=5)
    assert spec_for(model.config) is spec and spec.prefix(2) == "model.layers.2."
    assert [k for k in model.state_dict() if k.startswith(spec.prefix(2))]  # the prefix matches real keys
    drop_layers(model, [0, 3, 4], spec)
    assert model.config.num_hidden_layers == 3 and len(spec.layers(model)) == 3
    indices = [[m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")] for layer in spec.layers(model)]
    assert [set(v) for v in indices] == [{0}, {1}, {2}]
    if model_type == "phi3small":  # dense vs block-sparse attention follows the layer index: pruning warns
        assert spec.index_dependent_flags == ("dense_attention_every_n_layers",)


def test_every_spec_documents_itself():
    specs = load_specs()
    assert {"glm", "glm4", "internlm2", "phi3small", "ministral"} <= set(specs)
    assert "phi" not in specs  # phi-1/phi-2 have no file: generic discovery prunes them (test_generic_pruning)
    assert "Yi" in specs["llama"].notes and "chatglm" in specs["glm"].notes
    assert all(spec.architectures for spec in specs.values())
    assert np.all([spec.requires_remote_code == (t in ("internlm2", "phi3small")) for t, spec in specs.items()])
