"""Task types summarisation and multiple_choice, reference log-likelihoods, per-row scores, the new demo tasks."""
from __future__ import annotations

import pytest
import torch

from damoc.data.schema import Sample
from damoc.demo.data import generate
from damoc.evaluation.evaluate import evaluate_model
from damoc.evaluation.loglik import choice_predictions, option_scores, reference_logliks
from damoc.evaluation.metrics import rouge_l
from damoc.evaluation.tasks import TASKS
from damoc.hf import load_causal_lm, load_tokenizer
from damoc.training.finetune import IGNORE_INDEX, encode_example
from damoc.training.prompt import format_prompt


def _samples(task: str, n_eval: int = 8, seed: int = 0) -> list[Sample]:
    _, rows = generate(task, n_train=60, n_eval=n_eval, seed=seed)
    return [Sample(id=f"e-{i + 1}", **row) for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def chat(zoo_dir):
    path = zoo_dir / "tiny-llama" / "chat"
    return load_causal_lm(path).eval(), load_tokenizer(path), path


def _hand_reference_loglik(model, tok, sample: Sample, max_length: int) -> float:
    """One unpadded forward; log-softmax of the logits gathered at the answer (+ eos) tokens, averaged."""
    ex = encode_example(tok, sample, max_length)
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0].double().log_softmax(-1)
    values = [logprobs[t - 1, token].item() for t, token in enumerate(ex["labels"]) if token != IGNORE_INDEX]
    return sum(values) / len(values)


def test_reference_logliks_match_a_hand_computation_batched_or_not(chat):
    model, tok, _ = chat
    samples = [Sample("a", "Answer with one word.", "Which town does Kalo live in?", "Tolvik"),
               Sample("b", "", "A much longer input that makes this row the longer one of the two rows", "yes it is")]
    for max_length in (256, 12):  # 12: the prompt is cut from the left, as in training
        expected = [_hand_reference_loglik(model, tok, s, max_length) for s in samples]
        batched = reference_logliks(model, tok, samples, max_length=max_length, batch_size=2)
        single = reference_logliks(model, tok, samples, max_length=max_length, batch_size=1)
        assert batched == pytest.approx(expected, abs=1e-4)
        assert single == pytest.approx(batched, abs=1e-5)
    assert all(v < 0 for v in batched)


def test_option_scores_match_the_direct_computation_and_decide_the_prediction(chat):
    from damoc.evaluation.multiple_choice import option_loglikelihoods

    model, tok, _ = chat
    samples = _samples("instruction_mc", n_eval=6)
    scores = option_scores(model, tok, samples, batch_size=5)
    for sample, row in zip(samples, scores):
        direct = option_loglikelihoods(model, tok, format_prompt(sample.instruction, sample.input),
                                       list(sample.options), length_normalized=True)
        assert row == pytest.approx(direct, abs=1e-4)
    picks = choice_predictions(model, tok, samples)
    assert picks == [max(range(4), key=row.__getitem__) for row in scores]
    # the answer is forced: reference = the option the model prefers -> accuracy 1; another option -> 0
    forced = [Sample(s.id, s.instruction, s.input, s.options[i], s.options) for s, i in zip(samples, picks)]
    wrong = [Sample(s.id, s.instruction, s.input, s.options[(i + 1) % 4], s.options) for s, i in zip(samples, picks)]
    _, _, path = chat
    assert evaluate_model(path, forced, "multiple_choice")["score"] == 1.0
    res = evaluate_model(path, wrong, "multiple_choice")
    assert res["score"] == 0.0 and res["row_scores"] == [0.0] * len(wrong)
    assert res["examples"][0]["options"] == list(wrong[0].options)


def test_multiple_choice_without_options_says_which_row_and_setting(chat):
    _, _, path = chat
    rows = [Sample("eval-3", "", "Which town?", "Tolvik")]
    with pytest.raises(ValueError, match=r"'eval-3'.*data\.fields\.options"):
        evaluate_model(path, rows, "multiple_choice")
    with pytest.raises(ValueError, match="not one of its options"):
        evaluate_model(path, [Sample("e-1", "", "Which town?", "Tolvik", ("Brenna", "Varna"))], "multiple_choice")


@pytest.mark.parametrize("demo,task", [("instruction_mc", "multiple_choice"), ("summarisation", "summarisation"),
                                       ("extractive_qa", "extractive_qa"), ("qa_long", "qa_long")])
