"""The learning-curve callback: points at the chosen steps, the last one equal to the saved model's loglik."""
from __future__ import annotations

import pytest

from damoc.data.schema import Sample
from damoc.training.curve_callback import LoglikCurveCallback, even_steps

TRAIN = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
         for i, w in enumerate(["river", "market", "bridge", "fever", "town", "patient"] * 4)]
EVAL = [Sample(id=f"e{i}", instruction="Repeat the word.", input=f"word {w}", output=w)
        for i, w in enumerate(["river", "town", "doctor", "bridge", "market"])]


def test_even_steps():
    assert even_steps(15, 4) == [4, 8, 11, 15]
    assert even_steps(8, 4) == [2, 4, 6, 8]
    assert even_steps(2, 4) == [1, 2]  # fewer steps than points: each step once
    with pytest.raises(ValueError):
        even_steps(0, 4)


def test_callback_records_curve_and_last_point_matches_saved_checkpoint(tmp_path, tiny_pair):
    from damoc.config import TrainingConfig
    from damoc.evaluation.evaluate import evaluate_model
    from damoc.hf import load_tokenizer
    from damoc.training.finetune import encode_example, finetune

    tok = load_tokenizer(tiny_pair[1])
    epoch_tokens = sum(len(encode_example(tok, s, 32)["input_ids"]) for s in TRAIN)
    cb = LoglikCurveCallback(tok, EVAL, k=3, max_length=32, batch_size=4, train_tokens=epoch_tokens)
    settings = TrainingConfig(epochs=2, batch_size=4, max_length=32, learning_rate=3e-3)  # 6 steps per epoch
    stats = finetune(tiny_pair[1], TRAIN, tmp_path / "m", settings, callbacks=[cb])
    assert stats["steps"] == 12
    assert [p.step for p in cb.points] == [4, 8, 12]
    assert [p.tokens_seen for p in cb.points] == [round(epoch_tokens * e) for e in (2 / 3, 4 / 3, 2)]
    scored = sum(sum(1 for x in encode_example(tok, s, 32)["labels"] if x != -100) for s in EVAL)
    assert all(p.scored_tokens == scored and p.seconds > 0 for p in cb.points)
    # training lowers the loss on rows like the training rows: the curve rises
    assert cb.points[0].loglik < cb.points[-1].loglik
    ev = evaluate_model(tmp_path / "m", EVAL, "qa_long", max_length=32, batch_size=4, predict=False)
    assert cb.points[-1].loglik == pytest.approx(ev["loglik"], abs=1e-4)


def test_callback_needs_steps_or_k():
    with pytest.raises(ValueError, match="exactly one"):
        LoglikCurveCallback(None, EVAL)


def test_finetune_step_runs_the_callbacks_in_process_and_other_launchers_refuse_them(tmp_path, tiny_pair):
    from damoc.config import parse_config
    from damoc.data.records import write_samples
    from damoc.hf import load_tokenizer
    from damoc.workflow.candidate_steps import finetune_step, prune_step

    data = tmp_path / "train.jsonl"
    write_samples(TRAIN, data)
    cand = {"name": "tiny", "path": str(tiny_pair[1]), "base_path": str(tiny_pair[0])}

    def cfg(launcher):
        return parse_config({"mode": "damoc", "data": {"train": str(data), "eval": str(data), "task": "qa_long"},
                             "candidates": [cand], "pruning": {"enabled": False},
                             "training": {"epochs": 1, "batch_size": 4, "max_length": 32, "launcher": launcher}})

    prune_step(cfg("in_process"), cand, data, tmp_path / "pruned", progress=False)
    cb = LoglikCurveCallback(load_tokenizer(tiny_pair[1]), EVAL, k=2, max_length=32, batch_size=4)
    with pytest.raises(ValueError, match="need training.launcher: in_process"):
        finetune_step(cfg("torchrun"), cand, tmp_path / "pruned", data, tmp_path / "t0", progress=False,
                      callbacks=[cb])
    result = finetune_step(cfg("in_process"), cand, tmp_path / "pruned", data, tmp_path / "trained",
                           progress=False, callbacks=[cb])
    assert result.status == "ok" and result.stages["train"].stats["steps"] == 6
    assert [p.step for p in cb.points] == [3, 6]
