"""Layer importance from calibration text: how much each decoder layer changes the hidden state.

S_l is the mean, over all non-padding calibration tokens, of cos(h_in^l, h_out^l) where h_in/h_out are the
hidden states entering and leaving decoder layer l. A layer with S_l close to 1 barely changes the residual
stream and is a pruning candidate. Importance IS_l = 1 - S_l (ShortGPT's Block Influence).

The states are taken with forward hooks on the layer modules rather than from `output_hidden_states`,
because the last entry of `output_hidden_states` is already post final-norm in most families.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from damoc.batching import right_pad
from damoc.pruning.architectures import ArchitectureSpec, spec_for_model


def calibration_batches(tokenizer: Any, texts: Sequence[str | Sequence[int]], max_length: int, batch_size: int,
                        device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask) batches of texts (tokenized with special tokens) or of token-id
    lists (already encoded, e.g. by damoc.pruning.calibration; cut to max_length).

    Padding is done here, not by the tokenizer, so a tokenizer without a pad token works unchanged.
    Right padding keeps positions of real tokens intact, and causal attention means real tokens never see pads.
    """
    strings = [t for t in texts if isinstance(t, str)]
    tokenized = iter(tokenizer(strings, truncation=True, max_length=max_length,
                               add_special_tokens=True)["input_ids"] if strings else [])
    encoded = [list(next(tokenized)) if isinstance(t, str) else [int(i) for i in t][:max_length] for t in texts]
    encoded = [ids for ids in encoded if ids]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    for start in range(0, len(encoded), batch_size):
        input_ids, mask = right_pad(encoded[start:start + batch_size], pad_id)
        yield input_ids.to(device), mask.to(device)


def layer_similarities(model: nn.Module, tokenizer: Any, texts: Sequence[str | Sequence[int]], max_length: int = 256,
                       batch_size: int = 8, spec: ArchitectureSpec | None = None,
                       progress: bool = False) -> np.ndarray:
    """S_l for every decoder layer, shape (num_layers,), float64.

    The mean is token-weighted over the whole calibration set (not a mean of per-text means). `texts` may hold
    token-id lists (already encoded) as well as strings.
    """
    if not texts:
        raise ValueError("layer_similarities needs at least one calibration text")
    spec = spec or spec_for_model(model, check_flow=False)
    layers = spec.layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    current_mask: dict[str, torch.Tensor] = {}
    tokens = 0

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, (tuple, list)) else output
            cos = F.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # (batch, seq)
            sums[index] += (cos * current_mask["mask"]).sum().double().cpu()
        return hook

    handles = [layer.register_forward_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batches = calibration_batches(tokenizer, texts, max_length, batch_size, device)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=-(-len(texts) // batch_size), desc="layer similarities")
        with torch.inference_mode():
            for input_ids, mask in batches:
                current_mask["mask"] = mask.float()
                model(input_ids=input_ids, attention_mask=mask, use_cache=False)
                tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise ValueError("calibration texts produced no tokens")
    return (sums / tokens).numpy()


def layer_importance(similarities: np.ndarray) -> np.ndarray:
    """IS_l = 1 - S_l."""
    return 1.0 - np.asarray(similarities, dtype=np.float64)
