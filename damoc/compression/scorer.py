"""Per-word surprisal under a small causal LM, the signal the compressor ranks words by.

Compression works at WORD level (whitespace-separated words, punctuation attached) so that its output is
clean text any candidate's tokenizer can read. The scorer's token NLLs are therefore summed per word, using
the fast tokenizer's character offsets to map each token to the word it belongs to.

Conventions:
- The scored text is `context + sep + " ".join(words)`; sep is a space unless the context already ends in
  whitespace. Context tokens condition the prediction but are not scored.
- A start token (BOS, else EOS as a document separator, GPT-2 style) is prepended so that the first word's
  first token is predicted too; a tokenizer with neither leaves that token unscored (NLL 0).
- Sequences longer than `max_length` are scored with a sliding window: each window predicts a chunk of
  targets from at most `max_length` preceding tokens, i.e. the context is truncated from the left.
"""
from __future__ import annotations

import inspect
from bisect import bisect_right
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Model max positions can be huge (128k); on CPU a window that long is slow and memory-hungry, and the
# segments compressed here are short, so the default window is capped.
DEFAULT_MAX_LENGTH_CAP = 2048


class PerplexityScorer:
    """A causal LM + fast tokenizer in eval mode, float32, answering per-word NLL queries."""

    def __init__(self, model_path: str, trust_remote_code: bool = False, device: str = "cpu",
                 max_length: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{model_path}: word-level scoring needs a fast tokenizer (offset mapping)")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code,
                                                          dtype=torch.float32).to(device).eval()
        self.device = device
        self.max_length = max_length or self._model_max_length()
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        start = self.tokenizer.bos_token_id
        self.start_token_id: int | None = start if start is not None else self.tokenizer.eos_token_id
        params = inspect.signature(self.model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the KV cache argument `cache` (`past_key_values` before).
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    def _model_max_length(self) -> int:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return min(value, DEFAULT_MAX_LENGTH_CAP)
        return DEFAULT_MAX_LENGTH_CAP

    def count_tokens(self, text: str) -> int:
        """Scorer tokens in text (no special tokens); the unit of the token-level compression ratio."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def word_nll(self, words: Sequence[str], context: str = "") -> np.ndarray:
        """Summed NLL -log p(token | context, preceding text) of each word's tokens, shape (len(words),)."""
        if not words:
            return np.zeros(0, dtype=np.float64)
        prefix = context + (" " if context and not context[-1].isspace() else "")
        starts, ends, pos = [], [], len(prefix)
        for word in words:
            starts.append(pos)
            ends.append(pos + len(word))
            pos += len(word) + 1
        enc = self.tokenizer(prefix + " ".join(words), add_special_tokens=False, return_offsets_mapping=True)
        owners = [_owner(offset, starts, ends) for offset in enc["offset_mapping"]]
        ids = list(enc["input_ids"])
        if self.start_token_id is not None:
            ids, owners = [self.start_token_id] + ids, [-1] + owners
        scored = [i for i, owner in enumerate(owners) if owner >= 0]
        nll = self.token_nll(ids, first=max(scored[0], 1)) if scored else np.zeros(len(ids))
        out = np.zeros(len(words), dtype=np.float64)
        owner_arr = np.asarray(owners)
        mask = owner_arr >= 0
        np.add.at(out, owner_arr[mask], nll[mask])
        return out

    @torch.inference_mode()
    def token_nll(self, ids: Sequence[int], first: int = 1) -> np.ndarray:
        """NLL of ids[t] given ids[:t] for t >= first (0 before), sliding a max_length window if needed.

        Each window ends at the last target it predicts and reaches back at most max_length tokens; windows
        advance by half the window, so every target keeps at least max_length/2 tokens of left context.
        """
        n = len(ids)
        out = np.zeros(n, dtype=np.float64)
        if n < 2:
            return out
        first = max(first, 1)
        window, stride = self.max_length, max(1, self.max_length // 2)
        all_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        pos = first
        while pos < n:
            end = min(n, max(pos + stride, window))
            start = max(0, end - window)
            logits = self._target_logits(all_ids[start:end], n_targets=end - pos)
            targets = all_ids[pos:end]
            out[pos:end] = F.cross_entropy(logits.float(), targets, reduction="none").cpu().numpy()
            pos = end
        return out

    def _target_logits(self, window_ids: torch.Tensor, n_targets: int) -> torch.Tensor:
        """Logits predicting the last n_targets tokens of the window, shape (n_targets, vocab)."""
        kwargs = {"logits_to_keep": n_targets + 1} if self._logits_to_keep else {}
        logits = self.model(input_ids=window_ids.unsqueeze(0), **kwargs).logits[0]
        # logits[j] predicts token j+1: the prediction for the last token is unused.
        return logits[-(n_targets + 1):-1]


def _owner(offset: tuple[int, int], starts: list[int], ends: list[int]) -> int:
    """Index of the word a token belongs to (-1: context), decided by the token's last character.

    A token ending in the whitespace between two words (e.g. a lone space or newline token) goes to the
    following word, so every token after the context is counted exactly once.
    """
    last = offset[1] - 1
    if last < starts[0]:
        return -1
    idx = bisect_right(starts, last) - 1
    if last >= ends[idx] and idx + 1 < len(starts):
        return idx + 1
    return idx


# --- token ownership and the iterative (KV-cached) stream --------------------------------------------------

def word_token_ids(tokenizer, words: Sequence[str], gaps: Sequence[str], lead: str = "") -> list[list[int]]:
    """Token ids owned by each word when `lead + w0 + g0 + w1 + g1 ... w_last` is tokenized once.

    One tokenizer call over the whole text (linear time). A token ending in a gap goes to the following word
    (as in word_nll); tokens ending in `lead` are dropped. Summing len() over words gives the scorer-token
    cost of keeping each word.
    """
    if not words:
        return []
    starts, ends, parts, pos = [], [], [lead], len(lead)
    for i, word in enumerate(words):
        starts.append(pos)
        ends.append(pos + len(word))
        parts.append(word)
        pos += len(word)
        if i + 1 < len(words):
            parts.append(gaps[i])
            pos += len(gaps[i])
    enc = tokenizer("".join(parts), add_special_tokens=False, return_offsets_mapping=True)
    out: list[list[int]] = [[] for _ in words]
    for token, offset in zip(enc["input_ids"], enc["offset_mapping"]):
        owner = _owner(offset, starts, ends) if offset[1] > offset[0] else -1
        if owner >= 0:
            out[owner].append(token)
    return out


def _cache_len(cache) -> int:
    return 0 if cache is None else int(cache.get_seq_length())


class KVStream:
    """The conditioning stream of iterative compression: start token + context + the COMPRESSED prefix.

    `score(ids)` returns -log p(ids[t] | stream, ids[:t]) without changing the stream; `append(ids)` extends
    the stream with what was kept. The stream's KV cache is reused across segments (a scored segment is cropped
    back off the cache), so a row costs one forward pass over its tokens plus one over its kept tokens: time
    is linear in the row's length. The stream is kept within the model window: when a segment would not fit,
    the cache is rebuilt from the last half-window of stream tokens (context truncated from the left, as in
    token_nll), which happens at most once per half-window of tokens.
    """

    def __init__(self, scorer: "PerplexityScorer", prefix_ids: Sequence[int]) -> None:
        self.scorer = scorer
        self.window = scorer.max_length
        self.history: list[int] = []
        self.cache = None
        self.last_logits: torch.Tensor | None = None  # predicts the next token after the stream
        self.forward_tokens = 0  # tokens run through the model (for tests of linear cost)
        self.append(prefix_ids)

    def _forward(self, ids: Sequence[int]) -> torch.Tensor:
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.scorer.device)
        name = self.scorer._cache_kwarg
        out = self.scorer.model(input_ids=x, use_cache=True, **({name: self.cache} if self.cache is not None else {}))
        self.cache = getattr(out, "cache", None) if name == "cache" else out.past_key_values
        self.forward_tokens += len(ids)
        return out.logits[0]

    def _rebuild(self, keep: int) -> None:
        """Re-encode the stream from its last `keep` tokens (fresh positions)."""
        self.cache, self.last_logits = None, None
        tail = self.history[-keep:] if keep > 0 else []
        if tail:
            self.last_logits = self._forward(tail)[-1]

    def _crop(self, length: int) -> None:
        current = _cache_len(self.cache)
        if current == length:
            return
        try:
            self.cache.crop(length - current)
            if _cache_len(self.cache) != length:
                raise RuntimeError("crop did not take")
        except Exception:  # noqa: BLE001 - caches that cannot crop: re-encode the stream instead
            self._rebuild(min(len(self.history), self.window))

    def _room_for(self, n: int) -> None:
        if _cache_len(self.cache) + n > self.window:
            self._rebuild(min(len(self.history), max(0, self.window - n), self.window // 2))

    @torch.inference_mode()
    def score(self, ids: Sequence[int]) -> np.ndarray:
        """NLL of each of ids given the stream and the ids before it; the stream is left unchanged."""
        n = len(ids)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        chunk = max(1, self.window // 2)
        if n > chunk:  # longer than half a window: sliding windows over the stream tail + the segment
            tail = self.history[-chunk:]
            nll = self.scorer.token_nll(tail + list(ids), first=max(len(tail), 1))
            out[:] = nll[len(tail):]
            if not tail:
                out[0] = 0.0
            return out
        self._room_for(n)
        base, last = _cache_len(self.cache), self.last_logits
        logits = self._forward(ids)
        preds = torch.cat([last.unsqueeze(0), logits[:-1]]) if last is not None else logits[:-1]
        targets = torch.tensor(list(ids) if last is not None else list(ids)[1:], dtype=torch.long,
                               device=self.scorer.device)
        nll = F.cross_entropy(preds.float(), targets, reduction="none").cpu().numpy()
        out[n - len(nll):] = nll
        self._crop(base)
        self.last_logits = last
        return out

    @torch.inference_mode()
    def append(self, ids: Sequence[int]) -> None:
        ids = list(ids)
        chunk = max(1, self.window // 2)
        for start in range(0, len(ids), chunk):
            piece = ids[start:start + chunk]
            self._room_for(len(piece))
            self.history.extend(piece)
            self.last_logits = self._forward(piece)[-1]
        if len(self.history) > 2 * self.window:
            self.history = self.history[-self.window:]


def _stream_prefix(scorer: "PerplexityScorer", context: str) -> list[int]:
    ids = [scorer.start_token_id] if scorer.start_token_id is not None else []
    if context:
        ids += scorer.tokenizer(context, add_special_tokens=False)["input_ids"]
    return ids


def open_stream(scorer: "PerplexityScorer", context: str = "") -> KVStream:
    """A KVStream primed with the start token and `context`."""
    return KVStream(scorer, _stream_prefix(scorer, context))
