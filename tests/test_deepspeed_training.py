"""DeepSpeed configs (validated by DeepSpeed's own classes) and real ZeRO training through the HF Trainer on CPU.

Training runs in a subprocess: DeepSpeed initialises a torch.distributed process group (gloo) and keeps global
state (accelerator, comm backend, the HF "deepspeed is active" flag) that would leak into other tests.

Cost: the first DeepSpeed run on a machine JIT-compiles the CPU shared-memory comm op (~60-70 s on 2 cores) and,
with optimizer offload, DeepSpeedCPUAdam (~130 s) into $TORCH_EXTENSIONS_DIR (default .cache/torch_extensions).
Once compiled, a ZeRO-3 run takes ~10 s. The ZeRO-3 test is therefore marked slow only while the comm op is
not compiled yet; the offload test is always slow.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from damoc.training.deepspeed_config import deepspeed_config, effective_batch, validate_deepspeed_config

REPO = Path(__file__).resolve().parents[1]
EXT_DIR = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or REPO / ".cache" / "torch_extensions")
_COMM_OP_BUILT = (EXT_DIR / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").exists()
#: Slow (> 60 s) only when the comm op still has to be compiled; see the module docstring.
slow_until_compiled = pytest.mark.slow if not _COMM_OP_BUILT else (lambda f: f)

TEXTS = ["the patient reported a mild headache and was given rest and fluids",
         "a river flows through the old town past the market and the bridge",
         "the treatment reduces fever within two days in most adults",
         "answer the question using the context given below"] * 8


# ------------------------------------------------------------------------------------------------ configs

def test_effective_batch():
    assert effective_batch(4, 8, 2) == 64  # the paper's batch 64, e.g. 2 GPUs x 4 x 8
    assert effective_batch(1, 1, 1) == 1
    for bad in ((0, 1, 1), (1, -1, 1), (1, 1, 1.5), (True, 1, 1)):
        with pytest.raises(ValueError):
            effective_batch(*bad)


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("world_size", [1, 8])
def test_generated_configs_pass_deepspeed_validation(stage, world_size):
    for kwargs in (dict(bf16=False, gradient_accumulation_steps="auto", micro_batch_size="auto"),
                   dict(bf16=True, gradient_accumulation_steps=8, micro_batch_size=1, offload_optimizer=True),
                   dict(bf16="auto", gradient_accumulation_steps=2, micro_batch_size=4, gradient_clipping="auto")):
        if stage == 3:
            kwargs = {**kwargs, "offload_params": kwargs.get("offload_optimizer", False)}
        cfg = deepspeed_config(stage, **kwargs)
        json.dumps(cfg)  # what TrainingArguments(deepspeed=path) would read back
        assert cfg["zero_optimization"]["stage"] == stage
        validate_deepspeed_config(cfg, world_size=world_size)
        explicit = {**cfg, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                    "train_batch_size": effective_batch(2, 4, world_size)}
        validate_deepspeed_config(explicit, world_size=world_size)


def test_config_contents():
    z3 = deepspeed_config(3, bf16=True, gradient_accumulation_steps="auto", micro_batch_size="auto",
                          offload_optimizer=True, offload_params=True)
    zero = z3["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["reduce_bucket_size"] == zero["stage3_prefetch_bucket_size"] == "auto"
    assert z3["train_batch_size"] == "auto" and z3["bf16"] == {"enabled": True}
    assert z3["optimizer"]["type"] == "AdamW"  # offload needs DeepSpeed's CPU Adam
    z2 = deepspeed_config(2, bf16=False, gradient_accumulation_steps=4, micro_batch_size=2, gradient_clipping=0.5)
    assert "optimizer" not in z2 and "offload_optimizer" not in z2["zero_optimization"]
    assert not any(k.startswith("stage3_") for k in z2["zero_optimization"])
    assert (z2["gradient_accumulation_steps"], z2["train_micro_batch_size_per_gpu"], z2["gradient_clipping"]) == \
        (4, 2, 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stage=1), "stage must be 2 or 3"),
    (dict(stage=2, offload_params=True), "needs ZeRO stage 3"),
    (dict(stage=3, fp16=True, bf16=True), "bf16 and fp16"),
    (dict(stage=3, micro_batch_size=0), "micro_batch_size"),
    (dict(stage=3, gradient_clipping=-1.0), "gradient_clipping"),
    (dict(stage=3, optimizer="SGD"), "optimizer"),
])
def test_builder_rejects_impossible_settings(kwargs, match):
    base = dict(bf16=False, gradient_accumulation_steps="auto", micro_batch_size="auto")
    with pytest.raises(ValueError, match=match):
        deepspeed_config(**{**base, **kwargs})


def _z3():
    return deepspeed_config(3, bf16=True, gradient_accumulation_steps=4, micro_batch_size=2)


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c["zero_optimization"].update(stage3_prefetch_bucketsize=100), "Extra inputs are not permitted"),
    (lambda c: c["zero_optimization"].update(stage=4), "stage"),
    (lambda c: c["zero_optimization"].update(offload_optimizer={"device": "gpu"}), "offload_optimizer.device"),
    (lambda c: c["zero_optimization"].update(reduce_bucket_size=-5), "reduce_bucket_size"),
    (lambda c: c.update(train_batch_size=10), r"train_batch_size=10 != .* world_size=1 \(= 8\)"),
    (lambda c: c.update(fp16={"enabled": True}), "bfloat16 and fp16"),
    (lambda c: c.update(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    (lambda c: c.update(elasticity={"enabled": True}), "Elastic training has been removed"),
    (lambda c: c.update(zero_optimization={"stage": 2, "offload_param": {"device": "cpu"}}),
     "offload_param is only valid with ZeRO stage 3"),
])
def test_invalid_configs_fail_validation(mutate, match):
    cfg = _z3()
    mutate(cfg)
    with pytest.raises(ValueError, match=match):
        validate_deepspeed_config(cfg)


def test_batch_arithmetic_depends_on_world_size():
    cfg = {**_z3(), "train_batch_size": 64}  # 2 x 4 x 8 GPUs
    validate_deepspeed_config(cfg, world_size=8)
    with pytest.raises(ValueError, match="world_size=4"):
        validate_deepspeed_config(cfg, world_size=4)
    with pytest.raises(ValueError, match="world_size"):
        validate_deepspeed_config(cfg, world_size=0)
    with pytest.raises(ValueError, match="expected a dict"):
        validate_deepspeed_config("ds_config.json")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ training

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_config(tokenizer_dir: str):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tok, AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, head_dim=64, intermediate_size=128, max_position_embeddings=64,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False)


def _batch(tok):
    import torch

    enc = [tok(t, add_special_tokens=False)["input_ids"][:24] for t in TEXTS]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    labels = torch.full((len(enc), width), -100)
    for i, e in enumerate(enc):
        ids[i, :len(e)] = torch.tensor(e)
        labels[i, :len(e)] = torch.tensor(e)
    return {"input_ids": ids, "labels": labels, "attention_mask": (labels != -100).long()}


def _worker(spec: dict) -> dict:
    """Runs in the subprocess: train a random tiny Llama with the given DeepSpeed config, save, report."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    tok, cfg = _model_config(spec["tokenizer_dir"])
    full = _batch(tok)
    rows = [{k: v[i] for k, v in full.items()} for i in range(len(TEXTS))]

    def collate(batch):
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    # TrainingArguments first: with ZeRO-3 it enables zero.Init, so from_config partitions at construction.
    args = TrainingArguments(output_dir=spec["out"], use_cpu=True, deepspeed=spec["ds_config"],
                             per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             max_steps=spec["steps"], learning_rate=3e-3, lr_scheduler_type="constant",
                             logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    result = trainer.train()
    engine = trainer.model_wrapped
    trainer.save_model(spec["out"] + "/final")
    return {"steps": result.global_step, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "engine": type(engine).__name__, "zero_stage": engine.zero_optimization_stage(),
            "accum": engine.gradient_accumulation_steps(), "train_batch_size": engine.train_batch_size(),
            "optimizer": type(engine.optimizer).__name__,
            "offload": bool(engine.zero_cpu_offload()) if hasattr(engine, "zero_cpu_offload") else None}


def _train_in_subprocess(tmp_path: Path, tokenizer_dir: Path, ds_config: dict, steps: int = 8) -> tuple[dict, float]:
    validate_deepspeed_config(ds_config)
    spec = {"tokenizer_dir": str(tokenizer_dir), "out": str(tmp_path / "run"), "ds_config": ds_config,
            "steps": steps}
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1", "TORCH_EXTENSIONS_DIR": str(EXT_DIR), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, f"training subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    print(f"DeepSpeed ZeRO-{result['zero_stage']} training subprocess: {elapsed:.1f} s")
    return result, elapsed


def _check_trained(result: dict, out: Path, tokenizer_dir: Path, stage: int, steps: int = 8) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    assert result["engine"] == "DeepSpeedEngine" and result["zero_stage"] == stage
    assert result["steps"] == steps and len(result["losses"]) == steps
    assert result["accum"] == 2 and result["train_batch_size"] == effective_batch(4, 2, 1)
    assert all(math.isfinite(x) for x in result["losses"])
    assert result["losses"][-1] < result["losses"][0] - 0.5, result["losses"]
    # The saved checkpoint is an ordinary HF one (ZeRO-3: gathered on save), holding the trained weights.
    tok, cfg = _model_config(str(tokenizer_dir))
    trained = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32)
    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_config(cfg)
    for name, p in fresh.state_dict().items():
        assert trained.state_dict()[name].shape == p.shape, name
    batch = _batch(tok)
    with torch.no_grad():
        trained_loss, fresh_loss = trained(**batch).loss.item(), fresh(**batch).loss.item()
    assert trained_loss < fresh_loss - 0.5, (trained_loss, fresh_loss)


