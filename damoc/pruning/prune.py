"""Stage 3: drop the decoder layers that change the hidden state least, folding their task vectors into neighbours.

Pipeline for one candidate (a chat model plus the base it was tuned from):
  1. S_l on calibration text (importance.layer_similarities), IS_l = 1 - S_l;
  2. choose_layers: every layer with S_l > threshold, capped, never the first or last one;
  3. merge.merge_pruned_layers: theta_k += alpha_p * sparsify(theta_p(chat) - theta_p(base));
  4. drop the layers in place (ModuleList, KV-cache layer indices, config layer count and per-layer lists);
  5. save_pretrained model + tokenizer into a temp sibling of out_dir, then rename.
Without a base model nothing is pruned: the paper prunes chat models only (base models get GraphCut + token
compression), and the task vector needs the base.
"""
from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from damoc import atomic
from damoc.pruning.architectures import ArchitectureSpec, spec_for
from damoc.pruning.importance import layer_importance, layer_similarities
from damoc.pruning.merge import merge_pruned_layers

STATS_FILE = "damoc_pruning.json"


class PruningError(ValueError):
    """Inputs that cannot be pruned together (e.g. base and chat of different architectures)."""


def choose_layers(similarities: Sequence[float] | np.ndarray, threshold: float,
                  max_prune_fraction: float) -> list[int]:
    """Indices (ascending) of the layers to prune.

    Every layer with S_l > threshold is a candidate, except the first and the last layer: the first turns
    embeddings into the residual stream and the last feeds the final norm and LM head, and both are known to
    matter far more than their S_l suggests. At most floor(max_prune_fraction * L) layers are pruned; when more
    qualify, the most similar ones win (ties: lower index). NaN similarities never qualify.
    """
    s = np.asarray(similarities, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"similarities must be 1-D, got shape {s.shape}")
    if not 0.0 <= max_prune_fraction <= 1.0:
        raise ValueError(f"max_prune_fraction must be in [0, 1], got {max_prune_fraction}")
    cap = math.floor(max_prune_fraction * len(s) + 1e-9)  # epsilon: 0.29 * 100 must give 29, not 28
    candidates = [i for i in range(1, len(s) - 1) if s[i] > threshold]
    candidates.sort(key=lambda i: (-s[i], i))
    return sorted(candidates[:cap])


