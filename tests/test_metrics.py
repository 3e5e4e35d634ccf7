import pytest

from damoc.evaluation.metrics import bertscore_f1, normalize_answer, rouge_l, squad_f1, task_scores


def test_squad_normalisation_and_f1_known_values():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_f1("the cat sat", "a cat sat on the mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert squad_f1("Paris", "paris.") == 1.0
    assert squad_f1("London", "Paris") == 0.0
    assert squad_f1("", "") == 1.0 and squad_f1("x", "") == 0.0


def test_rouge_l_known_value():
    # LCS("the cat sat", "the cat sat on the mat") = 3; P = 1, R = 0.5
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"])[0] == pytest.approx(2 / 3)


def test_bertscore_orders_paraphrase_above_unrelated():
    same, para, other = bertscore_f1(["fever and cough", "a high fever with coughing", "the bridge is closed"],
                                     ["fever and cough"] * 3)
    assert same == pytest.approx(1.0, abs=1e-4) and same > para > other
    assert bertscore_f1([""], ["x"]) == [0.0]


def test_task_scores_combine_as_documented():
    s = task_scores("qa_long", ["the fever lasts two days"], ["the fever lasts two days"])
    assert s["score"] == pytest.approx((s["bertscore_f1"] + s["rouge_l"]) / 2) and s["rouge_l"] == 1.0
    assert task_scores("extractive_qa", ["Paris"], ["paris"])["score"] == 1.0
    with pytest.raises(ValueError):
        task_scores("mmlu", [], [])


def test_rouge_n_l_known_values_and_summarisation_task():
    from damoc.evaluation.metrics import rouge_n_l, task_row_scores

    r = rouge_n_l(["the cat sat"], ["the cat sat on the mat"])
    # unigrams: 3 of 3 predicted, 3 of 6 reference; bigrams: 2 of 2, 2 of 5
    assert r["rouge1"][0] == pytest.approx(2 / 3) and r["rouge2"][0] == pytest.approx(2 * 0.4 / 1.4)
    assert r["rouge_l"][0] == pytest.approx(2 / 3)
    s = task_scores("summarisation", ["the cat sat", "a dog"], ["the cat sat on the mat", "a dog"])
    assert s["score"] == s["rouge_l"] == pytest.approx((2 / 3 + 1) / 2) and set(s) >= {"rouge1", "rouge2"}
    rows = task_row_scores("summarisation", ["the cat sat", "a dog"], ["the cat sat on the mat", "a dog"])
    assert sum(rows["score"]) / 2 == pytest.approx(s["score"])


def test_per_row_scores_average_to_the_score():
    from damoc.evaluation.metrics import task_row_scores

    preds, refs = ["Paris", "the town", "no"], ["paris", "a town hall", "yes"]
    rows = task_row_scores("extractive_qa", preds, refs)
    assert sum(rows["score"]) / 3 == pytest.approx(task_scores("extractive_qa", preds, refs)["score"])
    assert task_scores("multiple_choice", ["b", "c"], ["b", "d"])["score"] == 0.5
    qa = task_row_scores("qa_long", ["fever and cough", "x"], ["fever and cough", "the bridge"])
    assert qa["score"][0] == pytest.approx((qa["bertscore_f1"][0] + qa["rouge_l"][0]) / 2)