@slow_until_compiled
def test_zero3_trains_a_tiny_model_through_the_hf_trainer(tmp_path, tiny_tokenizer_dir):
    ds = deepspeed_config(3, bf16=False, gradient_accumulation_steps="auto", micro_batch_size="auto")
    result, _ = _train_in_subprocess(tmp_path, tiny_tokenizer_dir, ds)
    _check_trained(result, tmp_path / "run", tiny_tokenizer_dir, stage=3)
    assert result["optimizer"] == "DeepSpeedZeroOptimizer_Stage3"


@pytest.mark.slow
def test_zero2_with_optimizer_offload_trains(tmp_path, tiny_tokenizer_dir):
    """ZeRO-2 + CPU optimizer offload with DeepSpeed's AdamW (DeepSpeedCPUAdam, JIT-compiled on first use)."""
    ds = deepspeed_config(2, bf16=False, gradient_accumulation_steps=2, micro_batch_size=4, offload_optimizer=True)
    result, _ = _train_in_subprocess(tmp_path, tiny_tokenizer_dir, ds)
    _check_trained(result, tmp_path / "run", tiny_tokenizer_dir, stage=2)
    assert result["optimizer"] == "DeepSpeedZeroOptimizer" and result["offload"] is True


# ------------------------------------------------------------------------ the project's own training path

