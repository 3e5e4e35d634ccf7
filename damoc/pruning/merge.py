"""Sparse merging: fold a pruned layer's fine-tuning delta (chat - base) into a kept neighbour.

For a pruned layer p with task vector tau_p = theta_p(chat) - theta_p(base), the receiving kept layer k gets
theta_k += alpha_p * sparsify(tau_p). The receiver is the nearest kept layer before p (the one whose output p
used to refine), or the nearest kept layer after p when p precedes every kept layer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def receiving_layer(pruned_index: int, kept: Sequence[int]) -> int:
    """Nearest kept layer before `pruned_index`, else the nearest one after it."""
    before = [k for k in kept if k < pruned_index]
    if before:
        return max(before)
    after = [k for k in kept if k > pruned_index]
    if not after:
        raise ValueError("no kept layer to merge into")
    return min(after)


def _layer_params(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def merge_pruned_layers(chat_sd: Mapping[str, torch.Tensor], base_sd: Mapping[str, torch.Tensor],
                        pruned: Sequence[int], kept: Sequence[int], alphas: Mapping[int, float],
                        keep_fraction: float, spec: ArchitectureSpec) -> dict[str, torch.Tensor]:
    """A new state dict: `chat_sd` with each pruned layer's sparse task vector added to its receiving layer.

    Inputs are not modified; only changed tensors are new objects. Pruned layers' entries are still present
    (dropping and renumbering them is the caller's job). A parameter is merged only when it is a floating-point
    tensor present in the pruned layer (chat and base) and in the receiving layer with the same shape; the
    others (integer buffers, shape-mismatched weights in heterogeneous models) are left alone.
    Arithmetic is in float32, the result is cast back to the receiving tensor's dtype.
    """
    if set(pruned) & set(kept):
        raise ValueError(f"layers both pruned and kept: {sorted(set(pruned) & set(kept))}")
    merged = dict(chat_sd)
    deltas: dict[str, torch.Tensor] = {}
    for p in pruned:
        alpha = float(alphas[p])
        k = receiving_layer(p, kept)
        chat_p = _layer_params(chat_sd, spec.prefix(p))
        base_p = _layer_params(base_sd, spec.prefix(p))
        for name, theta_chat in chat_p.items():
            target_key = spec.prefix(k) + name
            target = chat_sd.get(target_key)
            theta_base = base_p.get(name)
            if (target is None or theta_base is None or not theta_chat.is_floating_point()
                    or not target.is_floating_point() or not theta_base.is_floating_point()
                    or theta_chat.shape != theta_base.shape or target.shape != theta_chat.shape):
                continue
            tau = theta_chat.float() - theta_base.to(theta_chat.device).float()
            delta = alpha * sparsify(tau, keep_fraction)
            deltas[target_key] = deltas[target_key] + delta if target_key in deltas else delta
    for key, delta in deltas.items():
        target = chat_sd[key]
        merged[key] = (target.float() + delta.to(target.device)).to(target.dtype)
    return merged
