"""Greedy generation of answers for evaluation (batched, left-padded, stops at eos)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from damoc.data.schema import Sample
from damoc.hf import load_causal_lm, load_tokenizer
from damoc.training.prompt import encode_prompt


@torch.inference_mode()
def generate_with(model, tok, samples: Sequence[Sample], *, max_new_tokens: int = 64, batch_size: int = 16,
                  max_prompt_tokens: int = 384, progress: bool = False, chat_template: bool = True) -> list[str]:
    """Greedy answers of an already loaded model/tokenizer (the tokenizer's padding side is restored after).
    Prompts are encoded by the function training uses (`encode_prompt`): same template, BOS, left cut."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
    max_prompt = max(8, min(max_prompt_tokens, limit - max_new_tokens))
    side, tok.padding_side = tok.padding_side, "left"  # decoder-only models continue from the right edge
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        batches = range(0, len(samples), batch_size)
        for start in tqdm(batches, desc="generate", disable=not progress):
            chunk = samples[start:start + batch_size]
            ids = [encode_prompt(tok, s.instruction, s.input, max_prompt, chat_template) for s in chunk]
            enc = tok.pad({"input_ids": ids}, return_tensors="pt").to(next(model.parameters()).device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tok.padding_side = side
        model.train(was_training)
    return answers


def generate_answers(model_path: str | Path, samples: Sequence[Sample], *, max_new_tokens: int = 64,
                     batch_size: int = 16, max_prompt_tokens: int = 384, trust_remote_code: bool = False,
                     progress: bool = False, chat_template: bool = True) -> list[str]:
    """Load the checkpoint at ``model_path`` and generate greedy answers for ``samples`` (see generate_with)."""
    tok = load_tokenizer(model_path, trust_remote_code)
    model = load_causal_lm(model_path, trust_remote_code).eval()
    return generate_with(model, tok, samples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         max_prompt_tokens=max_prompt_tokens, progress=progress, chat_template=chat_template)
