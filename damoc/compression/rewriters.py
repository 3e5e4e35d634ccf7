"""Rewriter backends (registry REWRITERS) and the iterative rewriting loop for samples below the gate.

The paper's loop (DAMOC.md, stage 2): for each sample whose compression scores below the BERTScore gate,
prompt an LLM with the original, the current compressed text and a few compressions that passed; re-gate its
revision; if still below, add the attempt and its score to the prompt as a negative example and try again,
for at most `rounds` rounds. The best-scoring attempt is kept (the compressed text itself counts as attempt
0), so a backend that times out or answers garbage never loses a sample: it stays at its best attempt and
is counted as still failing.

Backends take chat messages and return text (None: no usable answer):
- `openai`: any OpenAI-compatible /v1/chat/completions endpoint (vLLM in production): concurrent requests,
  per-request timeout, retries with exponential backoff; the API key is read only from the environment
  variable named in the settings (never from the run configuration).
- `local`: an in-process transformers chat model (the embedded default; slow on CPU, fine for tiny models).

This module must import without torch: the run configuration imports the registry.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

from pydantic import Field

from damoc.data.schema import Sample
from damoc.registry import Registry, SettingsModel

REWRITERS: Registry = Registry("rewriter backend")


class RewriteBackend(Protocol):
    def generate(self, conversations: Sequence[list[dict]]) -> list[str | None]: ...


# --- backends --------------------------------------------------------------------------------------------

class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (e.g. `python -m vllm.entrypoints.openai.api_server`)."""

    class Settings(SettingsModel):
        base_url: str | None = Field(None, description="server URL up to /v1; null: $DAMOC_REWRITER_URL (the "
                                     "Helm chart's rewriter Service, from its damoc-defaults ConfigMap), else "
                                     "http://127.0.0.1:8000/v1")
        model: str | None = Field(None, description="model name sent in requests (vLLM: --served-model-name or the "
                                  "model path); null: $DAMOC_REWRITER_MODEL, else 'rewriter'")
        api_key_env: str | None = Field("DAMOC_REWRITER_API_KEY", description="environment variable holding the "
                                        "API key (sent as Bearer); unset or empty variable: no key")
        concurrency: int = Field(8, ge=1, description="requests in flight at once")
        timeout_s: float = Field(60.0, gt=0.0, description="seconds per request before it counts as failed")
        max_retries: int = Field(3, ge=0, description="retries of a failed request (connection error, timeout, "
                                 "HTTP 429/5xx, unreadable reply)")
        backoff_s: float = Field(1.0, ge=0.0, description="first retry delay; doubled on each retry")
        max_tokens: int = Field(512, ge=1, description="completion tokens per request")
        temperature: float = Field(0.3, ge=0.0, description="sampling temperature")

    def __init__(self, settings: "OpenAIBackend.Settings") -> None:
        self.settings = settings
        self.errors = 0
        self._lock = threading.Lock()

    @classmethod
    def build(cls, settings: "OpenAIBackend.Settings", **_context) -> "OpenAIBackend":
        return cls(settings)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.settings.api_key_env or "", "") if self.settings.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _one(self, messages: list[dict]) -> str | None:
        s = self.settings
        model = s.model or os.environ.get("DAMOC_REWRITER_MODEL") or "rewriter"
        body = json.dumps({"model": model, "messages": messages, "max_tokens": s.max_tokens,
                           "temperature": s.temperature}).encode()
        base_url = s.base_url or os.environ.get("DAMOC_REWRITER_URL") or "http://127.0.0.1:8000/v1"
        url = base_url.rstrip("/") + "/chat/completions"
        for attempt in range(s.max_retries + 1):
            if attempt:
                time.sleep(s.backoff_s * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
                with urllib.request.urlopen(request, timeout=s.timeout_s) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                content = reply["choices"][0]["message"]["content"]
                if isinstance(content, str):
                    return content
            except urllib.error.HTTPError as err:
                if err.code not in (408, 409, 429) and err.code < 500:
                    break  # a client error (bad model name, bad key): retrying will not help
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError):
                pass
        with self._lock:
            self.errors += 1
        return None

    def generate(self, conversations: Sequence[list[dict]]) -> list[str | None]:
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(conversations))) as pool:
            return list(pool.map(self._one, conversations))


