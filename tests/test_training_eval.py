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