def choose_layers_by_fraction(similarities: Sequence[float] | np.ndarray, fraction: float) -> list[int]:
    """The round(fraction * L) most similar layers (never the first or last; NaN last; ties: lower index).

    The fair rule for comparing candidates: every candidate loses the same share of its depth, so no candidate
    wins because its similarities happened to sit below a threshold that its rivals crossed.
    """
    s = np.asarray(similarities, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"similarities must be 1-D, got shape {s.shape}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    count = min(int(math.floor(fraction * len(s) + 0.5)), max(len(s) - 2, 0))
    interior = sorted(range(1, len(s) - 1), key=lambda i: (np.isnan(s[i]), -np.nan_to_num(s[i], nan=-np.inf), i))
    return sorted(interior[:count])


def compute_alphas(similarities: Sequence[float] | np.ndarray, pruned: Sequence[int],
                   alpha: str | float) -> dict[int, float]:
    """Merge weights per pruned layer: "importance" -> IS_p = 1 - S_p; a number -> that constant for all."""
    if isinstance(alpha, str):
        if alpha != "importance":
            raise ValueError(f"alpha must be 'importance' or a number, got {alpha!r}")
        importance = layer_importance(np.asarray(similarities))
        return {p: float(importance[p]) for p in pruned}
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be 'importance' or a finite number, got {alpha!r}")
    return {p: float(alpha) for p in pruned}


def _resolve(obj: Any, dotted: str) -> tuple[Any, str] | None:
    *parents, name = dotted.split(".")
    for part in parents:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return (obj, name) if hasattr(obj, name) else None


def _trim_config(config: Any, kept: Sequence[int], spec: ArchitectureSpec) -> None:
    old_count = spec.num_layers(config)
    # transformers 5 heterogeneous configs keep per-layer overrides keyed by layer index: renumber them.
    overrides: dict[int, Any] | None = None
    if getattr(config, "is_heterogeneous", False):
        raw = config.to_dict().get("per_layer_config") or {}
        by_old = {int(key): value for key, value in raw.items()}
        overrides = {new: by_old[old] for new, old in enumerate(kept) if old in by_old}
        config.per_layer_config = None
    for key in spec.per_layer_config_lists:
        value = getattr(config, key, None)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or len(value) != old_count:
            raise PruningError(f"config.{key} should list one entry per layer ({old_count}), got {value!r}")
        setattr(config, key, [value[i] for i in kept])
    setattr(config, spec.num_layers_key, len(kept))
    if overrides:
        config.per_layer_config = overrides


def drop_layers(model: nn.Module, kept: Sequence[int], spec: ArchitectureSpec) -> None:
    """Keep only the decoder layers `kept` (ascending), renumbering their KV-cache indices, and fix the config."""
    layers = spec.layers(model)
    if list(kept) != sorted(set(kept)) or not kept or kept[-1] >= len(layers) or kept[0] < 0:
        raise ValueError(f"kept must be ascending unique layer indices below {len(layers)}, got {list(kept)}")
    new_layers = nn.ModuleList([layers[i] for i in kept])
    for new_index, layer in enumerate(new_layers):
        targets = [t for t in (_resolve(layer, attr) for attr in spec.layer_index_attrs) if t is not None]
        if not targets:
            raise PruningError(f"none of {list(spec.layer_index_attrs)} exists on a {type(layer).__name__}; "
                               f"fix layer_index_attrs in {spec.source or spec.model_type}")
        for owner, name in targets:
            setattr(owner, name, new_index)
    spec.set_layers(model, new_layers)
    _trim_config(model.config, kept, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def _save_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Write into a temp sibling that replaces out_dir only when complete (damoc.atomic)."""
    with atomic.staged_dir(out_dir) as staged:
        write(staged)


def _check_pair(chat_config: Any, base_config: Any, chat_path: str, base_path: str) -> None:
    if chat_config.model_type != base_config.model_type:
        raise PruningError(f"base {base_path} is '{base_config.model_type}' but chat {chat_path} is "
                           f"'{chat_config.model_type}': the task vector needs the same architecture")
    for key in ("num_hidden_layers", "hidden_size"):
        chat_value, base_value = getattr(chat_config, key, None), getattr(base_config, key, None)
        if chat_value != base_value:
            raise PruningError(f"base and chat differ in {key}: {base_value} ({base_path}) vs "
                               f"{chat_value} ({chat_path})")


def _pruned_layer_tensors(model: nn.Module, pruned: Sequence[int], spec: ArchitectureSpec) -> dict[str, torch.Tensor]:
    prefixes = tuple(spec.prefix(p) for p in pruned)
    return {key: value.detach() for key, value in model.state_dict().items() if key.startswith(prefixes)}


def prune_checkpoint(chat_path: str, base_path: str | None, calibration_texts: list[str], out_dir: str | Path, *,
                     threshold: float = 0.85, keep_fraction: float = 0.2, max_prune_fraction: float = 0.5,
                     rule: str = "threshold", target_fraction: float = 0.25,
                     alpha: str | float = "importance", trust_remote_code: bool = False, progress: bool = False,
                     max_length: int = 256, batch_size: int = 8, device: str | None = None) -> dict[str, Any]:
    """Prune a chat checkpoint against its base and save a normal HF checkpoint (model + tokenizer) to out_dir.

    rule: "threshold" drops layers with S_l > threshold (at most max_prune_fraction of them); "fraction" drops
    the round(target_fraction * L) most similar layers whatever their S_l.
    alpha: "importance" merges each pruned layer's sparse task vector with weight IS_p = 1 - S_p (small for the
    near-identity layers that get pruned, so the receiver changes little); a number uses that constant.
    With base_path=None nothing is loaded or written and the stats say skipped: the caller decides what to do
    with the unpruned model. When no layer passes the threshold the (unchanged) model is still written.
    Stats are JSON-serialisable and are also written to out_dir/damoc_pruning.json.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    compute_alphas([0.0], [], alpha)  # validate options before any loading
    if rule not in ("threshold", "fraction"):
        raise ValueError(f"rule must be 'threshold' or 'fraction', got {rule!r}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    chat_config = AutoConfig.from_pretrained(chat_path, trust_remote_code=trust_remote_code)
    if base_path is None:
        layers = getattr(chat_config, "num_hidden_layers", None)
        return {"skipped": True, "reason": "no base model: the task vector needs base and chat, so pruning "
                                           "applies to chat models only", "num_layers_before": layers,
                "num_layers_after": layers, "pruned_layers": [], "similarities": [], "params_before": None,
                "params_after": None, "alphas": {}, "seconds": time.perf_counter() - start}
    base_config = AutoConfig.from_pretrained(base_path, trust_remote_code=trust_remote_code)
    _check_pair(chat_config, base_config, str(chat_path), str(base_path))
    spec = spec_for(chat_config)
    if any(getattr(chat_config, flag, False) for flag in spec.index_dependent_flags):
        warnings.warn(f"{spec.model_type}: one of {list(spec.index_dependent_flags)} is set, so renumbered layers "
                      "compute something different after pruning", stacklevel=2)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(chat_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(chat_path, dtype="auto", trust_remote_code=trust_remote_code)
    model.to(device)
    num_before = spec.num_layers(model.config)
    params_before = count_parameters(model)

    similarities = layer_similarities(model, tokenizer, calibration_texts, max_length=max_length,
                                      batch_size=batch_size, spec=spec, progress=progress)
    pruned = (choose_layers(similarities, threshold, max_prune_fraction) if rule == "threshold"
              else choose_layers_by_fraction(similarities, target_fraction))
    kept = [i for i in range(num_before) if i not in pruned]
    alphas = compute_alphas(similarities, pruned, alpha)

    if pruned:
        base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto",
                                                          trust_remote_code=trust_remote_code)
        base_sd = _pruned_layer_tensors(base_model, pruned, spec)  # keep only what the merge needs
        del base_model
        chat_sd = model.state_dict()
        for key, value in _pruned_layer_tensors(model, pruned, spec).items():
            if key in base_sd and base_sd[key].shape != value.shape:
                raise PruningError(f"base and chat differ in the shape of {key}: {tuple(base_sd[key].shape)} "
                                   f"vs {tuple(value.shape)}")
        merged = merge_pruned_layers(chat_sd, base_sd, pruned, kept, alphas, keep_fraction, spec)
        with torch.no_grad():
            for key, value in merged.items():
                if value is not chat_sd[key]:
                    chat_sd[key].copy_(value)  # state_dict tensors share storage with the parameters
        del base_sd, merged
        drop_layers(model, kept, spec)

    stats: dict[str, Any] = {
        "skipped": False, "num_layers_before": num_before, "num_layers_after": len(kept), "pruned_layers": pruned,
        "similarities": [float(s) for s in similarities], "params_before": params_before,
        "params_after": count_parameters(model), "alphas": {str(p): a for p, a in alphas.items()},
        "rule": rule, "target_fraction": target_fraction if rule == "fraction" else None,
        "threshold": threshold, "keep_fraction": keep_fraction, "max_prune_fraction": max_prune_fraction,
        "alpha": alpha, "model_type": spec.model_type,
    }

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        stats["seconds"] = time.perf_counter() - start
        (directory / STATS_FILE).write_text(json.dumps(stats, indent=2))

    _save_atomically(Path(out_dir), write)
    return stats