def _launch_through_finetune(tmp_path, tiny_pair, monkeypatch, **settings):
    """TrainingConfig(deepspeed=...) through the torchrun launcher and damoc.training.worker: the code path a
    GPU pod runs (DeepSpeed inside the HF Trainer), here on CPU with gloo."""
    import torch
    from transformers import AutoModelForCausalLM

    from damoc.config import TrainingConfig
    from damoc.data.schema import Sample
    from damoc.training.finetune import encode_example
    from damoc.training.launchers import LAUNCHERS
    from damoc.hf import load_tokenizer

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(EXT_DIR))
    samples = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
               for i, w in enumerate(["river", "market", "bridge", "fever"] * 6)]
    cfg = TrainingConfig(**{"launcher": "torchrun", "epochs": 3, "batch_size": 8, "max_length": 64,
                            "learning_rate": 3e-3, **settings})
    out = tmp_path / "model"
    stats = LAUNCHERS.get("torchrun").train(tiny_pair[1], samples, out, cfg)
    assert stats["engine"] == "DeepSpeedEngine" and stats["deepspeed"] == cfg.deepspeed
    assert stats["steps"] == 9 and stats["loss_is_finite"] and stats["precision"] == "fp32"
    tok = load_tokenizer(out)
    batch = [encode_example(tok, s, 64) for s in samples[:8]]

    def loss(model):
        with torch.no_grad():
            return sum(model(input_ids=torch.tensor([b["input_ids"]]),
                             labels=torch.tensor([b["labels"]])).loss.item() for b in batch)
    before, after = AutoModelForCausalLM.from_pretrained(tiny_pair[1]), AutoModelForCausalLM.from_pretrained(out)
    assert not (out / "adapter_config.json").exists()  # a plain, merged checkpoint
    assert loss(after) < loss(before) - 0.5
    return stats


@slow_until_compiled
def test_training_config_zero3_trains_through_torchrun_and_the_worker(tmp_path, tiny_pair, monkeypatch):
    """~15 s once the comm op is compiled."""
    stats = _launch_through_finetune(tmp_path, tiny_pair, monkeypatch, deepspeed="zero3", processes=1)
    assert stats["world_size"] == 1 and stats["micro_batch_size"] == 8


@pytest.mark.slow
def test_training_config_zero3_lora_on_two_processes(tmp_path, tiny_pair, monkeypatch):
    """~25 s: ZeRO-3 partitions over 2 gloo processes; the LoRA adapter is gathered and merged on rank 0."""
    stats = _launch_through_finetune(tmp_path, tiny_pair, monkeypatch, deepspeed="zero3", processes=2,
                                     method="lora", learning_rate=1e-2)
    assert stats["world_size"] == 2 and stats["micro_batch_size"] == 4
    assert stats["trainable_params"] < stats["params"] / 5


def test_deepspeed_settings_build_a_validated_config():
    from damoc.config import TrainingConfig
    from damoc.training.finetune import deepspeed_settings

    assert deepspeed_settings(TrainingConfig(), "fp32", 1) is None
    z3 = deepspeed_settings(TrainingConfig(deepspeed="zero3", deepspeed_offload=True), "bf16", 8)
    zero = z3["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == "cpu" and z3["bf16"] == {"enabled": True}
    assert z3["train_batch_size"] == "auto" and z3["gradient_clipping"] == "auto"
    z2 = deepspeed_settings(TrainingConfig(deepspeed="zero2"), "fp32", 2)
    assert z2["zero_optimization"]["stage"] == 2 and "optimizer" not in z2


if __name__ == "__main__":  # the training subprocess
    print("RESULT " + json.dumps(_worker(json.loads(sys.argv[1]))), flush=True)
