"""The text format a sample is trained and evaluated in.

Text-level (not token-level) so that candidates with different tokenizers see the same thing; the zoo's
chat models are instruction-tuned in this same format.
"""
from __future__ import annotations

RESPONSE_MARKER = "### Response:\n"


def format_prompt(instruction: str, input_text: str) -> str:
    parts = []
    if instruction.strip():
        parts.append(f"### Instruction:\n{instruction.strip()}\n\n")
    parts.append(f"### Input:\n{input_text.strip()}\n\n")
    parts.append(RESPONSE_MARKER)
    return "".join(parts)