class LocalBackend:
    """An in-process transformers chat model (greedy by default)."""

    class Settings(SettingsModel):
        model: str | None = Field(None, description="chat checkpoint directory; null: the compression scorer")
        max_new_tokens: int = Field(256, ge=1, description="generated tokens per rewrite")
        temperature: float = Field(0.0, ge=0.0, description="0: greedy decoding")
        trust_remote_code: bool = Field(False, description="allow the checkpoint's own code")

    def __init__(self, settings: "LocalBackend.Settings", model_path: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings, self.errors = settings, 0
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=settings.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=settings.trust_remote_code
                                                          ).eval()

    @classmethod
    def build(cls, settings: "LocalBackend.Settings", default_model: str | None = None, **_context):
        path = settings.model or default_model
        if not path:
            raise ValueError("the local rewriter needs a model (rewriter_options.local.model)")
        return cls(settings, path)

    def _prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, conversations: Sequence[list[dict]]) -> list[str | None]:
        import torch

        out: list[str | None] = []
        for messages in conversations:
            try:
                enc = self.tokenizer(self._prompt(messages), return_tensors="pt", add_special_tokens=False)
                limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
                ids = enc["input_ids"][:, -max(1, limit - self.settings.max_new_tokens):]
                sample = self.settings.temperature > 0
                with torch.inference_mode():
                    gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                              max_new_tokens=self.settings.max_new_tokens, do_sample=sample,
                                              **({"temperature": self.settings.temperature} if sample else {}),
                                              pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
                out.append(self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
            except Exception:  # noqa: BLE001 - a failed generation is a failed attempt, not a failed run
                self.errors += 1
                out.append(None)
        return out


REWRITERS.register("openai", OpenAIBackend)
REWRITERS.register("local", LocalBackend)


def build_backend(name: str, options: dict | None = None, **context) -> RewriteBackend:
    """The named backend with its validated settings (context: default_model for `local`)."""
    from damoc.registry import validate_settings

    entry = REWRITERS.get(name)
    settings = validate_settings(entry, options, f"compression.rewriter_options.{name}")
    return entry.build(settings, **context)


# --- prompt and parsing ----------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You repair compressed training examples. Words were deleted from an example to make it shorter, and the "
    "shortened version now misses part of what the original says. Write a new short version that a reader "
    "understands on its own and that means the same as the original. Use about the stated number of words "
    "(no more than {tolerance:.0%} above it): shorter than the original, never a copy of it. Keep the "
    "[Question] and [Answer] layout. Reply exactly as:\nRevised Compressed Text:\n[Question]\n...\n[Answer]\n"
    "...\nReason: one sentence on what you changed.")


def format_example(sample: Sample) -> str:
    parts = []
    if sample.input:
        parts.append(f"[Question]\n{sample.input}")
    parts.append(f"[Answer]\n{sample.output}")
    return "\n".join(parts)


def build_messages(original: Sample, compressed: Sample, examples: Sequence[Sample],
                   negatives: Sequence[tuple[str, float]], threshold: float, target_words: int,
                   tolerance: float, system_prompt: str | None = None) -> list[dict]:
    lines = []
    if original.instruction:
        lines += [f"Task of the example (kept as is): {original.instruction}", ""]
    lines += ["Original:", format_example(original), "",
              f"Compressed ({target_words} words):", format_example(compressed), ""]
    if examples:
        lines.append("Compressions of other examples that kept their meaning:")
        for ex in examples:
            lines += [format_example(ex), ""]
    if negatives:
        lines.append(f"Earlier attempts for this example, rejected (similarity to the original must reach "
                     f"{threshold:.2f}):")
        for text, score in negatives:
            lines += [f"(similarity {score:.3f})", text, ""]
    lines.append("Revised Compressed Text:")
    return [{"role": "system", "content": (system_prompt or SYSTEM_PROMPT).format(tolerance=tolerance)},
            {"role": "user", "content": "\n".join(lines)}]


