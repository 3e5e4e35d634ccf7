"""Stage 3: drop the decoder layers that change the hidden state least, folding their task vectors into neighbours.

Pipeline for one candidate (a chat model plus the base it was tuned from):
  1. S_l on calibration text (importance.layer_similarities), IS_l = 1 - S_l;
  2. choose_layers: every layer with S_l > threshold (or choose_layers_by_fraction), within the guards
     (max_prune_fraction, min_layers_kept, protect_first_last);
  3. merge.merge_task_vectors: theta_k += share * alpha_p * sparsify(theta_p(chat) - theta_p(base)), the base read
     tensor by tensor from its safetensors files (merge.py: sparsity reading, coefficient, target);
  4. drop the layers in place (ModuleList, KV-cache layer indices, config layer count and per-layer lists);
  5. save_pretrained model + tokenizer into a temp sibling of out_dir, then rename.
Without a base model nothing is pruned: the paper prunes chat models only (base models get GraphCut + token
compression), and the task vector needs the base.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from damoc import atomic
from damoc.pruning.architectures import ArchitectureSpec, spec_for_model
from damoc.pruning.calibration import CalibrationItem, encode_calibration
from damoc.pruning.importance import layer_importance, layer_similarities
from damoc.pruning.merge import (SafetensorsReader, kept_share, merge_coefficients, merge_task_vectors,
                                 receivers)

STATS_FILE = "damoc_pruning.json"


class PruningError(ValueError):
    """Inputs that cannot be pruned together (e.g. base and chat of different architectures)."""


def _candidates_and_cap(s: np.ndarray, max_prune_fraction: float, min_layers_kept: int,
                        protect_first_last: bool) -> tuple[list[int], int]:
    if s.ndim != 1:
        raise ValueError(f"similarities must be 1-D, got shape {s.shape}")
    if not 0.0 <= max_prune_fraction <= 1.0:
        raise ValueError(f"max_prune_fraction must be in [0, 1], got {max_prune_fraction}")
    if isinstance(min_layers_kept, bool) or not isinstance(min_layers_kept, int) or min_layers_kept < 1:
        raise ValueError(f"min_layers_kept must be an integer >= 1, got {min_layers_kept!r}")
    layers = len(s)
    allowed = list(range(1, layers - 1)) if protect_first_last else list(range(layers))
    cap = math.floor(max_prune_fraction * layers + 1e-9)  # epsilon: 0.29 * 100 must give 29, not 28
    return allowed, max(0, min(cap, layers - min_layers_kept))


def choose_layers(similarities: Sequence[float] | np.ndarray, threshold: float, max_prune_fraction: float, *,
                  min_layers_kept: int = 2, protect_first_last: bool = True) -> list[int]:
    """Indices (ascending) of the layers to prune.

    Every layer with S_l > threshold is a candidate, except (protect_first_last) the first and the last layer:
    the first turns embeddings into the residual stream and the last feeds the final norm and LM head, and both
    are known to matter far more than their S_l suggests. At most floor(max_prune_fraction * L) layers are pruned
    and at least min_layers_kept stay; when more qualify, the most similar ones win (ties: lower index). NaN
    similarities never qualify.
    """
    s = np.asarray(similarities, dtype=np.float64)
    allowed, cap = _candidates_and_cap(s, max_prune_fraction, min_layers_kept, protect_first_last)
    candidates = [i for i in allowed if s[i] > threshold]
    candidates.sort(key=lambda i: (-s[i], i))
    return sorted(candidates[:cap])


def choose_layers_by_fraction(similarities: Sequence[float] | np.ndarray, fraction: float, *,
                              max_prune_fraction: float = 1.0, min_layers_kept: int = 2,
                              protect_first_last: bool = True) -> list[int]:
    """The round(fraction * L) most similar layers (never the first or last when protected; NaN last; ties: lower
    index), within the same guards as `choose_layers` (max_prune_fraction, min_layers_kept).

    The fair rule for comparing candidates: every candidate loses the same share of its depth, so no candidate
    wins because its similarities happened to sit below a threshold that its rivals crossed.
    """
    s = np.asarray(similarities, dtype=np.float64)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    allowed, cap = _candidates_and_cap(s, max_prune_fraction, min_layers_kept, protect_first_last)
    count = min(int(math.floor(fraction * len(s) + 0.5)), cap)
    ranked = sorted(allowed, key=lambda i: (np.isnan(s[i]), -np.nan_to_num(s[i], nan=-np.inf), i))
    return sorted(ranked[:count])


def selection_limit(similarities: Sequence[float] | np.ndarray, pruned: Sequence[int], rule: str,
                    threshold: float, target_fraction: float, max_prune_fraction: float, min_layers_kept: int,
                    protect_first_last: bool) -> str | None:
    """Which guard decided the count: "max_prune_fraction", "min_layers_kept", "protect_first_last" or None
    (the rule itself: every layer above the threshold, or exactly round(target_fraction * L))."""
    s = np.asarray(similarities, dtype=np.float64)
    layers = len(s)
    if rule == "threshold":
        wanted = int(np.sum(s > threshold))
        protected = int(np.sum(s[[0, layers - 1]] > threshold)) if protect_first_last and layers else 0
    else:
        wanted = int(math.floor(target_fraction * layers + 0.5))
        protected = max(0, wanted - (layers - 2)) if protect_first_last else 0
    if len(pruned) >= wanted:
        return None
    if len(pruned) >= wanted - protected:
        return "protect_first_last"
    cap = math.floor(max_prune_fraction * layers + 1e-9)
    return "max_prune_fraction" if cap <= layers - min_layers_kept else "min_layers_kept"


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
        if not targets and spec.layer_index_attrs:
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


def save_pruned_checkpoint(out_dir: str | Path, model: Any, tokenizer: Any, stats: dict[str, Any],
                           started: float) -> None:
    """Model, tokenizer and the stats (with the total seconds) as one checkpoint, replacing out_dir atomically."""

    def write_checkpoint(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        stats["seconds"] = time.perf_counter() - started
        (directory / STATS_FILE).write_text(json.dumps(stats, indent=2))

    _save_atomically(Path(out_dir), write_checkpoint)


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


def _resolve_coefficient(alpha: str | float | None, coefficient: str, merge_alpha: float) -> tuple[str, float]:
    """The legacy `alpha` argument ("importance" or a number) maps onto coefficient/merge_alpha."""
    if alpha is None:
        return coefficient, merge_alpha
    if isinstance(alpha, str):
        if alpha != "importance":
            raise ValueError(f"alpha must be 'importance' or a number, got {alpha!r}")
        return "importance", merge_alpha
    return "constant", alpha


def _base_source(base_path: str, needed: dict[str, torch.Tensor], pruned: Sequence[int], spec: ArchitectureSpec,
                 trust_remote_code: bool) -> tuple[Any, str]:
    """Where the merge reads base tensors: the safetensors files, one tensor at a time, when they hold the pruned
    layers under the model's own names; else (a .bin checkpoint, renamed keys) the base model loaded whole, of
    which only the pruned layers' tensors are kept."""
    reader = SafetensorsReader.try_open(base_path)
    if reader is not None and needed and sum(key in reader for key in needed) * 2 >= len(needed):
        for key, value in needed.items():
            shape = reader.shape(key)
            if shape is not None and shape != tuple(value.shape):
                raise PruningError(f"base and chat differ in the shape of {key}: {shape} vs {tuple(value.shape)}")
        return reader, "safetensors (tensor by tensor)"
    from transformers import AutoModelForCausalLM

    base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto", trust_remote_code=trust_remote_code)
    base_sd = _pruned_layer_tensors(base_model, pruned, spec)
    del base_model
    for key, value in needed.items():
        if key in base_sd and base_sd[key].shape != value.shape:
            raise PruningError(f"base and chat differ in the shape of {key}: {tuple(base_sd[key].shape)} "
                               f"vs {tuple(value.shape)}")
    return base_sd, "from_pretrained (whole base model)"


