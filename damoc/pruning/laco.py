"""The LaCo baseline (Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse").

Walking from the top of the model down, LaCo tries to collapse layers l+1..l+K (K = C-1, fewer near the top)
into layer l by RDSC ("Reserving Differences while Seeking Common"):

    theta*_l = theta_l + sum_{k=1..K} (theta_{l+k} - theta_l)          (every parameter of the layer)

and removes layers l+1..l+K. The collapse is kept only if the mean cosine similarity between the collapsed
model's and the ORIGINAL model's final hidden states on a few calibration samples exceeds T; then the next try
starts at l - I (indices of the already collapsed model, so a later collapse can absorb an earlier one), else
at l - 1. The walk stops below the lowest layer L, or when the guards allow no more removals.

Differences from the damoc method: no base checkpoint (no task vectors); the acceptance test looks at the whole
model's output, not a single layer's; layers vanish by merging into the layer below, not by importance.

Memory: one model in memory; each try changes it in place (one layer's parameters are backed up, the layer
list and config are restored on rejection), so the peak is the model plus one layer plus the cached final
hidden states of the calibration tokens.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from damoc.pruning.architectures import ArchitectureSpec, spec_for_model
from damoc.pruning.calibration import CalibrationItem, encode_calibration
from damoc.pruning.importance import calibration_batches, layer_similarities
from damoc.pruning.prune import (_candidates_and_cap, _resolve, count_parameters, save_pruned_checkpoint,
                                 drop_layers)

_MISSING = object()


@dataclass(frozen=True)
class LacoSettings:
    """C, I, T, L of the paper plus the guards shared with the damoc method."""

    layers_per_merge: int = 4          # C
    interval: int = 2                  # I
    threshold: float = 0.65            # T
    lowest_layer: int | None = None    # L; None: half the depth
    max_prune_fraction: float = 0.5
    min_layers_kept: int = 2
    protect_first_last: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.layers_per_merge, bool) or not isinstance(self.layers_per_merge, int) \
                or self.layers_per_merge < 2:
            raise ValueError(f"laco layers_per_merge (C) must be an integer >= 2, got {self.layers_per_merge!r}")
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"laco interval (I) must be an integer >= 1, got {self.interval!r}")
        if not (isinstance(self.threshold, (int, float)) and -1.0 <= self.threshold <= 1.0):
            raise ValueError(f"laco threshold (T) must be in [-1, 1], got {self.threshold!r}")
        if self.lowest_layer is not None and (not isinstance(self.lowest_layer, int) or self.lowest_layer < 0):
            raise ValueError(f"laco lowest_layer (L) must be a non-negative integer or None, got {self.lowest_layer!r}")


def rdsc_merge(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """theta_0 + sum_{k>=1} (theta_k - theta_0), in float32, cast back to theta_0's dtype."""
    if not tensors:
        raise ValueError("rdsc_merge needs at least one tensor")
    base = tensors[0].detach().float()
    out = base.clone()
    for tensor in tensors[1:]:
        out.add_(tensor.detach().float() - base)
    return out.to(tensors[0].dtype)


def collapse_parameters(layers: nn.ModuleList, start: int, count: int
                        ) -> tuple[dict[str, torch.Tensor], int, list[tuple[str, str]]]:
    """Write RDSC(layer start, the `count` layers after it) into layer `start`, in place.

    Returns (backup of the changed parameters of layer `start`, merged count, skipped (name, reason)). A
    parameter is merged only when every collapsed layer has a floating-point one of the same shape.
    """
    receiver = dict(layers[start].named_parameters())
    others = [dict(layers[start + k].named_parameters()) for k in range(1, count + 1)]
    backup: dict[str, torch.Tensor] = {}
    skipped: list[tuple[str, str]] = []
    for name, param in receiver.items():
        sources = [other.get(name) for other in others]
        if not param.is_floating_point():
            skipped.append((name, f"not floating point ({param.dtype})"))
        elif any(s is None for s in sources):
            skipped.append((name, "missing in a collapsed layer"))
        elif any(s.shape != param.shape for s in sources):
            skipped.append((name, "shape differs between the collapsed layers"))
        else:
            backup[name] = param.detach().clone()
            with torch.no_grad():
                param.copy_(rdsc_merge([param, *sources]))
    return backup, len(backup), skipped