_SECTION = re.compile(r"\[(question|answer)\]\s*:?", re.IGNORECASE)


def parse_revision(reply: str | None, compressed: Sample) -> Sample | None:
    """The revised sample from a reply, or None when the reply has no [Answer] section (garbage)."""
    if not reply:
        return None
    text = reply.split("Revised Compressed Text:", 1)[-1]
    text = re.split(r"\n\s*Reason\s*:", text, maxsplit=1)[0]
    found = {m.group(1).lower(): m for m in _SECTION.finditer(text)}
    if "answer" not in found:
        return None
    answer_at = found["answer"]
    output = text[answer_at.end():].strip()
    question = ""
    if "question" in found and found["question"].start() < answer_at.start():
        question = text[found["question"].end():answer_at.start()].strip()
    if not output or (compressed.input and not question):
        return None
    return dataclasses.replace(compressed, input=question if compressed.input else compressed.input,
                               output=output)


# --- the loop --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RewriteOutcome:
    samples: list[Sample]  # best attempt per failure (the compressed text when nothing beat it)
    scores: list[float]  # its gate score
    passed: list[bool]  # reached the gate within the length tolerance
    rounds: list[dict]  # per round: tried, answered (parsed), passed, too_long, no_reply
    attempts: int = 0


def _words(sample: Sample) -> int:
    return len(sample.input.split()) + len(sample.output.split())


def rewrite_failures(backend: RewriteBackend, originals: Sequence[Sample], compressed: Sequence[Sample],
                     scores: Sequence[float], examples: Sequence[Sample],
                     gate: Callable[[list[Sample], list[Sample]], list[float]], threshold: float,
                     rounds: int = 2, n_examples: int = 3, tolerance: float = 0.1,
                     seed: int = 0, system_prompt: str | None = None) -> RewriteOutcome:
    """The iterative rewriting loop over samples below the gate (bounded rounds; best attempt kept)."""
    rng = random.Random(seed)
    n = len(originals)
    best, best_scores = list(compressed), [float(s) for s in scores]
    passed = [False] * n
    targets = [max(1, _words(c)) for c in compressed]
    negatives: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    outcome = RewriteOutcome(best, best_scores, passed, [])
    for round_no in range(1, rounds + 1):
        todo = [i for i in range(n) if not passed[i]]
        if not todo:
            break
        conversations = [build_messages(originals[i], best[i],
                                        rng.sample(list(examples), min(n_examples, len(examples))),
                                        negatives[i][-3:], threshold, targets[i], tolerance, system_prompt)
                         for i in todo]
        replies = backend.generate(conversations)
        outcome.attempts += len(todo)
        parsed = [(i, parse_revision(reply, best[i])) for i, reply in zip(todo, replies)]
        stats = {"round": round_no, "tried": len(todo), "no_reply": sum(r is None for r in replies),
                 "answered": sum(p is not None for _, p in parsed), "too_long": 0, "passed": 0}
        usable = [(i, p) for i, p in parsed if p is not None]
        new_scores = gate([originals[i] for i, _ in usable], [p for _, p in usable]) if usable else []
        for (i, revision), score in zip(usable, new_scores):
            too_long = _words(revision) > targets[i] * (1 + tolerance)
            stats["too_long"] += too_long
            if not too_long and score > best_scores[i]:
                best[i], best_scores[i] = revision, float(score)
            if not too_long and score >= threshold:
                passed[i] = True
                stats["passed"] += 1
            else:
                note = " (too long)" if too_long else ""
                negatives[i].append((format_example(revision) + note, float(score)))
        outcome.rounds.append(stats)
    return outcome
