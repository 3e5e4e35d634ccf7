"""Fine-tune one candidate with the Hugging Face Trainer: full fine-tuning or LoRA (peft).

Loss is on the answer (and eos) only; the prompt tokens are masked, as in instruction tuning.
The result is always a plain HF checkpoint (LoRA adapters are merged) so evaluation and later
stages need not know how it was trained.

The same function runs in one process (launcher ``in_process``) and in every process of a
``torchrun`` / PyTorchJob launch (``damoc.training.worker``): the world size comes from the
environment torchrun sets (``WORLD_SIZE``, ``RANK``), and only rank 0 writes the checkpoint.

Settings (``TrainingConfig``) map onto ``TrainingArguments``:

- ``batch_size`` is the effective batch per optimizer step over all processes; the per-device micro
  batch is ``batch_size / (gradient_accumulation_steps x world size)`` (an error if not whole).
- ``warmup_ratio`` is passed as ``warmup_steps=<float in [0, 1)>``, which transformers >= 5 reads as a
  ratio of the total steps, rounded up (``TrainingArguments.get_warmup_steps``). The former hard-coded
  ``warmup_steps=0.03`` meant exactly this, so the default (0.03) trains bit-identically to before.
- ``precision`` auto: bf16 mixed precision on a CUDA GPU that supports it, fp32 otherwise.
- ``deepspeed`` zero2/zero3: a config from :mod:`damoc.training.deepspeed_config` ("auto" batch,
  clipping and optimizer values, so ``TrainingArguments`` stays the single source of truth),
  validated with DeepSpeed's classes for this world size. Without torchrun (in-process) a
  one-process rendezvous on 127.0.0.1 is set up in the environment, as DeepSpeed requires.
- ``save_steps``: checkpoints every N steps under ``.<out>.trainer/run-<fingerprint>/`` next to
  the output; the fingerprint covers the model path, the samples and every setting that changes
  the optimisation, so a rerun resumes only the same training. Removed after a successful save.
  ``checkpoint_uri`` mirrors them to ``<uri>/<fingerprint>/checkpoint-<step>/`` (S3 or a shared volume,
  :mod:`damoc.training.checkpoint_sync`), so a rerun on a fresh disk (a preempted pod) resumes too.

Timings: ``train_seconds`` is the Trainer's own ``train_runtime`` (the optimisation loop; on a
resumed run only the resumed part); ``load_seconds`` (tokenizer, model, encoding) and
``save_seconds`` (merge and write) are reported apart; ``wall_seconds`` is all of it. ``accelerators`` is
the number of GPUs the run held (one per process; 0 on CPU), so GPU-hours = accelerators x wall time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from damoc import atomic
from damoc.config import TrainingConfig
from damoc.data.schema import Sample
from damoc.hf import load_causal_lm, load_tokenizer
from damoc.training.prompt import encode_prompt

IGNORE_INDEX = -100


def encode_example(tok, sample: Sample, max_length: int, chat_template: bool = True) -> dict[str, list[int]]:
    """Token ids of prompt + answer + eos, labels masked on the prompt; truncated to max_length.

    The prompt is :func:`damoc.training.prompt.encode_prompt` (the candidate's chat template when it has one and
    ``chat_template``, else the plain format; BOS first), the same function evaluation uses, so train and eval
    prompts are token-identical up to the answer.
    """
    answer_ids = tok(sample.output.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # Keep at least part of the answer: truncate the prompt from the left when the pair is too long.
    room_for_prompt = max(max_length - len(answer_ids), max_length // 2)
    prompt_ids = encode_prompt(tok, sample.instruction, sample.input, room_for_prompt, chat_template)
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


#: Settings that do not change what is optimised (where or how often it runs), left out of the fingerprint.
_NOT_FINGERPRINTED = {"launcher", "processes", "nodes", "gpus_per_node", "image", "staging_uri", "save_steps",
                      "checkpoint_uri", "trainjob"}


def resolve_precision(precision: str) -> str:
    """fp32, bf16 or fp16 for this machine: auto is bf16 on a CUDA GPU that supports it, fp32 otherwise."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision fp16 needs a CUDA GPU (use fp32 or bf16 on CPU)")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"training.precision: unknown value {precision!r}")
    return precision