def _restore_parameters(layer: nn.Module, backup: dict[str, torch.Tensor]) -> None:
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for name, value in backup.items():
            params[name].copy_(value)


@dataclass
class _Structure:
    """What `drop_layers` changes: the layer list, the config's per-layer entries, each layer's KV index."""

    layers: list[nn.Module]
    config_values: dict[str, Any]
    indices: list[tuple[Any, str, Any]]


def _snapshot(model: nn.Module, spec: ArchitectureSpec) -> _Structure:
    layers = list(spec.layers(model))
    keys = (spec.num_layers_key, *spec.per_layer_config_lists)
    values = {key: getattr(model.config, key, _MISSING) for key in keys}
    values = {key: value if value is _MISSING else copy.deepcopy(value) for key, value in values.items()}
    if getattr(model.config, "is_heterogeneous", False):  # transformers 5 per-layer overrides: a view, not a dict
        raw = model.config.to_dict().get("per_layer_config") or {}
        values["per_layer_config"] = {int(key): copy.deepcopy(value) for key, value in raw.items()}
    indices = [(owner, name, getattr(owner, name)) for layer in layers
               for owner, name in filter(None, (_resolve(layer, attr) for attr in spec.layer_index_attrs))]
    return _Structure(layers, values, indices)


def _restore_structure(model: nn.Module, spec: ArchitectureSpec, snap: _Structure) -> None:
    spec.set_layers(model, nn.ModuleList(snap.layers))
    for key, value in snap.config_values.items():
        if key == "per_layer_config":
            model.config.per_layer_config = None  # replaced whole, as prune._trim_config does
        if value is not _MISSING:
            setattr(model.config, key, value)
    for owner, name, value in snap.indices:
        setattr(owner, name, value)


def final_hidden_states(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The decoder's last hidden state (after the final norm: what the LM head reads) per batch, float32."""
    out = []
    with torch.inference_mode():
        for input_ids, mask in batches:
            states = model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
            out.append(states.float())
    return out


def representation_similarity(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                              reference: Sequence[torch.Tensor]) -> float:
    """Mean over real (non-padding) calibration tokens of cos(final state of `model`, reference state)."""
    total, tokens = 0.0, 0
    for (_, mask), ref, states in zip(batches, reference, final_hidden_states(model, batches)):
        cos = F.cosine_similarity(states, ref, dim=-1)
        total += float((cos * mask).sum())
        tokens += int(mask.sum())
    if tokens == 0:
        raise ValueError("calibration samples produced no tokens")
    return total / tokens


def laco_collapse(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], settings: LacoSettings,
                  spec: ArchitectureSpec | None = None) -> dict[str, Any]:
    """Run LaCo on `model` in place. Returns the steps taken and which original layers went where."""
    spec = spec or spec_for_model(model)
    was_training = model.training
    model.eval()
    layers0 = len(spec.layers(model))
    _, cap = _candidates_and_cap(np.zeros(layers0), settings.max_prune_fraction,
                                 settings.min_layers_kept, settings.protect_first_last)
    top_margin = 1 if settings.protect_first_last else 0  # the last layer never absorbs nor is absorbed
    lowest = settings.lowest_layer if settings.lowest_layer is not None else layers0 // 2
    lowest = max(lowest, 1 if settings.protect_first_last else 0)
    reference = final_hidden_states(model, batches)
    origin = [[i] for i in range(layers0)]  # original layers each current layer stands for
    steps: list[dict[str, Any]] = []
    merged = 0
    skipped: list[tuple[str, str]] = []
    removed = 0
    count = layers0
    start = count - top_margin - settings.layers_per_merge
    try:
        while start >= lowest and removed < cap:
            k = min(settings.layers_per_merge - 1, count - 1 - top_margin - start, cap - removed)
            if k < 1:
                start -= 1
                continue
            snap = _snapshot(model, spec)
            layers = spec.layers(model)
            backup, merged_now, skipped_now = collapse_parameters(layers, start, k)
            drop_layers(model, [i for i in range(count) if not start < i <= start + k], spec)
            similarity = representation_similarity(model, batches, reference)
            accepted = similarity > settings.threshold
            steps.append({"layer": start, "collapsed": list(range(start + 1, start + k + 1)),
                          "original_receiver": origin[start][0],
                          "original_layers": [i for group in origin[start + 1:start + k + 1] for i in group],
                          "similarity": similarity, "accepted": accepted})
            if accepted:
                origin[start] = [i for group in origin[start:start + k + 1] for i in group]
                del origin[start + 1:start + k + 1]
                count, removed = count - k, removed + k
                merged += merged_now
                skipped.extend(skipped_now)
                start -= settings.interval
            else:
                _restore_structure(model, spec, snap)
                _restore_parameters(spec.layers(model)[start], backup)
                start -= 1
    finally:
        model.train(was_training)
    pruned = sorted(i for group in origin for i in group[1:])
    limited_by = None
    if removed >= cap and start >= lowest:  # the walk still had room: a guard stopped it
        limit = math.floor(settings.max_prune_fraction * layers0 + 1e-9)
        limited_by = "max_prune_fraction" if limit <= layers0 - settings.min_layers_kept else "min_layers_kept"
    return {"steps": steps, "pruned_layers": pruned, "kept_layers": [group[0] for group in origin],
            "collapsed_into": {str(group[0]): group[1:] for group in origin if len(group) > 1},
            "merged_tensors": merged, "skipped_tensors": len(skipped),
            "skipped": [{"tensor": name, "reason": reason} for name, reason in skipped[:50]],
            "limited_by": limited_by, "lowest_layer": lowest}


