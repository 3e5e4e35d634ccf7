"""Fine-tune one candidate with the Hugging Face Trainer: full fine-tuning or LoRA (peft).

Loss is on the answer (and eos) only; the prompt tokens are masked, as in instruction tuning.
The result is always a plain HF checkpoint (LoRA adapters are merged) so evaluation and later
stages need not know how it was trained.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from damoc import atomic
from damoc.config import TrainingConfig
from damoc.data.schema import Sample
from damoc.hf import load_causal_lm, load_tokenizer
from damoc.training.prompt import format_prompt

IGNORE_INDEX = -100


def encode_example(tok, sample: Sample, max_length: int) -> dict[str, list[int]]:
    """Token ids of prompt + answer + eos, labels masked on the prompt; truncated to max_length."""
    prompt_ids = tok(format_prompt(sample.instruction, sample.input), add_special_tokens=False)["input_ids"]
    answer_ids = tok(sample.output.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if tok.bos_token_id is not None:
        prompt_ids = [tok.bos_token_id] + prompt_ids
    # Keep at least part of the answer: truncate the prompt from the left when the pair is too long.
    room_for_prompt = max(max_length - len(answer_ids), max_length // 2)
    prompt_ids = prompt_ids[-room_for_prompt:]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ex in enumerate(batch):
            n = len(ex["input_ids"])
            ids[row, :n] = torch.tensor(ex["input_ids"])
            labels[row, :n] = torch.tensor(ex["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _wrap_lora(model, settings: TrainingConfig):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                     target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def finetune(model_path: str | Path, samples: Sequence[Sample], out_dir: str | Path, settings: TrainingConfig,
             *, trust_remote_code: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train `model_path` on `samples`, save a merged HF checkpoint in `out_dir`, return statistics."""
    from transformers import Trainer, TrainingArguments, set_seed

    if not samples:
        raise ValueError("no training samples")
    set_seed(settings.seed)
    started = time.perf_counter()
    tok = load_tokenizer(model_path, trust_remote_code)
    model = load_causal_lm(model_path, trust_remote_code)
    total_params = sum(p.numel() for p in model.parameters())
    if settings.method == "lora":
        model = _wrap_lora(model, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    examples = [encode_example(tok, s, settings.max_length) for s in samples]
    out_dir = Path(out_dir)
    scratch = out_dir.parent / f".{out_dir.name}.trainer"
    args = TrainingArguments(
        output_dir=str(scratch), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        max_steps=settings.max_steps or -1,  # a step budget overrides epochs (the Trainer cycles the data)
        per_device_train_batch_size=settings.batch_size, seed=settings.seed, data_seed=settings.seed,
        lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, logging_steps=10,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress, dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=_Collator(tok.pad_token_id))
    result = trainer.train()
    model = trainer.model
    if settings.method == "lora":
        model = model.merge_and_unload()
    with atomic.staged_dir(out_dir) as staged:  # a crash while saving leaves the old checkpoint, or none
        model.save_pretrained(staged)
        tok.save_pretrained(staged)
    atomic.remove_tree(scratch)
    tokens = sum(len(e["input_ids"]) for e in examples)
    return {
        "method": settings.method, "samples": len(samples), "tokens": tokens,
        "steps": int(result.global_step), "train_loss": float(result.training_loss),
        "epochs": settings.epochs, "max_steps": settings.max_steps, "params": total_params, "trainable_params": trainable,
        "train_seconds": round(time.perf_counter() - started, 3),
        "loss_is_finite": math.isfinite(float(result.training_loss)),
    }