def _layer_parameter_counts(model: nn.Module, spec: ArchitectureSpec) -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in spec.layers(model)]


def prune_checkpoint(chat_path: str, base_path: str | None, calibration_texts: Sequence[CalibrationItem],
                     out_dir: str | Path, *,
                     threshold: float = 0.85, keep_fraction: float = 0.2, max_prune_fraction: float = 0.5,
                     rule: str = "threshold", target_fraction: float = 0.25,
                     sparsity_reading: str = "keep", coefficient: str = "importance", merge_alpha: float = 1.0,
                     merge_target: str = "preceding", min_layers_kept: int = 2, protect_first_last: bool = True,
                     alpha: str | float | None = None, trust_remote_code: bool = False, progress: bool = False,
                     max_length: int = 256, batch_size: int = 8, device: str | None = None,
                     chat_template: bool = True) -> dict[str, Any]:
    """Prune a chat checkpoint against its base and save a normal HF checkpoint (model + tokenizer) to out_dir.

    rule: "threshold" drops layers with S_l > threshold; "fraction" drops the round(target_fraction * L) most
    similar layers whatever their S_l. Both stay within the guards: at most floor(max_prune_fraction * L) layers,
    at least min_layers_kept kept, first and last never dropped while protect_first_last.
    keep_fraction with sparsity_reading: the share of task-vector entries kept ("keep") or zeroed ("drop").
    coefficient: "importance" (alpha_p = 1 - S_p), "normalized" (importance-weighted average per gap of
    consecutive pruned layers) or "constant" (merge_alpha); merge_target: "preceding", "following" or "split"
    (damoc.pruning.merge explains each). `alpha` is the older spelling: "importance", or a number = constant.
    The base is read tensor by tensor from its safetensors files (only the pruned layers), so peak memory is about
    one model plus a few tensors.
    With base_path=None nothing is loaded or written and the stats say skipped: the caller decides what to do
    with the unpruned model. When no layer is chosen the (unchanged) model is still written.
    calibration_texts: strings, or samples encoded as training encodes them (chat template when chat_template
    and the tokenizer has one; damoc.pruning.calibration).
    Stats are JSON-serialisable and are also written to out_dir/damoc_pruning.json.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    coefficient, merge_alpha = _resolve_coefficient(alpha, coefficient, merge_alpha)
    merge_coefficients([0.0], [], coefficient, merge_alpha)  # validate options before any loading
    if rule not in ("threshold", "fraction"):
        raise ValueError(f"rule must be 'threshold' or 'fraction', got {rule!r}")
    share = kept_share(keep_fraction, sparsity_reading)
    receivers(1, [0], merge_target)
    _candidates_and_cap(np.zeros(1), max_prune_fraction, min_layers_kept, protect_first_last)
    chat_config = AutoConfig.from_pretrained(chat_path, trust_remote_code=trust_remote_code)
    if base_path is None:
        layers = getattr(chat_config, "num_hidden_layers", None)
        return {"skipped": True, "reason": "no base model: the task vector needs base and chat, so pruning "
                                           "applies to chat models only", "num_layers_before": layers,
                "num_layers_after": layers, "pruned_layers": [], "similarities": [], "params_before": None,
                "params_after": None, "alphas": {}, "layers": [], "seconds": time.perf_counter() - start}
    base_config = AutoConfig.from_pretrained(base_path, trust_remote_code=trust_remote_code)
    _check_pair(chat_config, base_config, str(chat_path), str(base_path))

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(chat_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(chat_path, dtype="auto", trust_remote_code=trust_remote_code)
    model.to(device)
    spec = spec_for_model(model)  # the family's JSON file, else discovered from the model (flow checked)
    if any(getattr(chat_config, flag, False) for flag in spec.index_dependent_flags):
        warnings.warn(f"{spec.model_type}: one of {list(spec.index_dependent_flags)} is set, so renumbered layers "
                      "compute something different after pruning", stacklevel=2)
    num_before = spec.num_layers(model.config)
    params_before = count_parameters(model)
    layer_params = _layer_parameter_counts(model, spec)

    calibration = encode_calibration(tokenizer, calibration_texts, max_length, chat_template)
    similarities = layer_similarities(model, tokenizer, calibration, max_length=max_length,
                                      batch_size=batch_size, spec=spec, progress=progress)
    guards = dict(max_prune_fraction=max_prune_fraction, min_layers_kept=min_layers_kept,
                  protect_first_last=protect_first_last)
    pruned = (choose_layers(similarities, threshold, **guards) if rule == "threshold"
              else choose_layers_by_fraction(similarities, target_fraction, **guards))
    kept = [i for i in range(num_before) if i not in pruned]
    alphas = merge_coefficients(similarities, pruned, coefficient, merge_alpha)
    merge_stats: dict[str, Any] = {"merged_tensors": 0, "skipped_tensors": 0, "skipped": [], "skipped_listed": 0,
                                   "receiver_tensors_changed": 0, "kept_share": share}
    base_read = None

    if pruned:
        chat_sd = model.state_dict()  # tensors share storage with the parameters
        needed = {key: value for key, value in chat_sd.items() if key.startswith(tuple(spec.prefix(p) for p in pruned))}
        base, base_read = _base_source(str(base_path), needed, pruned, spec, trust_remote_code)

        def write(key: str, value: torch.Tensor) -> None:
            with torch.no_grad():
                chat_sd[key].copy_(value)

        report = merge_task_vectors(chat_sd, base, pruned, kept, alphas, share, spec, write, target=merge_target)
        merge_stats = report.to_dict()
        del base, chat_sd, needed
        drop_layers(model, kept, spec)

    merged_into = {p: [k for k, _ in receivers(p, kept, merge_target)] for p in pruned}
    stats: dict[str, Any] = {
        "skipped": False, "num_layers_before": num_before, "num_layers_after": len(kept), "pruned_layers": pruned,
        "similarities": [float(s) for s in similarities], "pruned_flags": [i in pruned for i in range(num_before)],
        "params_before": params_before, "params_after": count_parameters(model),
        "alphas": {str(p): a for p, a in alphas.items()},
        "layers": [{"index": i, "similarity": float(similarities[i]), "importance": float(1.0 - similarities[i]),
                    "pruned": i in pruned, "params": layer_params[i], "merged_into": merged_into.get(i),
                    "alpha": alphas.get(i)} for i in range(num_before)],
        "limited_by": selection_limit(similarities, pruned, rule, threshold, target_fraction, **guards),
        "rule": rule, "target_fraction": target_fraction if rule == "fraction" else None,
        "threshold": threshold, "keep_fraction": keep_fraction, "sparsity_reading": sparsity_reading,
        "max_prune_fraction": max_prune_fraction, "min_layers_kept": min_layers_kept,
        "protect_first_last": protect_first_last, "coefficient": coefficient,
        "merge_alpha": merge_alpha if coefficient == "constant" else None, "merge_target": merge_target,
        "alpha": alpha if alpha is not None else (coefficient if coefficient != "constant" else merge_alpha),
        "merge": merge_stats, "base_read": base_read, "model_type": spec.model_type, "method": "damoc",
        "architecture": spec.source or spec.model_type,
    }

    save_pruned_checkpoint(out_dir, model, tokenizer, stats, start)
    return stats