def laco_prune_checkpoint(chat_path: str, calibration: Sequence[CalibrationItem], out_dir: str | Path, *,
                          settings: LacoSettings = LacoSettings(), chat_template: bool = True,
                          trust_remote_code: bool = False, max_length: int = 256, batch_size: int = 8,
                          device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """LaCo on a chat checkpoint; saves a normal HF checkpoint (model + tokenizer + damoc_pruning.json).

    `calibration`: texts, or samples encoded exactly as training encodes them (damoc.pruning.calibration).
    Stats carry the damoc method's keys where they mean the same (pruned_layers, similarities per layer for the
    report's plot, params before/after, layers) plus LaCo's own: every try with its similarity and verdict.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(chat_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(chat_path, dtype="auto", trust_remote_code=trust_remote_code)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = spec_for_model(model)
    items = encode_calibration(tokenizer, calibration, max_length, chat_template)
    num_before = spec.num_layers(model.config)
    params_before = count_parameters(model)
    layer_params = [sum(p.numel() for p in layer.parameters()) for layer in spec.layers(model)]
    # Per-layer cos(h_in, h_out), for the report's plot only: LaCo itself decides on the final states.
    similarities = layer_similarities(model, tokenizer, items, max_length=max_length, batch_size=batch_size,
                                      spec=spec, progress=progress)
    device_ = next(model.parameters()).device
    batches = list(calibration_batches(tokenizer, items, max_length, batch_size, device_))
    result = laco_collapse(model, batches, settings, spec)
    pruned = result["pruned_layers"]
    receiver_of = {p: int(r) for r, group in result["collapsed_into"].items() for p in group}
    stats: dict[str, Any] = {
        "method": "laco", "skipped": False, "model_type": spec.model_type,
        "architecture": spec.source or spec.model_type,
        "num_layers_before": num_before, "num_layers_after": spec.num_layers(model.config),
        "pruned_layers": pruned, "pruned_flags": [i in pruned for i in range(num_before)],
        "similarities": [float(s) for s in similarities],
        "params_before": params_before, "params_after": count_parameters(model),
        "layers": [{"index": i, "similarity": float(similarities[i]), "pruned": i in pruned,
                    "params": layer_params[i], "merged_into": [receiver_of[i]] if i in receiver_of else None}
                   for i in range(num_before)],
        "laco_steps": result["steps"], "collapsed_into": result["collapsed_into"],
        "kept_layers": result["kept_layers"], "limited_by": result["limited_by"],
        "merge": {"merged_tensors": result["merged_tensors"], "skipped_tensors": result["skipped_tensors"],
                  "skipped": result["skipped"]},
        "threshold": None,  # no per-layer threshold: the report plot draws none
        "laco_threshold": settings.threshold, "laco_layers_per_merge": settings.layers_per_merge,
        "laco_interval": settings.interval, "laco_lowest_layer": result["lowest_layer"],
        "max_prune_fraction": settings.max_prune_fraction, "min_layers_kept": settings.min_layers_kept,
        "protect_first_last": settings.protect_first_last, "calibration_samples": len(items),
    }

    save_pruned_checkpoint(out_dir, model, tokenizer, stats, start)
    return stats
