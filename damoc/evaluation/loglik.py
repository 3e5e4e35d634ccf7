"""Log-likelihoods in the training encoding: of each reference answer, and of each multiple-choice option.

Both use :func:`damoc.training.finetune.encode_example` — BOS + prompt tokens (``format_prompt``), then the
answer's tokens (+ EOS), the prompt cut from the left when the pair exceeds ``max_length`` — so a candidate is
scored on exactly the sequences it was fine-tuned on. Sequences go through the model in right-padded batches
(right padding does not change the causal attention of the real tokens) under ``torch.inference_mode``.

- :func:`reference_logliks`: per sample, the mean over the answer tokens and EOS of ``log p(token | earlier)``:
  a smooth, low-noise ranking signal (a weak proxy that generates nothing useful still gets a graded value).
- :func:`option_scores` / :func:`choice_predictions`: per option of a multiple-choice sample, the same quantity
  over the option's tokens (cloze style: the options are not listed in the prompt; no EOS by default;
  per-token mean, so longer options are not penalised); the prediction is the best-scoring option.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from damoc.batching import right_pad

from damoc.data.schema import Sample
from damoc.training.finetune import IGNORE_INDEX, encode_example

# (token ids, first scored position, end of the scored span): scores ids[start:end], each given ids[:t]
Span = tuple[list[int], int, int]


@torch.inference_mode()
def span_logprobs(model, spans: Sequence[Span], *, batch_size: int = 16, pad_id: int = 0) -> list[tuple[float, int]]:
    """``(sum of log p(ids[t] | ids[:t]) for start <= t < end, end - start)`` for each span.

    Batches of ``batch_size`` sequences (longest first, to pad little), right-padded with ``pad_id`` and an
    attention mask. Raises ValueError for an empty span or one starting at position 0 (nothing to condition on).
    """
    for ids, start, end in spans:
        if not 1 <= start < end <= len(ids):
            raise ValueError(f"bad span [{start}, {end}) of a {len(ids)}-token sequence: the scored tokens need "
                             "at least one token before them")
    device = next(model.parameters()).device
    order = sorted(range(len(spans)), key=lambda i: -len(spans[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(spans)
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), max(1, batch_size)):
            idx = order[first:first + max(1, batch_size)]
            input_ids, mask = right_pad([spans[i][0] for i in idx], pad_id)
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            for row, i in enumerate(idx):
                ids, start, end = spans[i]
                # the token at position t is predicted by the logits at t - 1
                picked = logits[row, start - 1:end - 1].float().log_softmax(dim=-1)
                targets = torch.tensor(ids[start:end], dtype=torch.long, device=picked.device)
                total = picked.gather(-1, targets[:, None]).sum().item()
                out[i] = (float(total), end - start)
    finally:
        model.train(was_training)
    return out


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def _answer_span(example: dict[str, list[int]]) -> Span:
    labels = example["labels"]
    start = next((t for t, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return example["input_ids"], start, len(labels)


def reference_logliks(model, tok, samples: Sequence[Sample], max_length: int = 256,
                      batch_size: int = 16, chat_template: bool = True) -> list[float]:
    """Per sample, the mean log-likelihood per token of its reference answer (answer tokens + EOS) given its
    prompt, encoded exactly as fine-tuning encodes it (``encode_example(tok, sample, max_length)``)."""
    spans = [_answer_span(encode_example(tok, s, max_length, chat_template)) for s in samples]
    return [total / count for total, count in span_logprobs(model, spans, batch_size=batch_size, pad_id=_pad_id(tok))]


def option_scores(model, tok, samples: Sequence[Sample], max_length: int = 256, batch_size: int = 16, *,
                  length_normalized: bool = True, with_eos: bool = False,
                  chat_template: bool = True) -> list[list[float]]:
    """Per multiple-choice sample, the log-likelihood of each of its options as the answer.

    Each option is encoded as the sample's answer would be in training (``encode_example`` with
    ``output=option``); the score is over the option's tokens (and EOS if ``with_eos``), a per-token mean if
    ``length_normalized``, else a sum. All options of all samples are batched together.

    Raises ValueError naming the sample when it has fewer than 2 options or an option encodes to no tokens.
    """
    spans: list[Span] = []
    counts: list[int] = []
    for sample in samples:
        if len(sample.options) < 2:
            raise ValueError(f"sample {sample.id!r} has {len(sample.options)} options; a multiple-choice row needs "
                             "at least 2 (data.fields.options must name the column holding them)")
        counts.append(len(sample.options))
        for option in sample.options:
            n_tokens = len(tok(option.strip(), add_special_tokens=False)["input_ids"])
            if n_tokens == 0:
                raise ValueError(f"sample {sample.id!r}: option {option!r} encodes to no tokens")
            ids, start, end = _answer_span(encode_example(tok, dataclasses.replace(sample, output=option), max_length,
                                                              chat_template))
            # the answer span is option tokens + EOS unless truncated; drop EOS unless asked for
            spans.append((ids, start, end if with_eos else min(end, start + n_tokens)))
    scored = span_logprobs(model, spans, batch_size=batch_size, pad_id=_pad_id(tok))
    values = [total / n if length_normalized else total for total, n in scored]
    out, at = [], 0
    for n in counts:
        out.append(values[at:at + n])
        at += n
    return out


def choice_predictions(model, tok, samples: Sequence[Sample], max_length: int = 256, batch_size: int = 16, *,
                       length_normalized: bool = True, with_eos: bool = False,
                       chat_template: bool = True) -> list[int]:
    """The index of the best-scoring option of each sample (ties: the first); see :func:`option_scores`."""
    return [max(range(len(row)), key=row.__getitem__)
            for row in option_scores(model, tok, samples, max_length, batch_size,
                                     length_normalized=length_normalized, with_eos=with_eos,
                                     chat_template=chat_template)]
