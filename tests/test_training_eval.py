"""Fine-tuning (full, LoRA) and evaluation on tiny checkpoints: real Trainer, real generation."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from damoc.data.schema import Sample
from damoc.evaluation.evaluate import evaluate_model
from damoc.evaluation.generate import generate_answers
from damoc.config import TrainingConfig
from damoc.hf import load_tokenizer
from damoc.training.finetune import IGNORE_INDEX, encode_example, finetune

SAMPLES = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
           for i, w in enumerate(["river", "market", "bridge", "fever", "town", "patient"] * 4)]


def test_labels_mask_the_prompt(tiny_pair):
    tok = load_tokenizer(tiny_pair[1])
    ex = encode_example(tok, SAMPLES[0], max_length=128)
    answer = tok("river", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(ex["input_ids"]) - len(answer)
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == answer == ex["input_ids"][n_prompt:]
    short = encode_example(tok, SAMPLES[0], max_length=8)
    assert len(short["input_ids"]) == 8 and any(t != IGNORE_INDEX for t in short["labels"])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_lowers_loss_and_saves_plain_checkpoint(tiny_pair, tmp_path, method):
    out = tmp_path / method
    settings = TrainingConfig(method=method, epochs=3, learning_rate=3e-3 if method == "full" else 1e-2,
                             batch_size=8, max_length=64)
    stats = finetune(tiny_pair[1], SAMPLES, out, settings)
    assert stats["steps"] == 9 and stats["samples"] == len(SAMPLES) and stats["loss_is_finite"]
    if method == "lora":
        assert stats["trainable_params"] < stats["params"] / 5
    else:
        assert stats["trainable_params"] == stats["params"]
    assert not (out / "adapter_config.json").exists()  # merged, a normal checkpoint
    before = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    after = AutoModelForCausalLM.from_pretrained(out)
    tok = load_tokenizer(out)
    batch = [encode_example(tok, s, 64) for s in SAMPLES[:6]]

    def loss(model):
        with torch.no_grad():
            return sum(model(input_ids=torch.tensor([b["input_ids"]]),
                             labels=torch.tensor([b["labels"]])).loss.item() for b in batch)
    assert loss(after) < loss(before) - 0.5


def test_generation_and_evaluation(tiny_pair):
    answers = generate_answers(tiny_pair[1], SAMPLES[:5], max_new_tokens=5, batch_size=2)
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    res = evaluate_model(tiny_pair[1], SAMPLES[:4], "extractive_qa", max_new_tokens=4, batch_size=4)
    assert 0.0 <= res["score"] <= 1.0 and res["samples"] == 4 and len(res["examples"]) == 3


# ------------------------------------------------------------------ optimizer / schedule settings, resume

class _Capture:
    """A TrainerCallback recording the arguments, warmup and optimizer the Trainer actually used."""

    def __init__(self):
        self.seen = {}

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kw):
        group = optimizer.param_groups[0]
        self.seen = {"args": args, "betas": group["betas"], "eps": group["eps"],
                     "weight_decay": max(g["weight_decay"] for g in optimizer.param_groups),
                     "warmup": args.get_warmup_steps(state.max_steps), "max_steps": state.max_steps}

    def __getattr__(self, name):  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def test_optimizer_and_schedule_settings_reach_the_trainer(tiny_pair, tmp_path):
    from damoc.training.finetune import resolve_precision

    cap = _Capture()
    settings = TrainingConfig(max_steps=40, batch_size=8, gradient_accumulation_steps=2, max_length=32,
                              lr_scheduler="linear", warmup_ratio=0.1, weight_decay=0.01, adam_beta1=0.8,
                              adam_beta2=0.99, adam_epsilon=1e-6, learning_rate=1e-3)
    stats = finetune(tiny_pair[1], SAMPLES[:8], tmp_path / "m", settings, callbacks=[cap])
    args = cap.seen["args"]
    assert args.lr_scheduler_type == "linear" and args.gradient_accumulation_steps == 2
    assert args.per_device_train_batch_size == 4 and stats["effective_batch_size"] == 8
    assert cap.seen["warmup"] == 4 and cap.seen["max_steps"] == 40  # ceil(0.1 x 40)
    assert cap.seen["betas"] == (0.8, 0.99) and cap.seen["eps"] == 1e-6 and cap.seen["weight_decay"] == 0.01
    assert not args.bf16 and not args.fp16 and stats["precision"] == "fp32" == resolve_precision("auto")
    assert stats["steps"] == 40 and stats["resumed_from_step"] is None
    for key in ("train_seconds", "load_seconds", "save_seconds"):
        assert 0 <= stats[key] <= stats["wall_seconds"]
    # Defaults: what the Trainer had hard-coded before these settings existed (cosine, 3% warmup, no decay).
    d = TrainingConfig()
    assert (d.lr_scheduler, d.warmup_ratio, d.weight_decay, d.adam_beta1, d.adam_beta2, d.max_grad_norm,
            d.gradient_accumulation_steps, d.precision, d.deepspeed, d.save_steps) == \
        ("cosine", 0.03, 0.0, 0.9, 0.999, 1.0, 1, "auto", None, None)


def test_bad_training_settings_are_refused(tiny_pair, tmp_path):
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="not divisible by gradient_accumulation_steps"):
        TrainingConfig(batch_size=6, gradient_accumulation_steps=4)
    with pytest.raises(pydantic.ValidationError, match="deepspeed_offload needs"):
        TrainingConfig(deepspeed_offload=True)
    with pytest.raises(pydantic.ValidationError):
        TrainingConfig(warmup_ratio=1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
            finetune(tiny_pair[1], SAMPLES, tmp_path / "m", TrainingConfig(precision="fp16"))


def test_gradient_checkpointing_trains(tiny_pair, tmp_path):
    for method in ("full", "lora"):
        stats = finetune(tiny_pair[1], SAMPLES[:8], tmp_path / method,
                         TrainingConfig(method=method, max_steps=2, batch_size=4, max_length=32,
                                        gradient_checkpointing=True))
        assert stats["steps"] == 2 and stats["loss_is_finite"]


class _Preempt(_Capture):
    """Raises right after the checkpoint of step `at` was written, like a pod killed mid-run."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_save(self, args, state, control, **kw):
        if state.global_step >= self.at:
            raise KeyboardInterrupt("preempted")


