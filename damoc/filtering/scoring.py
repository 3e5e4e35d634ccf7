"""Scorer and judge backends shared by the model-based filters (superfiltering, deita, cherry, mods, car,
alpagasus, less).

- A *scorer* is a small causal LM run in process (transformers, CPU-safe fp32 via damoc.hf): it gives
  perplexities (IFD) and rating distributions (the expected value of a rating from the log-likelihoods of
  the rating tokens after a rating prompt, as Deita's scorers read the first generated token's logits).
- A *judge* rates a (instruction, input, response) on a scale: either the same in-process LM rating, or an
  OpenAI-compatible chat-completions endpoint (the vLLM service) whose reply's first number is the rating.
"""
from __future__ import annotations

import json
import math
import os
import re
import urllib.request
from functools import lru_cache
from typing import Any, Protocol, Sequence

import numpy as np
from pydantic import Field

from damoc.data.schema import Sample
from damoc.storage import redact_uri
from damoc.filtering.base import FilterContext
from damoc.registry import SettingsModel


class ScorerSettings(SettingsModel):
    """Settings every scorer-based method shares."""

    scorer_model: str | None = Field(None, description="small causal LM (local dir or hub id) that scores samples; "
                                     "null: the run's scorer (compression.scorer_model, else the first "
                                     "candidate's base checkpoint)")
    batch_size: int = Field(8, ge=1, description="sequences per scorer forward pass")
    max_length: int = Field(512, ge=8, description="tokens per scored sequence (question truncated from the left, "
                            "answer from the right)")


def scorer_path(method: str, settings: Any, context: FilterContext | None, key: str = "scorer_model") -> str:
    """The scorer checkpoint: the method's own setting, else the run's; a clear error when there is none."""
    path = getattr(settings, key, None) or (context.scorer_model if context else None)
    if not path:
        raise ValueError(f"{method} scores samples with a causal LM but none is configured: set "
                         f"filter.options.{method}.{key} (a local checkpoint directory or hub id), or run it "
                         "from a pipeline, which passes the run's scorer model")
    return str(path)


