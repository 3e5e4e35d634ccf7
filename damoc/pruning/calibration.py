"""Calibration text for pruning, encoded the way training encodes a sample.

A layer's similarity depends on the tokens it sees: measured on the plain "### Instruction" format while the
candidate is trained (and evaluated) in its chat template, it describes inputs the model will never get. So a
sample is encoded by training's own `encode_example` (chat template when training.chat_template is on and the
tokenizer has one, BOS once, prompt + answer + EOS). Plain strings stay accepted (tokenized with special tokens).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from damoc.data.schema import Sample

CalibrationItem = Union[str, Sample, Sequence[int]]


def encode_calibration(tokenizer: Any, items: Sequence[CalibrationItem], max_length: int,
                       chat_template: bool = True) -> list[str | list[int]]:
    """Samples become token ids (training's encoding); strings and id lists pass through unchanged."""
    from damoc.training.finetune import encode_example

    out: list[str | list[int]] = []
    for item in items:
        if isinstance(item, Sample):
            out.append(encode_example(tokenizer, item, max_length, chat_template)["input_ids"])
        elif isinstance(item, str):
            out.append(item)
        else:
            out.append([int(i) for i in item])
    return out
