"""Quality gate: BERTScore F1 of each compressed sample against its original (instruction+input+output).

Through the bert-score library, with the embedding model and layer configurable (default: all-MiniLM-L6-v2,
shipped offline, layer 6). Long texts are gated WHOLE: a pair whose reference exceeds `window_words` words is
split into consecutive windows (the candidate proportionally, so a compressed text lines up with its source),
each window pair is scored, and the sample's F1 is the mean over windows weighted by reference words. Nothing
is truncated, so the answers of long samples are gated too.

Calibration (`make bench-oracle`, docs/benchmarks/oracle.md): a compression only deletes, so its F1 is capped by
recall, which falls with the share removed even when all of it is filler; and where unrelated text scores
depends on the model and layer (mean F1 ~0.39 at MiniLM's last layer, ~0.57 at its first). The paper's 0.9, set
for its embedding, therefore does not transfer: the benchmark measures where meaning-preserving edits score.
`rescale` applies bert-score's baseline rescaling with a baseline made offline.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from damoc.data.schema import Sample

DEFAULT_WINDOW_WORDS = 200  # ~260-300 word pieces: inside a BERT's 512 positions


def _default_layer(model_path: str) -> int:
    config = Path(model_path) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(data.get(key), int):
                return data[key]
    from bert_score.utils import model2layers

    if model_path in model2layers:
        return model2layers[model_path]
    raise ValueError(f"gate model {model_path}: cannot tell its layer count; set compression.gate_layer")


@lru_cache(maxsize=4)
def _scorer(model_path: str, layer: int):
    import bert_score

    return bert_score.BERTScorer(model_type=model_path, num_layers=layer, lang="en", device="cpu")


def resolve_gate_model(model_path: str | None, layer: int | None) -> tuple[str, int]:
    if model_path is None:
        from damoc.hf import default_embedding_model

        model_path = default_embedding_model()
    return model_path, layer if layer is not None else _default_layer(model_path)


def windows(candidate: str, reference: str, window_words: int) -> list[tuple[str, str, int]]:
    """(candidate window, reference window, reference words) pairs covering both texts whole."""
    ref, cand = reference.split(), candidate.split()
    k = max(1, math.ceil(len(ref) / max(1, window_words)))
    if k == 1:
        return [(candidate, reference, max(1, len(ref)))]
    out = []
    for i in range(k):
        r0, r1 = round(i * len(ref) / k), round((i + 1) * len(ref) / k)
        c0, c1 = round(i * len(cand) / k), round((i + 1) * len(cand) / k)
        out.append((" ".join(cand[c0:c1]), " ".join(ref[r0:r1]), r1 - r0))
    return out


def bertscore_texts(candidates: Sequence[str], references: Sequence[str], model_path: str | None = None,
                    layer: int | None = None, window_words: int = DEFAULT_WINDOW_WORDS,
                    batch_size: int = 64) -> list[float]:
    """Windowed BERTScore F1 per pair (no baseline rescaling); an empty candidate (window) scores 0."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates vs {len(references)} references")
    if not candidates:
        return []
    path, layer = resolve_gate_model(model_path, layer)
    pairs = [windows(c, r, window_words) for c, r in zip(candidates, references)]
    flat = [(i, c, r, w) for i, ws in enumerate(pairs) for c, r, w in ws]
    todo = [j for j, (_, c, r, _) in enumerate(flat) if c.strip() and r.strip()]
    f1 = [0.0] * len(flat)
    for j, (_, c, r, _) in enumerate(flat):
        if not c.strip() and not r.strip():
            f1[j] = 1.0
    if todo:
        _, _, values = _scorer(path, layer).score([flat[j][1] for j in todo], [flat[j][2] for j in todo],
                                                  batch_size=batch_size)
        for j, value in zip(todo, values.tolist()):
            f1[j] = float(value)
    sums, weights = [0.0] * len(candidates), [0] * len(candidates)
    for (i, _, _, w), value in zip(flat, f1):
        sums[i] += w * value
        weights[i] += w
    return [s / w if w else 1.0 for s, w in zip(sums, weights)]


def rescale(score: float, baseline: float) -> float:
    """bert-score's baseline rescaling, (F1 - b) / (1 - b): b is the mean F1 of unrelated text pairs for the
    embedding model and layer, so 0 means "as similar as unrelated text" and the scale spreads out."""
    if not baseline < 1.0:
        raise ValueError(f"baseline must be below 1, got {baseline}")
    return (score - baseline) / (1.0 - baseline)


def gate_scores(originals: Sequence[Sample], compressed: Sequence[Sample], model_path: str | None = None,
                layer: int | None = None, window_words: int = DEFAULT_WINDOW_WORDS) -> list[float]:
    """BERTScore F1 (compressed as candidate, original as reference) per sample pair."""
    if len(originals) != len(compressed):
        raise ValueError(f"{len(originals)} originals vs {len(compressed)} compressed samples")
    return bertscore_texts([c.text for c in compressed], [o.text for o in originals], model_path, layer,
                           window_words)