def dist_world() -> tuple[int, int]:
    """(world size, global rank) of this process: from torchrun's environment, else (1, 0)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("RANK", "0") or 0)


def micro_batch_size(settings: TrainingConfig, world: int) -> int:
    per_step = settings.gradient_accumulation_steps * world
    if settings.batch_size % per_step:
        raise ValueError(f"training.batch_size {settings.batch_size} is not divisible by gradient_accumulation_steps "
                         f"{settings.gradient_accumulation_steps} x {world} process(es); the effective batch per "
                         "optimizer step must split evenly into micro batches")
    return settings.batch_size // per_step


def deepspeed_settings(settings: TrainingConfig, precision: str, world: int) -> dict[str, Any] | None:
    """The validated DeepSpeed config for ``settings.deepspeed`` (None when DeepSpeed is off)."""
    if settings.deepspeed is None:
        return None
    from damoc.training.deepspeed_config import deepspeed_config, validate_deepspeed_config

    stage = {"zero2": 2, "zero3": 3}[settings.deepspeed]
    cfg = deepspeed_config(stage, bf16=precision == "bf16", fp16=precision == "fp16",
                           gradient_accumulation_steps="auto", micro_batch_size="auto", gradient_clipping="auto",
                           offload_optimizer=settings.deepspeed_offload,
                           offload_params=settings.deepspeed_offload and stage == 3)
    validate_deepspeed_config(cfg, world_size=world)
    return cfg


def _ensure_rendezvous_env() -> None:
    """DeepSpeed initialises torch.distributed even for one process: give it a local one-process group."""
    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"})


def run_fingerprint(model_path: str | Path, samples: Sequence[Sample], settings: TrainingConfig) -> str:
    """A hash of what decides the optimisation: model path, samples, settings (not where it runs)."""
    h = hashlib.sha256()
    h.update(str(model_path).encode())
    h.update(json.dumps(settings.model_dump(exclude=_NOT_FINGERPRINTED), sort_keys=True).encode())
    for sample in samples:
        h.update(json.dumps(sample.to_dict(), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def scratch_dir(out_dir: str | Path) -> Path:
    """Trainer scratch (checkpoints) next to the output: ``.<name>.trainer``."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.trainer"


def _count(params) -> int:
    return sum(getattr(p, "ds_numel", 0) or p.numel() for p in params)


