"""SQuAD EM/F1 (official v1.1 rules), ROUGE-L F1, and MMLU-style multiple-choice scoring, on hand-checked values."""
from __future__ import annotations

import math
import string

import pytest

from damoc.evaluation.qa_metrics import (mean_rouge_l_f1, normalize_answer, rouge_l_f1, squad_em, squad_f1,
                                         squad_scores)


# ------------------------------------------------------------------------------------------------ SQuAD

@pytest.mark.parametrize("text, normalized", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("an apple a day", "apple day"),
    ("Another theory", "another theory"),            # articles only as whole words
    ("U.S.A.", "usa"),
    ("rock-n-roll", "rocknroll"),                   # punctuation is deleted, not replaced by a space
    ("  New\tYork\n  City ", "new york city"),
    ("“quoted”", "“quoted”"),                       # string.punctuation is ASCII only, as in the script
    ("THE", ""),
    ("", ""),
    ("the-end", "theend"),                          # punctuation goes first, so "the" is no longer a word
])
def test_squad_normalisation(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_edge_cases():
    assert squad_em("The Eiffel Tower!", "eiffel tower") == 1.0
    assert squad_em("an apple", "Apple.") == 1.0
    assert squad_em("rock-n-roll", "rock n roll") == 0.0
    assert squad_em("Paris", "Paris, France") == 0.0
    assert squad_em("", "Paris") == 0.0              # empty prediction
    assert squad_em("Paris", "") == 0.0              # empty reference
    assert squad_em("", "") == 1.0
    assert squad_em("The", "") == 1.0                # both normalise to ""


def test_f1_hand_computed():
    # "cat sat on mat" vs "cat on mat": 3 common, P = 3/4, R = 3/3 -> F1 = 2*(3/4)/(7/4) = 6/7
    assert squad_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # repeated tokens count once per match (bag intersection): P = 1/3, R = 1 -> 1/2
    assert squad_f1("paris paris paris", "Paris") == pytest.approx(0.5)
    # P = 2/2, R = 2/5 -> 2*(2/5)/(7/5) = 4/7
    assert squad_f1("Denver Broncos", "the Denver Broncos defeated the Carolina Panthers.") == \
        pytest.approx(2 * 1 * 0.4 / 1.4)
    assert squad_f1("totally wrong", "Paris") == 0.0


def test_f1_empty_cases_follow_v11():
    assert squad_f1("", "Paris") == 0.0
    assert squad_f1("Paris", "") == 0.0
    assert squad_f1("", "") == 0.0                  # v1.1: no common token -> 0 (v2.0 would give 1)
    assert squad_f1("a an the", "") == 0.0


def test_several_references_take_the_max():
    refs = ["Broncos", "Denver Broncos", "The Denver Broncos"]
    assert squad_em("denver broncos", refs) == 1.0 and squad_f1("denver broncos", refs) == 1.0
    # vs "Denver Broncos": 1 common, P = R = 1/2 -> 0.5; vs "Carolina Panthers": 0 -> max 0.5
    assert squad_f1("Broncos team", ["Denver Broncos", "Carolina Panthers"]) == pytest.approx(0.5)
    assert squad_em("Broncos team", ("Denver Broncos", "Carolina Panthers")) == 0.0
    assert squad_f1("", ["", "Paris"]) == 0.0 and squad_em("", ["", "Paris"]) == 1.0
    with pytest.raises(ValueError):
        squad_f1("x", [])
    with pytest.raises(TypeError):
        squad_em("x", [None])  # type: ignore[list-item]


def test_corpus_scores():
    scores = squad_scores(["Denver Broncos", "the cat sat on the mat", ""],
                          [["Denver Broncos", "Broncos"], "a cat on a mat", "Paris"])
    assert scores["count"] == 3
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 6 / 7 + 0) / 3)
    assert squad_scores([], [])["f1"] == 0.0
    with pytest.raises(ValueError):
        squad_scores(["a"], [])


# ------------------------------------------------------------------------------------------------ ROUGE-L

def test_rouge_l_with_stemmer_hand_computed():
    # tokens: [the, cat(s), are, sit(ting)] vs [the, cat, sat]; LCS = "the cat" = 2 -> P = 1/2, R = 2/3 -> 4/7.
    # Without the stemmer only "the" would match (2/7).
    assert rouge_l_f1("The cats are sitting", "the cat sat") == pytest.approx(4 / 7)
    assert rouge_l_f1("the cat sat", ["a dog barked", "The cat sat."]) == pytest.approx(1.0)
    assert rouge_l_f1("", "the cat sat") == 0.0
    assert rouge_l_f1("the cat sat", "") == 0.0
    assert mean_rouge_l_f1(["The cats are sitting", "x"], ["the cat sat", "y"]) == pytest.approx(2 / 7)
    assert mean_rouge_l_f1([], []) == 0.0


# ------------------------------------------------------------------------------------------------ multiple choice

