"""DeepSpeed ZeRO-2 / ZeRO-3 configurations for the Hugging Face Trainer integration, and their validation.

The paper fine-tunes every candidate with DeepSpeed ZeRO-3 on multi-GPU nodes (DAMOC.md, stage 4). This module
builds the JSON config that ``TrainingArguments(deepspeed=<dict or path>)`` takes, and validates a config with
DeepSpeed's own config classes before a (costly) cluster job is started.

"auto" values
    Keys that the HF integration (``transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig``) fills from
    ``TrainingArguments`` or from the model are written as ``"auto"``: ``train_batch_size`` (always; it is
    world size x micro batch x accumulation), ``zero_optimization.reduce_bucket_size``,
    ``stage3_prefetch_bucket_size`` and ``stage3_param_persistence_threshold`` (from the model's hidden size), and
    the optimizer's ``lr``/``betas``/``eps``/``weight_decay``. Values given here as numbers (micro batch,
    accumulation, gradient clipping, bf16/fp16) are *checked* by the HF integration against ``TrainingArguments``
    and a mismatch is an error there, so pass ``"auto"`` to make ``TrainingArguments`` the single source of truth.

Optimizer
    With ``optimizer=None`` the config has no ``optimizer`` block: the HF Trainer builds its own optimizer
    (``TrainingArguments.optim``, AdamW by default) and DeepSpeed wraps it; nothing is JIT-compiled. With
    ``optimizer="AdamW"`` DeepSpeed builds its own AdamW (FusedAdam on GPU, DeepSpeedCPUAdam when the optimizer
    is offloaded; both are C++/CUDA ops compiled on first use). ZeRO-Offload of the optimizer requires a DeepSpeed
    optimizer, so the default ``optimizer="auto"`` means "AdamW" when ``offload_optimizer`` is set and None
    otherwise. No ``scheduler`` block is written: the Trainer's ``lr_scheduler_type`` applies.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Union

AutoInt = Union[int, Literal["auto"]]
AutoFloat = Union[float, Literal["auto"]]
AutoBool = Union[bool, Literal["auto"]]

_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def effective_batch(micro: int, accum: int, world: int) -> int:
    """Global batch size = micro batch per device x gradient accumulation steps x data-parallel world size.

    This is DeepSpeed's ``train_batch_size``; the paper's "batch 64" is this number.
    """
    for name, value in (("micro", micro), ("accum", accum), ("world", world)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"effective_batch: {name} must be a positive integer, got {value!r}")
    return micro * accum * world


def deepspeed_config(stage: int, *, bf16: AutoBool, gradient_accumulation_steps: AutoInt,
                     micro_batch_size: AutoInt, offload_optimizer: bool = False, offload_params: bool = False,
                     gradient_clipping: AutoFloat = 1.0, fp16: AutoBool = False,
                     optimizer: Literal["auto", "AdamW"] | None = "auto", pin_memory: bool = True,
                     gather_16bit_weights_on_model_save: bool = True, steps_per_print: int = 100) -> dict[str, Any]:
    """A ZeRO-2 or ZeRO-3 config (a JSON-serialisable dict) for ``TrainingArguments(deepspeed=...)``.

    Args:
        stage: ZeRO stage, 2 (optimizer states + gradients partitioned) or 3 (also the parameters).
        bf16: bfloat16 mixed precision (``bf16.enabled``); must equal ``TrainingArguments.bf16`` unless "auto".
        gradient_accumulation_steps: per optimizer step; an int or "auto" (from ``TrainingArguments``).
        micro_batch_size: ``train_micro_batch_size_per_gpu``; an int or "auto"
            (``TrainingArguments.per_device_train_batch_size``).
        offload_optimizer: ZeRO-Offload of optimizer states (and the fp32 master weights) to CPU memory.
        offload_params: ZeRO-Infinity parameter offload to CPU memory; ZeRO-3 only.
        gradient_clipping: global gradient-norm clip (``TrainingArguments.max_grad_norm``), or "auto".
        fp16: float16 mixed precision with dynamic loss scaling; exclusive with ``bf16``.
        optimizer: None (the Trainer's optimizer), "AdamW" (DeepSpeed's, hyper-parameters "auto"), or "auto"
            ("AdamW" when ``offload_optimizer``, else None). See the module docstring.
        pin_memory: pin the CPU buffers of offloaded tensors (faster host<->GPU copies; no effect without CUDA).
        gather_16bit_weights_on_model_save: ZeRO-3 only: ``Trainer.save_model`` gathers the partitioned
            weights into one ordinary HF checkpoint (what the evaluation step loads).
        steps_per_print: DeepSpeed's own progress logging interval.

    Raises:
        ValueError: on an unsupported stage or an impossible combination (e.g. parameter offload with ZeRO-2).
    """
    if isinstance(stage, bool) or stage not in (2, 3):
        raise ValueError(f"deepspeed_config: stage must be 2 or 3, got {stage!r}")
    if offload_params and stage != 3:
        raise ValueError("deepspeed_config: offload_params (ZeRO-Infinity parameter offload) needs ZeRO stage 3")
    if bf16 is True and fp16 is True:
        raise ValueError("deepspeed_config: bf16 and fp16 cannot both be enabled")
    for name, value in (("gradient_accumulation_steps", gradient_accumulation_steps),
                        ("micro_batch_size", micro_batch_size)):
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"deepspeed_config: {name} must be a positive integer or 'auto', got {value!r}")
    if gradient_clipping != "auto" and (isinstance(gradient_clipping, bool)
                                        or not isinstance(gradient_clipping, (int, float)) or gradient_clipping < 0):
        raise ValueError(f"deepspeed_config: gradient_clipping must be a number >= 0 or 'auto', "
                         f"got {gradient_clipping!r}")
    if optimizer not in (None, "auto", "AdamW"):
        raise ValueError(f"deepspeed_config: optimizer must be None, 'auto' or 'AdamW', got {optimizer!r}")
    if optimizer == "auto":
        optimizer = "AdamW" if offload_optimizer else None

    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": int(2e8), "reduce_scatter": True})
    else:
        zero.update({
            "sub_group_size": int(1e9),
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": int(1e9),
            "stage3_max_reuse_distance": int(1e9),
            "stage3_gather_16bit_weights_on_model_save": bool(gather_16bit_weights_on_model_save),
        })
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(pin_memory)}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bool(pin_memory)}

    cfg: dict[str, Any] = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": gradient_clipping,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": fp16, "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        "steps_per_print": int(steps_per_print),
        "wall_clock_breakdown": False,
    }
    if optimizer == "AdamW":
        cfg["optimizer"] = {"type": "AdamW",
                            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}
    return cfg


def _resolved_for_validation(cfg: dict[str, Any], world_size: int) -> dict[str, Any]:
    """A copy with the "auto" values the HF integration would fill replaced by consistent stand-ins.

    The batch keys are checked here against ``world_size`` (DeepSpeed's class reads the world size from an
    initialised process group, which a validating process does not have), then ``train_batch_size`` is
    dropped so DeepSpeed derives it for its own view of the world.
    """
    resolved = copy.deepcopy(cfg)
    values: dict[str, Any] = {}
    for key in _BATCH_KEYS:
        value = resolved.get(key)
        if value is None or value == "auto":
            values[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"invalid DeepSpeed config: {key} must be a positive integer or 'auto', got {value!r}")
        values[key] = value
    micro = values["train_micro_batch_size_per_gpu"]
    accum = values["gradient_accumulation_steps"]
    total = values["train_batch_size"]
    if total is not None and micro is not None and accum is not None and total != micro * accum * world_size:
        raise ValueError(
            f"invalid DeepSpeed config: train_batch_size={total} != train_micro_batch_size_per_gpu={micro} x "
            f"gradient_accumulation_steps={accum} x world_size={world_size} (= {micro * accum * world_size})")
    if total is not None and (micro is None or accum is None):
        known = (micro or 1) * (accum or 1) * world_size
        if total % known:
            raise ValueError(f"invalid DeepSpeed config: train_batch_size={total} is not divisible by "
                             f"micro batch x accumulation x world_size = {known}")
    resolved["train_micro_batch_size_per_gpu"] = micro or 1
    resolved["gradient_accumulation_steps"] = accum or 1
    resolved.pop("train_batch_size", None)

    clip = resolved.get("gradient_clipping")
    if clip == "auto":
        resolved["gradient_clipping"] = 1.0
    elif clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0):
        raise ValueError(f"invalid DeepSpeed config: gradient_clipping must be a number >= 0, got {clip!r}")
    return resolved


def validate_deepspeed_config(cfg: dict[str, Any], world_size: int = 1) -> None:
    """Check a DeepSpeed config with DeepSpeed's own config classes; raise ValueError saying what is wrong.

    ``"auto"`` values are accepted where the HF Trainer integration fills them. Checked:

    - batch arithmetic: ``train_batch_size == micro batch x accumulation x world_size`` when all are numbers;
    - everything ``deepspeed.runtime.config.DeepSpeedConfig`` checks: the ``zero_optimization`` block against the
      ``DeepSpeedZeroConfig`` pydantic model (unknown keys, e.g. typos, are rejected; stage 0-3; offload devices),
      precision blocks (bf16 and fp16 together are rejected), removed features, optimizer/scheduler blocks;
    - parameter offload only with ZeRO-3 (DeepSpeed ignores it silently below stage 3).

    Args:
        cfg: the config dict (as passed to ``TrainingArguments(deepspeed=...)``).
        world_size: data-parallel world size the job will run with (number of GPUs over all nodes).
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"invalid DeepSpeed config: expected a dict, got {type(cfg).__name__}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"validate_deepspeed_config: world_size must be a positive integer, got {world_size!r}")
    resolved = _resolved_for_validation(cfg, world_size)

    zero = resolved.get("zero_optimization", {})
    if zero is not None and not isinstance(zero, (dict, bool)):
        raise ValueError(f"invalid DeepSpeed config: zero_optimization must be a mapping, got {zero!r}")
    if isinstance(zero, dict) and zero.get("offload_param") and zero.get("stage", 0) != 3:
        raise ValueError("invalid DeepSpeed config: zero_optimization.offload_param is only valid with ZeRO "
                         f"stage 3 (stage is {zero.get('stage', 0)})")

    import pydantic
    from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError

    try:
        DeepSpeedConfig(resolved)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                             for err in exc.errors())
        raise ValueError(f"invalid DeepSpeed config ({exc.title}): {problems}") from exc
    except (AssertionError, DeepSpeedConfigError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"invalid DeepSpeed config: {type(exc).__name__}: {exc}") from exc
