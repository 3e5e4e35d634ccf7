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


def chat_messages(instruction: str, input_text: str, *, system_role: bool = True) -> list[dict[str, str]]:
    """The sample as chat messages: the instruction as the system turn (or folded into the user turn)."""
    instruction, input_text = instruction.strip(), input_text.strip()
    if not instruction:
        return [{"role": "user", "content": input_text}]
    if system_role:
        return [{"role": "system", "content": instruction}, {"role": "user", "content": input_text}]
    return [{"role": "user", "content": f"{instruction}\n\n{input_text}"}]


def prompt_text(tok, instruction: str, input_text: str, chat_template: bool = True) -> str:
    """The prompt as text: the tokenizer's own chat template (generation prompt added) when it has one and
    ``chat_template`` is on, else :func:`format_prompt`. Templates without a system role (e.g. Gemma's raise)
    get the instruction folded into the user turn."""
    if chat_template and getattr(tok, "chat_template", None):
        try:
            return tok.apply_chat_template(chat_messages(instruction, input_text), tokenize=False,
                                           add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - jinja TemplateError ("System role not supported") and kin
            return tok.apply_chat_template(chat_messages(instruction, input_text, system_role=False),
                                           tokenize=False, add_generation_prompt=True)
    return format_prompt(instruction, input_text)


def encode_prompt(tok, instruction: str, input_text: str, max_tokens: int, chat_template: bool = True) -> list[int]:
    """Prompt token ids exactly as training and evaluation both feed them: BOS (when the tokenizer has one;
    never twice, whether or not the template renders it) + the prompt, cut from the left to ``max_tokens``
    in all. BOS is kept when the prompt is cut."""
    ids = tok(prompt_text(tok, instruction, input_text, chat_template), add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    if bos is None:
        return ids[-max_tokens:] if max_tokens > 0 else []
    if ids[:1] == [bos]:
        ids = ids[1:]
    return [bos] + (ids[-(max_tokens - 1):] if max_tokens > 1 else [])