@pytest.fixture(scope="module")
def tiny_lm(tiny_tokenizer_dir, tmp_path_factory):
    """A random 2-layer Llama (hidden 64) and its tokenizer, also saved as a checkpoint directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=1, num_key_value_heads=1, head_dim=64, intermediate_size=128,
                               max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                               tie_word_embeddings=False)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # larger logits than the default init, so options score clearly apart
        model.lm_head.weight.mul_(50)
    model.eval()
    path = tmp_path_factory.mktemp("mc_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok, path


def _hand_loglik(model, tok, prompt, option):
    """One unpadded forward per option; log-softmax and the sum written out token by token."""
    import torch

    ctx = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    cont = tok(option, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].double()
    total = 0.0
    for i, token in enumerate(cont):
        row = logits[len(ctx) + i - 1]
        total += (row[token] - torch.logsumexp(row, dim=0)).item()
    return total, len(cont)


ITEMS = [
    {"question": "What reduces fever?", "options": ["rest", "the treatment", "a river", "the old town"],
     "answer": 0, "subject": "clinical_knowledge"},
    {"question": "Where does the river flow?", "choices": ["past the market", "to the patient", "nowhere"],
     "answer": "B"},
    {"question": "How long does it take?", "options": ["two days", "one week", "a year", "never"], "answer": 3},
    {"question": "Which province is northern?", "options": ["the capital", "the bridge"], "answer": 1},
]


def test_option_loglikelihoods_match_a_hand_computation(tiny_lm):
    from damoc.evaluation.multiple_choice import as_item, mmlu_prompt, option_loglikelihoods

    model, tok, _ = tiny_lm
    prompt = mmlu_prompt(as_item(ITEMS[0]))
    assert prompt.startswith("The following are multiple choice questions (with answers) about clinical "
                             "knowledge.\n\nWhat reduces fever?\nA. rest\nB. the treatment\n")
    assert prompt.endswith("D. the old town\nAnswer:")
    options = [" A", " B", " C", " D", " the treatment reduces fever", " rest"]
    got = option_loglikelihoods(model, tok, prompt, options)
    got_norm = option_loglikelihoods(model, tok, prompt, options, length_normalized=True)
    for option, value, norm in zip(options, got, got_norm):
        expected, n_tokens = _hand_loglik(model, tok, prompt, option)
        assert value == pytest.approx(expected, abs=1e-4)
        assert norm == pytest.approx(expected / n_tokens, abs=1e-4)
        assert value < 0
    assert len(set(round(v, 3) for v in got)) > 1  # the options really score differently
    with pytest.raises(ValueError):
        option_loglikelihoods(model, tok, prompt, [])
    with pytest.raises(ValueError):
        option_loglikelihoods(model, tok, prompt, [" A", ""])


def test_uniform_model_scores_are_exact(tiny_lm, tiny_tokenizer_dir):
    """lm_head = 0 -> uniform next-token distribution -> an option of n tokens scores exactly -n*log(V)."""
    import copy

    import torch

    from damoc.evaluation.multiple_choice import mc_predictions, option_loglikelihoods

    model, tok, _ = tiny_lm
    uniform = copy.deepcopy(model)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()
    vocab = uniform.config.vocab_size
    options = [" the treatment reduces fever within two days", " rest", " a river flows"]
    lengths = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in options]
    scores = option_loglikelihoods(uniform, tok, "Question: what helps?\nAnswer:", options)
    assert scores == pytest.approx([-n * math.log(vocab) for n in lengths], abs=1e-4)
    # Sum of log-probs favours the option with the fewest tokens; per-token means all tie -> the first.
    item = {"question": "what helps?", "options": [o.strip() for o in options], "answer": 0}
    assert mc_predictions(uniform, tok, [item], style="text") == [lengths.index(min(lengths))]
    assert mc_predictions(uniform, tok, [item], style="text", length_normalized=True) == [0]


def test_mc_accuracy_against_hand_predictions(tiny_lm):
    from damoc.evaluation.multiple_choice import as_item, mc_accuracy, mc_predictions, mmlu_prompt

    model, tok, path = tiny_lm
    items = [as_item(i) for i in ITEMS]
    hand = []
    for item in items:
        scores = [_hand_loglik(model, tok, mmlu_prompt(item), f" {string.ascii_uppercase[k]}")[0]
                  for k in range(len(item.options))]
        hand.append(max(range(len(scores)), key=scores.__getitem__))
    assert mc_predictions(model, tok, items) == hand
    # Make the model right on exactly the first three items.
    keyed = [dict(question=i.question, options=list(i.options), subject=i.subject,
                  answer=(h if k < 3 else (h + 1) % len(i.options))) for k, (i, h) in enumerate(zip(items, hand))]
    assert mc_accuracy(path, keyed) == pytest.approx(0.75)
    assert mc_accuracy(path, []) == 0.0


def test_item_parsing():
    from damoc.evaluation.multiple_choice import MCItem, as_item

    assert as_item(ITEMS[1]).answer == 1 and as_item(ITEMS[1]).options[0] == "past the market"
    for bad in ({"question": "q", "options": ["a"], "answer": 0},
                {"question": "q", "options": ["a", "b"], "answer": 2},
                {"question": "q", "options": ["a", "b"]}):
        with pytest.raises(ValueError):
            as_item(bad)
    assert MCItem("q", ("a", "b"), 1).answer == 1