def test_interrupted_run_resumes_from_its_checkpoint(tiny_pair, tmp_path):
    from damoc.training.finetune import scratch_dir

    out = tmp_path / "model"
    settings = TrainingConfig(max_steps=6, batch_size=4, max_length=32, save_steps=2, learning_rate=3e-3)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_pair[1], SAMPLES, out, settings, callbacks=[_Preempt(at=4)])
    assert not out.exists()
    runs = list(scratch_dir(out).glob("run-*/checkpoint-*"))
    assert sorted(p.name for p in runs) == ["checkpoint-2", "checkpoint-4"]

    resumed = finetune(tiny_pair[1], SAMPLES, out, settings)
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 6
    assert out.is_dir() and not scratch_dir(out).exists()  # checkpoints go once the model is saved

    # Same step count as an uninterrupted run, and (one process, fixed seeds) the same weights.
    whole = finetune(tiny_pair[1], SAMPLES, tmp_path / "whole", settings)
    assert whole["steps"] == resumed["steps"] == 6 and whole["resumed_from_step"] is None
    a = AutoModelForCausalLM.from_pretrained(out).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_checkpoints_of_other_settings_are_not_resumed(tiny_pair, tmp_path):
    out = tmp_path / "model"
    settings = TrainingConfig(max_steps=4, batch_size=4, max_length=32, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_pair[1], SAMPLES, out, settings, callbacks=[_Preempt(at=2)])
    changed = settings.model_copy(update={"learning_rate": 5e-4})
    assert finetune(tiny_pair[1], SAMPLES, out, changed)["resumed_from_step"] is None


# ------------------------------------------------------------------ prompts: the candidate's own chat template

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NO_SYSTEM = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}<turn>{{ m['content'] }}</turn>"
             "{% endfor %}{% if add_generation_prompt %}<model>{% endif %}")


def _tok_with(tiny_pair, template):
    tok = load_tokenizer(tiny_pair[1])
    tok.chat_template = template
    return tok


def test_chat_template_prompts_are_shared_by_training_and_evaluation(tiny_pair):
    from damoc.training.prompt import encode_prompt, format_prompt, prompt_text

    s = Sample(id="1", instruction="Answer briefly.", input="what is the capital", output="the river town")
    tok = _tok_with(tiny_pair, CHATML)
    text = prompt_text(tok, s.instruction, s.input)
    assert text == ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nwhat is the capital"
                    "<|im_end|>\n<|im_start|>assistant\n")
    ex = encode_example(tok, s, 256)
    n_prompt = ex["labels"].count(IGNORE_INDEX)
    # What evaluation feeds the model (encode_prompt with its own budget) is the training prompt, token for token.
    assert ex["input_ids"][:n_prompt] == encode_prompt(tok, s.instruction, s.input, 384)
    assert ex["input_ids"][0] == tok.bos_token_id and ex["input_ids"][1] != tok.bos_token_id
    # Off, or no template: the plain format, exactly as before chat templates were used.
    assert prompt_text(tok, s.instruction, s.input, chat_template=False) == format_prompt(s.instruction, s.input)
    plain = load_tokenizer(tiny_pair[1])
    assert getattr(plain, "chat_template", None) is None
    assert encode_example(plain, s, 256) == encode_example(tok, s, 256, chat_template=False)
    # A template that renders BOS itself and refuses a system turn: BOS once, instruction folded into the user turn.
    tok2 = _tok_with(tiny_pair, NO_SYSTEM)
    assert prompt_text(tok2, s.instruction, s.input).endswith("<turn>Answer briefly.\n\nwhat is the capital</turn>"
                                                              "<model>")
    ids = encode_prompt(tok2, s.instruction, s.input, 384)
    assert ids[0] == tok2.bos_token_id and ids[1] != tok2.bos_token_id


def test_truncated_prompts_keep_bos_and_their_end(tiny_pair):
    from damoc.training.prompt import encode_prompt

    tok = _tok_with(tiny_pair, CHATML)
    s = Sample(id="1", instruction="", input="the patient reported a mild headache " * 20, output="rest")
    full = encode_prompt(tok, s.instruction, s.input, 10_000)
    cut = encode_prompt(tok, s.instruction, s.input, 16)
    assert len(cut) == 16 and cut[0] == tok.bos_token_id and cut[1:] == full[-15:]
    ex = encode_example(tok, s, 24)
    assert len(ex["input_ids"]) == 24 and ex["input_ids"][0] == tok.bos_token_id
    assert ex["labels"][-2:] != [IGNORE_INDEX] * 2  # the answer survives
