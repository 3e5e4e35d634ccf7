"""MMLU-style 0-shot multiple-choice accuracy by option log-likelihood with a causal LM.

The paper scores Alpaca-trained candidates by MMLU 0-shot accuracy (DAMOC.md, stage 4). Scoring follows the
usual log-likelihood protocol (as in lm-evaluation-harness): no generation; for every option, the model's
log-probability of the option's tokens given the prompt; the prediction is the option with the highest score.

Scoring of one option (:func:`option_loglikelihoods`)
    ``score = sum_t log p(c_t | prompt, c_<t)`` over the continuation tokens ``c`` of the option, where the prompt
    is encoded without special tokens and prefixed with the tokenizer's BOS token if it has one (as the
    project's fine-tuning does), and the continuation is encoded separately and appended, so the prompt's tokens
    are the same for every option. **Not length-normalised** by default: a sum of log-probs, which
    favours short options when options differ in length. ``length_normalized=True`` divides by the option's
    token count instead (per-token mean; lm-eval's ``acc_norm`` divides by characters instead, not offered).

The two prompt styles of :func:`mc_accuracy`
    ``"letters"`` (default; MMLU's standard 0-shot format): the question and lettered options are in the prompt,
    which ends ``"Answer:"``; the continuations are ``" A"``, ``" B"``, ... so all options have the same length
    and length normalisation does not matter. ``"text"`` (cloze): the prompt is the question followed by
    ``"Answer:"``, the continuations are ``" " + option text``; use it for models too weak to map letters, and
    consider ``length_normalized=True`` there.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import torch


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: the options' texts and the index of the correct one."""

    question: str
    options: tuple[str, ...]
    answer: int
    subject: str = ""

    def __post_init__(self):
        if len(self.options) < 2:
            raise ValueError(f"a multiple-choice item needs at least 2 options, got {len(self.options)}")
        if len(self.options) > len(string.ascii_uppercase):
            raise ValueError("at most 26 options")
        if isinstance(self.answer, bool) or not isinstance(self.answer, int) or \
                not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer index {self.answer!r} out of range for {len(self.options)} options")


ItemLike = Union[MCItem, Mapping[str, Any]]


def as_item(item: ItemLike) -> MCItem:
    """An :class:`MCItem` from itself or a mapping with ``question``, ``options`` (or MMLU's ``choices``) and
    ``answer`` (an index, or a letter "A".."Z"), optional ``subject``."""
    if isinstance(item, MCItem):
        return item
    options = item.get("options", item.get("choices"))
    if options is None or "question" not in item or "answer" not in item:
        raise ValueError(f"an item needs question, options (or choices) and answer; got keys {sorted(item)}")
    answer = item["answer"]
    if isinstance(answer, str) and len(answer) == 1 and answer.upper() in string.ascii_uppercase:
        answer = string.ascii_uppercase.index(answer.upper())
    return MCItem(question=str(item["question"]), options=tuple(str(o) for o in options), answer=answer,
                  subject=str(item.get("subject") or ""))


def mmlu_prompt(item: MCItem) -> str:
    """MMLU's 0-shot prompt: header, question, lettered options, ``Answer:`` (continuations " A", " B", ...)."""
    subject = item.subject.replace("_", " ").strip()
    header = f"The following are multiple choice questions (with answers){' about ' + subject if subject else ''}."
    lines = [header, "", item.question.strip()]
    lines += [f"{letter}. {option.strip()}" for letter, option in zip(string.ascii_uppercase, item.options)]
    return "\n".join(lines) + "\nAnswer:"


def cloze_prompt(item: MCItem) -> str:
    """Question then ``Answer:``; the continuations are the options' texts (style "text")."""
    return f"Question: {item.question.strip()}\nAnswer:"


def _encode_prompt(tokenizer, prompt: str) -> list[int]:
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


@torch.no_grad()
def option_loglikelihoods(model, tokenizer, prompt: str, options: Sequence[str], *,
                          length_normalized: bool = False) -> list[float]:
    """Log-likelihood of each option (a continuation string, appended as given) after ``prompt``.

    Returns, per option, ``sum_t log p(option token t | prompt, earlier option tokens)`` (divided by the
    option's token count if ``length_normalized``). All options go through the model in one right-padded
    batch (right padding does not change the causal attention of the real tokens).

    Raises:
        ValueError: no options, an option that encodes to no tokens, or an empty context (no prompt tokens
            and no BOS token, so the first option token would have nothing to be conditioned on).
    """
    if not options:
        raise ValueError("no options to score")
    context = _encode_prompt(tokenizer, prompt)
    if not context:
        raise ValueError("empty context: the prompt encodes to no tokens and the tokenizer has no BOS token")
    conts = [list(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in options]
    for option, ids in zip(options, conts):
        if not ids:
            raise ValueError(f"option {option!r} encodes to no tokens")
    device = next(model.parameters()).device
    seqs = [context + c for c in conts]
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        attention[row, :len(seq)] = 1
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    finally:
        model.train(was_training)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for row, cont in enumerate(conts):
        # Token at position p is predicted by the logits at p - 1.
        positions = torch.arange(len(context) - 1, len(context) - 1 + len(cont), device=logprobs.device)
        targets = torch.tensor(cont, device=logprobs.device)
        total = logprobs[row, positions, targets].sum().item()
        scores.append(total / len(cont) if length_normalized else total)
    return scores


def mc_predictions(model, tokenizer, items: Sequence[ItemLike], *, style: Literal["letters", "text"] = "letters",
                   prompt_fn: Callable[[MCItem], str] | None = None,
                   length_normalized: bool = False) -> list[int]:
    """The index of the highest-scoring option for each item (ties: the first). See the module docstring.

    ``prompt_fn`` replaces the style's prompt builder (e.g. to wrap the question in the instruction format a
    candidate was fine-tuned with); the continuations still follow ``style``.
    """
    if style not in ("letters", "text"):
        raise ValueError(f"style must be 'letters' or 'text', got {style!r}")
    build = prompt_fn or (mmlu_prompt if style == "letters" else cloze_prompt)
    predictions = []
    for raw in items:
        item = as_item(raw)
        if style == "letters":
            conts = [f" {letter}" for letter in string.ascii_uppercase[:len(item.options)]]
        else:
            conts = [f" {option.strip()}" for option in item.options]
        scores = option_loglikelihoods(model, tokenizer, build(item), conts, length_normalized=length_normalized)
        predictions.append(max(range(len(scores)), key=scores.__getitem__))
    return predictions


def mc_accuracy(model_path: str | Path, items: Sequence[ItemLike], *, style: Literal["letters", "text"] = "letters",
                prompt_fn: Callable[[MCItem], str] | None = None, length_normalized: bool = False,
                trust_remote_code: bool = False, device: str | None = None) -> float:
    """0-shot accuracy (fraction in [0, 1]) of the causal LM checkpoint at ``model_path`` on ``items``.

    ``items`` are :class:`MCItem` or mappings (see :func:`as_item`). The model is loaded in float32 on
    ``device`` (default: cuda if available, else cpu). 0.0 for no items.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parsed = [as_item(i) for i in items]
    if not parsed:
        return 0.0
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(str(model_path), trust_remote_code=trust_remote_code,
                                                 dtype=torch.float32).to(device)
    predictions = mc_predictions(model, tokenizer, parsed, style=style, prompt_fn=prompt_fn,
                                 length_normalized=length_normalized)
    return sum(int(p == i.answer) for p, i in zip(predictions, parsed)) / len(parsed)