def finetune(model_path: str | Path, samples: Sequence[Sample], out_dir: str | Path, settings: TrainingConfig,
             *, trust_remote_code: bool = False, progress: bool = False,
             callbacks: Sequence[Any] | None = None, model_id: str | None = None) -> dict[str, Any]:
    """Train `model_path` on `samples`, save a merged HF checkpoint in `out_dir`, return statistics.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects (tests use one to interrupt a run).
    ``model_id``: the model's identity in the run fingerprint instead of `model_path` (the worker passes the
    model's URI: its local download path differs between ranks and pods).
    """
    from transformers import Trainer, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from damoc.training.checkpoint_sync import CheckpointSync, pull_latest, remove_all, run_uri

    if not samples:
        raise ValueError("no training samples")
    started = time.perf_counter()
    world, rank = dist_world()
    precision = resolve_precision(settings.precision)
    micro = micro_batch_size(settings, world)
    ds = deepspeed_settings(settings, precision, world)
    if ds is not None:
        _ensure_rendezvous_env()
    set_seed(settings.seed)
    out_dir = Path(out_dir)
    scratch = scratch_dir(out_dir)
    fingerprint = run_fingerprint(model_id or model_path, samples, settings)
    ckpt_dir = scratch / f"run-{fingerprint[:16]}"
    checkpointing = settings.save_steps is not None
    remote = run_uri(settings.checkpoint_uri, fingerprint) if checkpointing and settings.checkpoint_uri else None
    # TrainingArguments before the model: with ZeRO-3 it enables zero.Init, so loading partitions the weights.
    args = TrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        max_steps=settings.max_steps or -1,  # a step budget overrides epochs (the Trainer cycles the data)
        per_device_train_batch_size=micro, gradient_accumulation_steps=settings.gradient_accumulation_steps,
        seed=settings.seed, data_seed=settings.seed,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_ratio,  # < 1: a ratio (see above)
        weight_decay=settings.weight_decay, adam_beta1=settings.adam_beta1, adam_beta2=settings.adam_beta2,
        adam_epsilon=settings.adam_epsilon, max_grad_norm=settings.max_grad_norm,
        bf16=precision == "bf16", fp16=precision == "fp16",
        gradient_checkpointing=settings.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
        deepspeed=ds, logging_steps=10, logging_first_step=True,  # the untrained model's loss: divergence check
        save_strategy="steps" if checkpointing else "no", save_steps=settings.save_steps or 500,
        save_total_limit=2 if checkpointing else None,  # the last one, and the one before in case it is torn
        report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress, dataloader_num_workers=0, remove_unused_columns=False,
    )
    if world > 1 or ds is not None:
        _ = args.device  # sets up the process group now: zero.Init must see the real world size
    if ds is not None:
        import deepspeed

        # On CPU accelerate sets up torch.distributed but not DeepSpeed's comm layer, whose world size
        # zero.Init reads (it would assume 1 and reject the batch arithmetic).
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    tok = load_tokenizer(model_path, trust_remote_code)
    model = load_causal_lm(model_path, trust_remote_code)
    total_params = _count(model.parameters())
    if settings.method == "lora":
        model = _wrap_lora(model, settings)
    trainable = _count(p for p in model.parameters() if p.requires_grad)
    examples = [encode_example(tok, s, settings.max_length, settings.chat_template) for s in samples]

    def last_local() -> str | None:
        return get_last_checkpoint(str(ckpt_dir)) if checkpointing and ckpt_dir.is_dir() else None

    if remote is not None:
        # A fresh disk (preempted pod): fetch the newest remote checkpoint; one process per node downloads.
        with args.main_process_first(local=True, desc="checkpoint download"):
            if last_local() is None:
                pull_latest(remote, ckpt_dir)
    resume = last_local()
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=_Collator(tok.pad_token_id),
                      # the mirror first: a callback stopping the run on_save finds the checkpoint uploaded
                      callbacks=[*([CheckpointSync(remote)] if remote else []), *(callbacks or [])])
    loaded = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    trained = time.perf_counter()

    final = scratch / "final"
    if ds is not None:
        # Every rank takes part (ZeRO-3 gathers the partitioned weights); the main process writes.
        trainer.save_model(str(scratch / "adapter" if settings.method == "lora" else final))
        if rank == 0 and settings.method == "lora":
            _merge_saved_adapter(model_path, scratch / "adapter", final, trust_remote_code)
    elif rank == 0:
        model = trainer.model
        if settings.method == "lora":
            model = model.merge_and_unload()
        model.save_pretrained(final)
    if rank == 0:
        (final / "training_args.bin").unlink(missing_ok=True)
        tok.save_pretrained(final)
        atomic.replace_path(final, out_dir)  # a crash before this leaves the old checkpoint, or none
        atomic.remove_tree(scratch)
        if remote is not None:
            remove_all(remote)  # like the local scratch: checkpoints go once the model is saved
    saved = time.perf_counter()
    tokens = sum(len(e["input_ids"]) for e in examples)
    loss = float(result.training_loss)
    start, end = _loss_span(trainer.state.log_history, loss)
    return {
        "method": settings.method, "samples": len(samples), "tokens": tokens,
        "steps": int(result.global_step), "train_loss": loss,
        "epochs": settings.epochs, "max_steps": settings.max_steps, "params": total_params, "trainable_params": trainable,
        "train_seconds": round(float(result.metrics.get("train_runtime", trained - loaded)), 3),
        "load_seconds": round(loaded - started, 3), "save_seconds": round(saved - trained, 3),
        "wall_seconds": round(saved - started, 3),
        "precision": precision, "deepspeed": settings.deepspeed, "world_size": world,
        "accelerators": world if torch.cuda.is_available() else 0,  # one GPU per process; for GPU-hours
        "engine": type(trainer.model_wrapped).__name__,  # DeepSpeedEngine under DeepSpeed
        "micro_batch_size": micro, "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "effective_batch_size": micro * settings.gradient_accumulation_steps * world,
        "resumed_from_step": _step_of(resume),
        "loss_is_finite": math.isfinite(loss),
        "loss_start": start, "loss_end": end, "diverged": diverged(start, end),
    }


DIVERGE_RATIO = 3.0  # a final loss this many times the untrained model's first-step loss: training blew up


def _loss_span(log_history: Sequence[dict[str, Any]], mean_loss: float) -> tuple[float | None, float]:
    """(the first step's loss — the untrained model's —, the last logged loss; the run's mean when the last
    log is that first step)."""
    logged = [(h.get("step", 0), float(h["loss"])) for h in log_history if "loss" in h]
    if not logged:
        return None, mean_loss
    start = logged[0][1]
    end = logged[-1][1] if len(logged) > 1 else mean_loss
    return start, end


def diverged(start: float | None, end: float) -> bool:
    """Non-finite, or ended far above where it started (the untrained model's loss)."""
    if not math.isfinite(end) or (start is not None and not math.isfinite(start)):
        return True
    return start is not None and start > 0 and end > DIVERGE_RATIO * start


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _merge_saved_adapter(model_path: str | Path, adapter_dir: Path, final: Path, trust_remote_code: bool) -> None:
    """LoRA under DeepSpeed: merge the saved (gathered) adapter into a fresh copy of the base weights."""
    from peft import PeftModel
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # load the base whole on this rank, not partitioned by zero.Init
    base = load_causal_lm(model_path, trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(final)
