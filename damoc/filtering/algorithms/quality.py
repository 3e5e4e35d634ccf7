"""Quality-aware selection cores: LMA (longest responses), Superfiltering (IFD) and Deita's Repr filter.

Pure functions over scores, strings and embeddings; model loading happens only in `ifd_scores`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from damoc.filtering.algorithms._common import as_embeddings, check_n_select, unit_rows


class _SampleLike(Protocol):
    instruction: str
    input: str
    output: str


# --- LMA: "Long Is More for Alignment" (Zhao et al. 2024) ---------------------------------------------

def lma_select(samples: Sequence[_SampleLike], n_select: int, *,
               length: Callable[[str], int] = len) -> list[int]:
    """Indices of the `n_select` samples with the longest `output`, longest first, ties by lowest index.

    length: how an output is measured (default: characters; pass e.g. a tokenizer's token count).
    """
    n_select = check_n_select(n_select, len(samples))
    lengths = [length(s.output) for s in samples]
    return sorted(range(len(samples)), key=lambda i: (-lengths[i], i))[:n_select]


# --- Superfiltering: IFD with a small LM (Li et al. 2024) -----------------------------------------------

def _answer_nll(model: Any, sequences: list[tuple[list[int], int]], pad_id: int, batch_size: int,
                device: Any) -> list[tuple[float, int]]:
    """For each (token ids, answer start) return (sum of NLL over the answer tokens, their count).

    Token t (t >= max(start, 1)) is scored by -log p(ids[t] | ids[:t]). Right padding, so positions of
    real tokens are those of an unpadded run.
    """
    import torch

    out: list[tuple[float, int]] = []
    for s in range(0, len(sequences), batch_size):
        chunk = sequences[s:s + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, (ids, start) in enumerate(chunk):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, :len(ids)] = 1
            scored[r, max(start, 1):len(ids)] = True
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, input_ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        target = scored[:, 1:].to(device)
        sums = (nll * target).sum(dim=1).tolist()
        counts = target.sum(dim=1).tolist()
        out.extend(zip(sums, counts))
    return out


def ifd_scores(model_path: str, samples: Sequence[_SampleLike], *, batch_size: int = 8, max_length: int = 1024,
               device: str = "cpu", model: Any = None, tokenizer: Any = None) -> np.ndarray:
    """Instruction-Following Difficulty per sample: IFD = PPL(A | Q) / PPL(A), float64 array (nan = no answer).

    Q = damoc.training.prompt.format_prompt(instruction, input), A = output, scored by the causal LM at
    `model_path` (or an already loaded `model` / `tokenizer`). Q and A are tokenized separately (no special
    tokens) and concatenated, so both perplexities average over exactly the same answer tokens:
      PPL(A | Q) = exp(mean_t -log p(a_t | [bos] Q a_<t)),   PPL(A) = exp(mean_t -log p(a_t | [bos] a_<t)).
    With a BOS token every answer token is scored; without one (e.g. GPT-2), the first answer token has no
    context in the unconditioned run and is left out of *both* means. Truncation: the answer keeps its
    first tokens, the question its last ones, within `max_length` tokens in total.
    IFD < 1 means the question helps predict the answer; IFD >= 1 means it does not (Superfiltering drops
    those). A sample with no scorable answer token gets nan.
    """
    from damoc.training.prompt import format_prompt

    if model is None or tokenizer is None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        model = model or AutoModelForCausalLM.from_pretrained(model_path).to(device)
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    budget = max_length - len(bos)
    if budget < 2:
        raise ValueError(f"max_length={max_length} leaves no room for a question and an answer")

    conditioned: list[tuple[list[int], int]] = []
    alone: list[tuple[list[int], int]] = []
    for smp in samples:
        q = tokenizer(format_prompt(smp.instruction, smp.input), add_special_tokens=False)["input_ids"]
        a = tokenizer(smp.output, add_special_tokens=False)["input_ids"][:budget - 1]
        q = q[max(0, len(q) - (budget - len(a))):]
        # Without BOS the first answer token cannot be scored alone, so skip it in both runs.
        skip = 0 if bos else 1
        conditioned.append((bos + q + a, len(bos) + len(q) + skip))
        alone.append((bos + a, len(bos) + skip))
    cond = _answer_nll(model, conditioned, pad_id, batch_size, device)
    base = _answer_nll(model, alone, pad_id, batch_size, device)
    scores = np.full(len(samples), np.nan)
    for i, ((sc, nc), (sa, na)) in enumerate(zip(cond, base)):
        if nc and na:
            scores[i] = math.exp(sc / nc - sa / na)  # exp(mean NLL | Q) / exp(mean NLL)
    return scores


def superfiltering_select(ifd: Iterable[float], n_select: int, *, fill: bool = False) -> list[int]:
    """Superfiltering: drop IFD >= 1 (and nan), keep the `n_select` highest IFD (ties by lowest index).

    If fewer than `n_select` samples have IFD < 1 the result is shorter, unless `fill` is set: then the
    dropped samples follow, IFD ascending (closest to 1 first), nan last.
    """
    scores = np.asarray(list(ifd), dtype=np.float64)
    n_select = check_n_select(n_select, scores.size)
    valid = [i for i in range(scores.size) if scores[i] < 1.0]  # nan compares False
    picked = sorted(valid, key=lambda i: (-scores[i], i))[:n_select]
    if fill and len(picked) < n_select:
        rest = [i for i in range(scores.size) if not scores[i] < 1.0]
        rest.sort(key=lambda i: (math.isnan(scores[i]), scores[i] if not math.isnan(scores[i]) else 0.0, i))
        picked += rest[:n_select - len(picked)]
    return picked


# --- Deita: score-first selection with a representation (diversity) filter (Liu et al. 2024) ------------

def deita_select(scores: Sequence[float], embeddings: np.ndarray, n_select: int, threshold: float = 0.9, *,
                 block_size: int = 256) -> list[int]:
    """Walk samples by score (highest first, ties by lowest index); admit one only if its cosine
    similarity to every already admitted sample is <= `threshold`. Stops at `n_select` admitted.

    So no two admitted samples have cosine > threshold. Returns the admitted indices in admission order;
    fewer than `n_select` if the pool runs out. Candidates are checked `block_size` at a time (one matrix
    product against the admitted set, then a sequential pass inside the block): the result equals the
    one-by-one walk. Memory O(n*d + block * n_select).
    """
    emb = unit_rows(as_embeddings(embeddings))
    sc = np.asarray(scores, dtype=np.float64)
    n = emb.shape[0]
    if sc.shape != (n,):
        raise ValueError(f"{sc.shape[0] if sc.ndim else 0} scores for {n} embeddings")
    if np.isnan(sc).any():
        raise ValueError("scores contain nan")
    n_select = check_n_select(n_select, n)
    order = np.lexsort((np.arange(n), -sc))  # score descending, then index ascending
    admitted = np.empty((n_select, emb.shape[1]), dtype=emb.dtype)
    out: list[int] = []
    for s in range(0, n, block_size):
        if len(out) == n_select:
            break
        cand = order[s:s + block_size]
        block = emb[cand]
        ok = np.ones(cand.size, dtype=bool)
        if out:
            ok = (block @ admitted[:len(out)].T).max(axis=1) <= threshold
        inner = block @ block.T
        taken: list[int] = []  # positions in the block admitted so far
        for p in np.flatnonzero(ok):
            if len(out) == n_select:
                break
            if taken and inner[p, taken].max() > threshold:
                continue
            taken.append(int(p))
            admitted[len(out)] = block[p]
            out.append(int(cand[p]))
    return out