@lru_cache(maxsize=2)
def load_scorer(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal LM in eval mode, cached per process."""
    from damoc.hf import load_causal_lm, load_tokenizer

    tok = load_tokenizer(path)
    model = load_causal_lm(path)
    model.eval()
    return model, tok


def ifd(samples: Sequence[Sample], path: str, settings: Any) -> np.ndarray:
    """IFD = PPL(A|Q) / PPL(A) per sample under the scorer at `path` (nan: no scorable answer)."""
    from damoc.filtering.algorithms.quality import ifd_scores

    model, tok = load_scorer(path)
    return ifd_scores(path, samples, model=model, tokenizer=tok, batch_size=settings.batch_size,
                      max_length=settings.max_length)


def _left_truncate(ids: list[int], budget: int) -> list[int]:
    return ids[max(0, len(ids) - budget):]


def rating_expectation(model: Any, tok: Any, prompts: Sequence[str], ratings: Sequence[int], *,
                       batch_size: int = 8, max_length: int = 512) -> np.ndarray:
    """Expected rating per prompt: sum_r r * p(r) with p(r) proportional to the scorer's likelihood of the
    continuation " r" after the prompt (normalised over `ratings`). float64 array.

    When every rating is one distinct token the distribution comes from one forward pass (the first
    generated token's logits, as in Deita); otherwise each rating's full continuation is scored.
    Prompts longer than `max_length` keep their last tokens (the rating question sits at the end).
    """
    import torch

    from damoc.batching import right_pad

    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    cont = [tok(f" {r}", add_special_tokens=False)["input_ids"] for r in ratings]
    single = all(len(c) == 1 for c in cont) and len({c[0] for c in cont}) == len(cont)
    longest = max(len(c) for c in cont)
    enc = [bos + _left_truncate(tok(p, add_special_tokens=False)["input_ids"], max_length - len(bos) - longest)
           for p in prompts]
    values = np.asarray(ratings, dtype=np.float64)
    out = np.empty(len(prompts), dtype=np.float64)

    def logits_of(seqs: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        ids, mask = right_pad(seqs, pad)
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1), \
                [len(s) for s in seqs]

    for s in range(0, len(enc), batch_size):
        chunk = enc[s:s + batch_size]
        if single:
            logp, lens = logits_of(chunk)
            ids = torch.tensor([c[0] for c in cont])
            ll = torch.stack([logp[r, lens[r] - 1, ids] for r in range(len(chunk))]).double().numpy()
        else:
            ll = np.zeros((len(chunk), len(cont)))
            for j, c in enumerate(cont):
                logp, lens = logits_of([p + c for p in chunk])
                for r, p in enumerate(chunk):
                    ll[r, j] = sum(float(logp[r, len(p) - 1 + t, c[t]]) for t in range(len(c)))
        ll -= ll.max(axis=1, keepdims=True)
        prob = np.exp(ll)
        prob /= prob.sum(axis=1, keepdims=True)
        out[s:s + len(chunk)] = prob @ values
    return out


# --- prompts ---------------------------------------------------------------------------------------------

def _question(smp: Sample) -> str:
    return "\n".join(p for p in (smp.instruction, smp.input) if p)


def deita_complexity_prompt(smp: Sample) -> str:
    return ("You are a helpful assistant. Please identify the complexity score of the following user query.\n"
            f"##Query: {_question(smp)}\n##Complexity:")


def deita_quality_prompt(smp: Sample) -> str:
    return ("You are a helpful assistant. Please identify the quality score of the Response corresponding to "
            f"the Question.\n#Question#:\n{_question(smp)}\n#Response#:\n{smp.output}\n##Quality:")


ALPAGASUS_SYSTEM = ("We would like to request your feedback on the performance of AI assistant in response to the "
                    "instruction and the given input displayed following.")
ALPAGASUS_TASK = ("Please rate according to the accuracy of the response to the instruction and the input. Each "
                  "assistant receives a score on a scale of 0 to 5, where a higher score indicates higher level of "
                  "accuracy. Please first output a single line containing the value indicating the score. In the "
                  "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
                  "potential bias.")


def alpagasus_user_prompt(smp: Sample) -> str:
    return (f"Instruction: {smp.instruction}\nInput: {smp.input}\nResponse: {smp.output}\n\n{ALPAGASUS_TASK}")


def quality_scores(samples: Sequence[Sample], path: str, settings: Any) -> np.ndarray:
    """Deita-style quality rating (expected 1..6) of each response under the scorer."""
    model, tok = load_scorer(path)
    return rating_expectation(model, tok, [deita_quality_prompt(s) for s in samples], range(1, 7),
                              batch_size=settings.batch_size, max_length=settings.max_length)


def complexity_scores(samples: Sequence[Sample], path: str, settings: Any) -> np.ndarray:
    """Deita-style complexity rating (expected 1..6) of each instruction under the scorer."""
    model, tok = load_scorer(path)
    return rating_expectation(model, tok, [deita_complexity_prompt(s) for s in samples], range(1, 7),
                              batch_size=settings.batch_size, max_length=settings.max_length)


# --- judges ------------------------------------------------------------------------------------------------

class Judge(Protocol):
    def rate(self, samples: Sequence[Sample]) -> np.ndarray:
        """A 0..5 rating per sample (float64)."""


class LocalJudge:
    """An in-process causal LM judge: the expected 0..5 rating from the log-likelihoods of the rating tokens."""

    def __init__(self, path: str, *, batch_size: int = 8, max_length: int = 512):
        self.path, self.batch_size, self.max_length = path, batch_size, max_length

    def rate(self, samples: Sequence[Sample]) -> np.ndarray:
        model, tok = load_scorer(self.path)
        prompts = [f"{ALPAGASUS_SYSTEM}\n\n{alpagasus_user_prompt(s)}\n\nScore:" for s in samples]
        return rating_expectation(model, tok, prompts, range(0, 6), batch_size=self.batch_size,
                                  max_length=self.max_length)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_rating(text: str, low: float = 0.0, high: float = 5.0) -> float:
    """The first number in a judge's reply, clipped to [low, high]; nan when there is none."""
    m = _NUMBER.search(text or "")
    return float(min(high, max(low, float(m.group())))) if m else math.nan


class EndpointJudge:
    """An OpenAI-compatible chat-completions endpoint (e.g. the vLLM service): POST {endpoint}/chat/completions,
    temperature 0; the reply's first number is the rating. Unparsable replies rate nan (counted, then 0)."""

    def __init__(self, endpoint: str, model: str | None, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_tokens: int = 16):
        self.url = endpoint.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.timeout, self.max_tokens = model or "default", timeout, max_tokens
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.unparsable = 0

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
                return json.loads(resp.read().decode("utf-8"))
        except OSError as err:
            raise RuntimeError(f"judge endpoint {redact_uri(self.url)}: {err}") from err

    def rate(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.empty(len(samples), dtype=np.float64)
        for i, smp in enumerate(samples):
            reply = self._post({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                                "messages": [{"role": "system", "content": ALPAGASUS_SYSTEM},
                                             {"role": "user", "content": alpagasus_user_prompt(smp)}]})
            try:
                text = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise RuntimeError(f"judge endpoint {redact_uri(self.url)}: unexpected reply {str(reply)[:200]}") from None
            out[i] = parse_rating(text)
        self.unparsable = int(np.isnan(out).sum())
        return np.nan_to_num(out, nan=0.0)