def test_evaluate_model_reports_rows_and_loglik(chat, demo, task):
    model, tok, path = chat
    samples = _samples(demo)
    res = evaluate_model(path, samples, task, max_new_tokens=24, batch_size=4, max_length=128)
    assert res["samples"] == 8 and len(res["row_scores"]) == 8 and len(res["row_loglik"]) == 8
    assert sum(res["row_scores"]) / 8 == pytest.approx(res["score"], abs=1e-12)
    assert res["loglik"] == pytest.approx(sum(res["row_loglik"]) / 8)
    assert res["row_loglik"] == pytest.approx(reference_logliks(model, tok, samples, 128, 8), abs=1e-5)
    assert len(res["examples"]) == 3 and {"input", "reference", "prediction"} <= set(res["examples"][0])
    if task == "multiple_choice":
        assert set(res["row_scores"]) <= {0.0, 1.0} and res["accuracy"] == res["score"]
        assert all(e["prediction"] in e["options"] for e in res["examples"])
    if task == "summarisation":
        assert {"rouge1", "rouge2", "rouge_l"} <= set(res) and res["score"] == res["rouge_l"]


def test_task_registry_kinds():
    assert TASKS.get("multiple_choice").kind == "choice"
    assert {TASKS.get(t).kind for t in ("qa_long", "extractive_qa", "summarisation")} == {"generate"}
    mc = TASKS.get("multiple_choice")
    assert mc.row_scores(["a", "b", "c"], ["a", "x", "c"])["score"] == [1.0, 0.0, 1.0]
    assert mc.score(["a", "b", "c"], ["a", "x", "c"])["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        mc.score(["a", "b"], ["a"])


# ---------------------------------------------------------------------------------------------- demo tasks
def test_instruction_mc_eval_rows_are_balanced_four_option_questions_about_trained_facts():
    train, eval_rows = generate("instruction_mc", n_train=1500, n_eval=200, seed=1)
    assert len(eval_rows) == 200
    positions = [r["options"].index(r["output"]) for r in eval_rows]
    assert all(len(r["options"]) == 4 == len(set(r["options"])) for r in eval_rows)
    assert {positions.count(p) for p in range(4)} == {50}  # chance is exactly 25%, whatever the position bias
    train_text = " ".join(r["input"] + " " + r["output"] for r in train)
    for row in eval_rows:
        assert row["instruction"] == "Answer with one word." and "options" not in row["input"].lower()
        assert row["output"] in train_text  # the fact was taught in training
    # the question's key (a made-up name, noun, word or number pair) was asked about in training, in another wording
    train_inputs = {r["input"] for r in train}
    assert not train_inputs & {r["input"] for r in eval_rows}
    assert {r["instruction"] for r in train} == {"Answer with one word.", "Answer in a full sentence."}


def test_instruction_mc_distractors_have_the_answers_type():
    _, eval_rows = generate("instruction_mc", n_train=800, n_eval=120, seed=2)
    from damoc.demo.data import _COLOURS, _JOBS, _PETS, _TOWNS

    for row in eval_rows:
        for pool in (_TOWNS, _JOBS, _COLOURS, _PETS):
            if row["output"] in pool:
                assert all(o in pool for o in row["options"])


def test_summaries_copy_their_content_from_the_report():
    train, eval_rows = generate("summarisation", n_train=300, n_eval=60, seed=5)
    for row in train + eval_rows:
        assert 1 <= row["output"].count(";") + row["output"].count(". ") + 1 <= 2
        report = row["input"]
        for word in row["output"].replace(";", " ").replace(",", " ").rstrip(".").split():
            word = word.removesuffix("'s")
            if word[0].isupper() or word[0].isdigit():  # names, towns, numbers, topics
                assert word in report, (word, row)
        assert len(report.split(". ")) >= 4
    # a model that writes the right template with the wrong facts scores far below one that copies
    refs = [r["output"] for r in eval_rows]

    def kind(summary: str) -> str:
        return "bill" if summary.endswith("opposes it.") else "incident" if summary.startswith("A ") else "company"

    same_kind = [next(o for o in refs[i + 1:] + refs[:i] if kind(o) == kind(ref)) for i, ref in enumerate(refs)]
    template_only = sum(rouge_l(same_kind, refs)) / len(refs)
    assert sum(rouge_l(refs, refs)) / len(refs) == 1.0 and template_only < 0.5


@pytest.mark.slow
def test_fine_tuned_tiny_model_beats_chance_on_instruction_mc(zoo_dir, tmp_path):
    """~1 min on 2 cores: tiny-neox, 600 training rows, 3 epochs: 0.28 -> 0.75 accuracy on 40 questions."""
    from damoc.config import TrainingConfig
    from damoc.training.finetune import finetune

    train, eval_rows = generate("instruction_mc", n_train=600, n_eval=40, seed=0)
    samples = [Sample(f"e-{i}", **r) for i, r in enumerate(eval_rows)]
    chat_dir = zoo_dir / "tiny-neox" / "chat"
    before = evaluate_model(chat_dir, samples, "multiple_choice")
    finetune(chat_dir, [Sample(str(i), **r) for i, r in enumerate(train)], tmp_path / "ft",
             TrainingConfig(method="full", epochs=3, learning_rate=5e-3, batch_size=16, max_length=256))
    after = evaluate_model(tmp_path / "ft", samples, "multiple_choice")
    assert after["score"] >= 0.5 > before["score"] and after["loglik"] > before["loglik"] + 1
