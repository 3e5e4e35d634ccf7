"""Find the decoder blocks of any causal LM from the model itself, so a family without a JSON description is
pruned like the rest.

What layer pruning needs to know (the fields of an ArchitectureSpec) is read off the module tree and the config:
  layers_path             the nn.ModuleList whose length is the config's layer count, all of one class (the largest
                          such list by parameters, so an embedding list or a vision tower of equal depth loses);
  num_layers_key          the serialised config key holding that count (num_hidden_layers, n_layer, num_layers,
                          n_layers; an alias of attribute_map is not serialised, so the real key wins);
  layer_index_attrs       int attributes named layer_idx / layer_index / layer_id on a block or its submodules that
                          equal the block's position in every block (what the KV cache indexes by);
  per_layer_config_lists  config lists with one entry per block whose key mentions "layer" (layer_types);
  index_dependent_flags   boolean config keys that make a block depend on its index (…inverse_layer_idx…);
  requires_remote_code    the model's class comes from the checkpoint's own code, not transformers.
And, on a model with real weights, `check_flow` verifies how hidden states flow: one forward pass on a few tokens
where every block runs exactly once and block i+1 receives exactly what block i returned (a plain residual chain).
A model that fails any of this raises UnsupportedArchitectureError saying what was seen; a JSON file in
damoc/pruning/architectures/ then describes the family by hand and overrides discovery.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
INDEX_ATTR_NAMES = ("layer_idx", "layer_index", "layer_id")
INDEX_FLAG_MARKERS = ("layer_idx", "layer_index", "inverse_layer")


def _error(message: str) -> Exception:
    from damoc.pruning.architectures import UnsupportedArchitectureError

    return UnsupportedArchitectureError(message + " Describe the family in damoc/pruning/architectures/"
                                        "<model_type>.json (copy llama.json) to override discovery.")


def _config_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))


def _layer_count(config: Any) -> tuple[str, int]:
    values = _config_dict(config)
    for key in LAYER_COUNT_KEYS:
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return key, value
    raise _error(f"config of model_type '{getattr(config, 'model_type', None)}' has none of {list(LAYER_COUNT_KEYS)} "
                 "as a positive integer, so the layer count is unknown.")


def _homogeneous_lists(model: nn.Module, length: int) -> list[tuple[str, nn.ModuleList, int]]:
    found = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, nn.ModuleList) or len(module) != length:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        found.append((name, module, sum(p.numel() for p in module.parameters())))
    return found


def _index_attrs(blocks: nn.ModuleList) -> tuple[str, ...]:
    """Dotted paths (relative to a block) of the int index attributes that equal the block's position in every
    block; one that holds another number (e.g. 1-based) means discovery cannot renumber it safely."""
    per_block: list[dict[str, int]] = []
    for block in blocks:
        seen: dict[str, int] = {}
        for sub, module in block.named_modules():
            for attr in INDEX_ATTR_NAMES:
                value = getattr(module, attr, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    seen[f"{sub}.{attr}" if sub else attr] = value
        per_block.append(seen)
    paths = sorted(set().union(*per_block)) if per_block else []
    good = []
    for path in paths:
        values = [seen.get(path) for seen in per_block]
        if values == list(range(len(blocks))):
            good.append(path)
        elif len(set(values)) > 1:  # varies with the block but is not its 0-based position
            raise _error(f"block attribute '{path}' holds {values}, not the blocks' positions 0..{len(blocks) - 1}, "
                         "so renumbering after dropping blocks is unknown.")
    return tuple(good)


def _per_layer_lists(config: Any, layers: int) -> tuple[str, ...]:
    return tuple(sorted(key for key, value in _config_dict(config).items()
                        if "layer" in key and isinstance(value, (list, tuple)) and len(value) == layers))


def _index_flags(config: Any) -> tuple[str, ...]:
    return tuple(sorted(key for key, value in _config_dict(config).items()
                        if isinstance(value, bool) and any(m in key for m in INDEX_FLAG_MARKERS)))


def discover_spec(model: nn.Module) -> Any:
    """The ArchitectureSpec of `model`, read off its module tree and config (a model on the meta device works)."""
    from damoc.pruning.architectures import ArchitectureSpec

    config = model.config
    model_type = getattr(config, "model_type", None) or type(model).__name__
    key, layers = _layer_count(config)
    lists = _homogeneous_lists(model, layers)
    if not lists:
        raise _error(f"{type(model).__name__} has no nn.ModuleList of {layers} blocks of one class "
                     f"(config {key} = {layers}).")
    path, blocks, _ = max(lists, key=lambda item: (item[2], -item[0].count(".")))
    remote = type(model).__module__.startswith("transformers_modules")
    return ArchitectureSpec(
        model_type=str(model_type), layers_path=path, num_layers_key=key, layer_index_attrs=_index_attrs(blocks),
        per_layer_config_lists=_per_layer_lists(config, layers), index_dependent_flags=_index_flags(config),
        architectures=tuple(getattr(config, "architectures", None) or (type(model).__name__,)),
        requires_remote_code=remote, notes=f"discovered from {type(model).__name__} ({type(blocks[0]).__name__} "
        f"blocks at {path})", source=f"generic discovery ({type(model).__name__})")


def _hidden_in(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if "hidden_states" in kwargs and isinstance(kwargs["hidden_states"], torch.Tensor):
        return kwargs["hidden_states"]
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


def _hidden_out(output: Any) -> torch.Tensor | None:
    first = output[0] if isinstance(output, (tuple, list)) and output else output
    return first if isinstance(first, torch.Tensor) else None


def check_flow(model: nn.Module, spec: Any, tokens: int = 6) -> None:
    """Raise UnsupportedArchitectureError unless, on one short forward pass, every block runs once and the hidden
    state block i returns is exactly what block i+1 receives (so dropping a block hands its input on unchanged)."""
    blocks = spec.layers(model)
    seen: list[list[tuple[torch.Tensor | None, torch.Tensor | None]]] = [[] for _ in blocks]

    def hook(index: int):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            seen[index].append((_hidden_in(args, kwargs), _hidden_out(output)))
        return record

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    device = next(model.parameters()).device
    input_ids = (torch.arange(tokens, device=device) % max(vocab, 1)).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    calls = [len(calls) for calls in seen]
    if calls != [1] * len(blocks):
        raise _error(f"{spec.layers_path} of {type(model).__name__}: blocks ran {calls} times in one forward pass "
                     "(expected once each).")
    for i in range(len(blocks) - 1):
        out, nxt = seen[i][0][1], seen[i + 1][0][0]
        if out is None or nxt is None or out.shape != nxt.shape or not torch.equal(out, nxt):
            raise _error(f"{spec.layers_path} of {type(model).__name__}: block {i + 1} does not receive block {i}'s "
                         "output as its hidden state, so the blocks are not one residual chain.")


def meta_model(config: Any, trust_remote_code: bool = False) -> nn.Module:
    """The causal LM of `config` on the meta device: its structure without allocating any weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def config_from_dict(values: dict[str, Any]) -> Any:
    """A transformers config from a config.json dict (raises ValueError/KeyError for an unknown model_type)."""
    from transformers import AutoConfig

    rest = {k: v for k, v in values.items() if k != "model_type"}
    return AutoConfig.for_model(values.get("model_type"), **rest)


def describe(spec: Any) -> dict[str, Any]:
    """The spec as the JSON a family file would hold (to copy into architectures/ as an override)."""
    fields: Iterable[str] = ("model_type", "architectures", "layers_path", "layer_prefix", "num_layers_key",
                             "per_layer_config_lists", "layer_index_attrs", "index_dependent_flags")
    out = {name: getattr(spec, name) for name in fields}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
