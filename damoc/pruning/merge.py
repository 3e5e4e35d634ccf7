"""Sparse merging: fold a pruned layer's fine-tuning delta (chat - base) into kept neighbours.

For a pruned layer p with task vector tau_p = theta_p(chat) - theta_p(base), each receiving kept layer k gets
theta_k += share_{p->k} * alpha_p * sparsify(tau_p, kept share). Three settings decide the numbers:

sparsity reading (`kept_share`): the paper says "sparsity rate 20%" (../shared/DAMOC.md stage 3: 'sparsify by
  magnitude (paper: "sparsity rate 20%": make keep-fraction a config option, TIES-style top-k)').
  "keep": merge_keep_fraction is the share of entries kept (20% kept, 80% zeroed) -- TIES-merging's "density
    k = 20%" convention, which DAMOC.md's "keep-fraction ... TIES-style top-k" paraphrase follows; the default,
    so earlier runs reproduce.
  "drop": merge_keep_fraction is the share zeroed (20% zeroed, 80% kept) -- the literal meaning of "sparsity
    rate" (the share of zeros), i.e. what the paper's own words say.
coefficient (`merge_coefficients`):
  "importance": alpha_p = IS_p = 1 - S_p (small: the pruned layers are the near-identity ones);
  "normalized": alpha_p = IS_p / sum of IS_q over the run of consecutive pruned layers containing p (the layers
    that collapse into the same gap), so each gap contributes an importance-weighted average of its task vectors
    (weights sum to 1; equal weights when every IS is 0);
  "constant": alpha_p = merge_alpha for every p.
target (`receivers`):
  "preceding": the nearest kept layer before p (whose output p used to refine); the nearest after if none;
  "following": the nearest kept layer after p; the nearest before if none;
  "split": half to each of the two neighbours; all to the one that exists when p is at an end.

Merging is tensor by tensor: a receiver's float32 accumulator, one task vector and its top-k mask are the only
temporaries, and the base tensors come from any `.get(key)` source (a state dict, or `SafetensorsReader`, which
reads one tensor at a time from a checkpoint's safetensors shards).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from damoc.pruning.architectures import ArchitectureSpec


def sparsify(tau: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Keep the round(keep_fraction * numel) entries of largest |value| (TIES-style top-k), zero the rest.

    Ties at the cut-off magnitude are broken by flat index (lower index wins), so the result is deterministic.
    keep_fraction=0.2 corresponds to the paper's "sparsity rate 20%". NaNs rank below every number.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    numel = tau.numel()
    k = min(numel, int(keep_fraction * numel + 0.5))  # round half up
    if k == numel:
        return tau.clone()
    if k == 0:
        return torch.zeros_like(tau)
    magnitude = tau.detach().flatten().abs().float().nan_to_num(nan=-1.0)
    # kthvalue is O(n) and avoids sorting the whole (possibly 10^8-element) tensor.
    cutoff = torch.kthvalue(magnitude, numel - k + 1).values
    keep = magnitude > cutoff
    missing = k - int(keep.sum())
    if missing > 0:
        ties = torch.nonzero(magnitude == cutoff, as_tuple=False).flatten()[:missing]
        keep[ties] = True
    return torch.where(keep.view_as(tau), tau, torch.zeros_like(tau))


SPARSITY_READINGS = ("keep", "drop")
COEFFICIENTS = ("importance", "normalized", "constant")
TARGETS = ("preceding", "following", "split")


def kept_share(fraction: float, reading: str = "keep") -> float:
    """The share of task-vector entries kept: `fraction` itself ("keep") or 1 - fraction ("drop")."""
    if reading not in SPARSITY_READINGS:
        raise ValueError(f"sparsity reading must be one of {SPARSITY_READINGS}, got {reading!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"merge fraction must be in [0, 1], got {fraction}")
    return fraction if reading == "keep" else 1.0 - fraction


def receiving_layer(pruned_index: int, kept: Sequence[int]) -> int:
    """Nearest kept layer before `pruned_index`, else the nearest one after it."""
    return receivers(pruned_index, kept, "preceding")[0][0]


def receivers(pruned_index: int, kept: Sequence[int], target: str = "preceding") -> list[tuple[int, float]]:
    """(kept layer, share of the pruned layer's merged task vector) pairs; shares sum to 1."""
    if target not in TARGETS:
        raise ValueError(f"merge target must be one of {TARGETS}, got {target!r}")
    before = [k for k in kept if k < pruned_index]
    after = [k for k in kept if k > pruned_index]
    previous, following = (max(before) if before else None), (min(after) if after else None)
    if previous is None and following is None:
        raise ValueError("no kept layer to merge into")
    if target == "split" and previous is not None and following is not None:
        return [(previous, 0.5), (following, 0.5)]
    if target == "following":
        return [(following if following is not None else previous, 1.0)]  # type: ignore[list-item]
    return [(previous if previous is not None else following, 1.0)]  # type: ignore[list-item]


def _runs(pruned: Sequence[int]) -> list[list[int]]:
    """Consecutive pruned layers grouped: [1, 2, 5] -> [[1, 2], [5]]."""
    groups: list[list[int]] = []
    for p in sorted(pruned):
        if groups and groups[-1][-1] == p - 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def merge_coefficients(similarities: Sequence[float] | np.ndarray, pruned: Sequence[int], coefficient: str,
                       constant: float = 1.0) -> dict[int, float]:
    """alpha_p per pruned layer for coefficient "importance", "normalized" or "constant" (module docstring)."""
    if coefficient not in COEFFICIENTS:
        raise ValueError(f"merge coefficient must be one of {COEFFICIENTS}, got {coefficient!r}")
    if coefficient == "constant":
        if isinstance(constant, bool) or not isinstance(constant, (int, float)) or not np.isfinite(constant):
            raise ValueError(f"merge_alpha must be a finite number, got {constant!r}")
        return {p: float(constant) for p in pruned}
    s = np.asarray(similarities, dtype=np.float64)
    importance = {p: float(1.0 - s[p]) if np.isfinite(s[p]) else 0.0 for p in pruned}
    if coefficient == "importance":
        return importance
    alphas: dict[int, float] = {}
    for run in _runs(pruned):
        weights = {p: max(importance[p], 0.0) for p in run}  # cos <= 1, so IS < 0 is float noise
        total = sum(weights.values())
        alphas.update({p: (weights[p] / total if total > 0 else 1.0 / len(run)) for p in run})
    return alphas


class TensorSource(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass
class MergeReport:
    """What the merge did: contributions (pruned tensor -> receiver) applied and skipped, with reasons."""

    merged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (pruned-layer key, reason)
    receivers_changed: set[str] = field(default_factory=set)
    kept_share: float = 1.0

    def to_dict(self, max_names: int = 50) -> dict[str, Any]:
        return {"merged_tensors": self.merged, "skipped_tensors": len(self.skipped),
                "skipped": [{"tensor": key, "reason": reason} for key, reason in self.skipped[:max_names]],
                "skipped_listed": min(len(self.skipped), max_names),
                "receiver_tensors_changed": len(self.receivers_changed), "kept_share": self.kept_share}


def _layer_params(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _skip_reason(theta_chat: torch.Tensor, theta_base: torch.Tensor | None, target: torch.Tensor | None,
                 receiver_key: str) -> str | None:
    if not theta_chat.is_floating_point():
        return f"not floating point ({theta_chat.dtype})"
    if theta_base is None:
        return "missing in the base checkpoint"
    if not theta_base.is_floating_point():
        return f"base tensor not floating point ({theta_base.dtype})"
    if theta_chat.shape != theta_base.shape:
        return f"shape mismatch chat {tuple(theta_chat.shape)} vs base {tuple(theta_base.shape)}"
    if target is None:
        return f"no {receiver_key} in the receiving layer"
    if not target.is_floating_point():
        return f"receiver {receiver_key} not floating point"
    if target.shape != theta_chat.shape:
        return f"shape mismatch with receiver {receiver_key} {tuple(target.shape)} vs {tuple(theta_chat.shape)}"
    return None


def merge_task_vectors(chat_sd: Mapping[str, torch.Tensor], base: TensorSource, pruned: Sequence[int],
                       kept: Sequence[int], alphas: Mapping[int, float], keep_fraction: float,
                       spec: ArchitectureSpec, write: Callable[[str, torch.Tensor], None], *,
                       target: str = "preceding") -> MergeReport:
    """Compute every receiver's merged tensor and hand it to `write(key, tensor)`, one receiver tensor at a time.

    `keep_fraction` is the share kept (apply `kept_share` first). A contribution (pruned tensor -> receiver) is
    applied only when it is floating point, present in chat and base with the same shape, and the receiver has a
    floating-point tensor of that shape under the same name; every other one is listed in the report with why.
    Arithmetic is float32; each receiver gets the sum of its contributions added once, cast to its own dtype.
    """
    if set(pruned) & set(kept):
        raise ValueError(f"layers both pruned and kept: {sorted(set(pruned) & set(kept))}")
    contributions: dict[int, list[tuple[int, float]]] = {}
    for p in sorted(pruned):
        for k, share in receivers(p, kept, target):
            contributions.setdefault(k, []).append((p, share * float(alphas[p])))
    report = MergeReport(kept_share=keep_fraction)
    for k in sorted(contributions):
        sources = [(p, weight, _layer_params(chat_sd, spec.prefix(p))) for p, weight in contributions[k]]
        names = list(dict.fromkeys(name for _, _, params in sources for name in params))
        for name in names:  # one receiver tensor at a time: a single float32 accumulator is alive
            receiver_key = spec.prefix(k) + name
            receiver = chat_sd.get(receiver_key)
            accumulator: torch.Tensor | None = None
            for p, weight, params in sources:
                theta_chat = params.get(name)
                if theta_chat is None:
                    continue
                theta_base = base.get(spec.prefix(p) + name)
                reason = _skip_reason(theta_chat, theta_base, receiver, receiver_key)
                if reason is not None:
                    report.skipped.append((spec.prefix(p) + name, reason))
                    continue
                tau = theta_chat.detach().float() - theta_base.to(theta_chat.device).float()
                del theta_base
                delta = sparsify(tau, keep_fraction)
                del tau
                delta.mul_(weight)
                accumulator = delta if accumulator is None else accumulator.add_(delta)
                report.merged += 1
                del delta
            if accumulator is not None:
                write(receiver_key, (receiver.detach().float() + accumulator).to(receiver.dtype))
                report.receivers_changed.add(receiver_key)
            del accumulator
    return report


def merge_pruned_layers_with_report(chat_sd: Mapping[str, torch.Tensor], base_sd: TensorSource,
                                    pruned: Sequence[int], kept: Sequence[int], alphas: Mapping[int, float],
                                    keep_fraction: float, spec: ArchitectureSpec, *, target: str = "preceding"
                                    ) -> tuple[dict[str, torch.Tensor], MergeReport]:
    """`merge_pruned_layers` plus the report of merged and skipped tensors."""
    merged = dict(chat_sd)
    report = merge_task_vectors(chat_sd, base_sd, pruned, kept, alphas, keep_fraction, spec,
                                merged.__setitem__, target=target)
    return merged, report


def merge_pruned_layers(chat_sd: Mapping[str, torch.Tensor], base_sd: TensorSource,
                        pruned: Sequence[int], kept: Sequence[int], alphas: Mapping[int, float],
                        keep_fraction: float, spec: ArchitectureSpec, *, target: str = "preceding"
                        ) -> dict[str, torch.Tensor]:
    """A new state dict: `chat_sd` with each pruned layer's sparse task vector added to its receiving layer(s).

    Inputs are not modified; only changed tensors are new objects. Pruned layers' entries are still present
    (dropping and renumbering them is the caller's job). `keep_fraction` is the share of entries kept.
    """
    return merge_pruned_layers_with_report(chat_sd, base_sd, pruned, kept, alphas, keep_fraction, spec,
                                           target=target)[0]


class SafetensorsReader:
    """Tensors of a checkpoint read one at a time from its safetensors files (sharded or not).

    `get(key)` opens the shard holding `key`, copies that one tensor out and closes the file, so memory holds only
    the tensors the caller keeps. `path` is a local directory or a hub id (the local hub cache, offline-safe).
    """

    def __init__(self, path: str | Path):
        directory = Path(str(path).removeprefix("file://")).expanduser()
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(str(path), allow_patterns=["*.safetensors", "*.json"]))
        self.directory = directory
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self._where = {key: directory / shard for key, shard in weight_map.items()}
        else:
            from safetensors import safe_open

            files = sorted(directory.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{directory} has no safetensors weights")
            self._where = {}
            for file in files:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    self._where.update({key: file for key in handle.keys()})

    @classmethod
    def try_open(cls, path: str | Path) -> "SafetensorsReader | None":
        try:
            return cls(path)
        except (OSError, ValueError, KeyError):
            return None

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def shape(self, key: str) -> tuple[int, ...] | None:
        """The stored shape of `key` (header only, no data read), None when absent."""
        from safetensors import safe_open

        file = self._where.get(key)
        if file is None:
            return None
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return tuple(handle.get_slice(key).get_shape())

    def get(self, key: str, default: Any = None) -> torch.Tensor | Any:
        from safetensors import safe_open

        file = self._where.get(key)
        if file is None:
            return default
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return handle.get_tensor(key)
