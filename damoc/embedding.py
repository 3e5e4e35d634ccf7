"""Sentence embeddings on CPU for the distribution-aware filters (default: local all-MiniLM-L6-v2).

No silent truncation: a text longer than the encoder's maximum sequence length is split into windows of
at most that many word pieces, each window embedded, and the windows mean-pooled (weighted by their token
counts) and re-normalised; callers get the number of texts that were chunked.

What is embedded is a choice (`embed_samples(mode=...)`):
  whole       — instruction + input + output as one text (the paper's setup);
  qa_separate — the question (instruction + input) and the answer (output) embedded separately and
                concatenated as [q, a] / sqrt(2): unit rows again, and the dot product of two rows is the
                mean of the question cosine and the answer cosine, so a long context cannot drown the
                answer and a constant instruction cannot dominate.
Embeddings of a sample list are cached by content hash (model identity, mode, every text) under
$DAMOC_HOME/embeddings, written atomically, so a rerun on the same data embeds nothing.
"""
from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

EmbedMode = Literal["whole", "qa_separate"]
EMBED_MODES: tuple[str, ...] = ("whole", "qa_separate")


@lru_cache(maxsize=2)
def _load_model(model_path: str):
    # Imported lazily: sentence-transformers pulls in torch, which filters that need no embeddings avoid.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def _resolve(model_path: str | None) -> str:
    if model_path is None:
        from damoc.hf import default_embedding_model

        model_path = default_embedding_model()
    return str(model_path)


def _dim(model: Any) -> int:
    # sentence-transformers renamed the getter (old name deprecated); accept either.
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(dim_fn())


def _windows(model: Any, texts: Sequence[str]) -> tuple[list[str], list[tuple[int, int]], int]:
    """Split texts into encoder-sized windows: (window texts, (owner, n tokens) per window, n chunked)."""
    tok = model.tokenizer
    limit = int(model.max_seq_length or tok.model_max_length)
    budget = max(1, limit - tok.num_special_tokens_to_add(pair=False))
    out: list[str] = []
    owners: list[tuple[int, int]] = []
    chunked = 0
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False, truncation=False)["input_ids"] if text else []
        if len(ids) <= budget:
            out.append(text)
            owners.append((i, max(1, len(ids))))
            continue
        chunked += 1
        for s in range(0, len(ids), budget):
            piece = ids[s:s + budget]
            out.append(tok.decode(piece))
            owners.append((i, len(piece)))
    return out, owners, chunked


def encode_texts(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64,
                 progress: bool = False) -> tuple[np.ndarray, int]:
    """(embeddings, number of texts chunked): float32 unit rows, shape (len(texts), dim).

    Texts longer than the encoder's limit are embedded window by window and mean-pooled (see module doc).
    """
    model = _load_model(_resolve(model_path))
    if len(texts) == 0:
        return np.zeros((0, _dim(model)), dtype=np.float32), 0
    windows, owners, chunked = _windows(model, list(texts))
    emb = model.encode(windows, batch_size=batch_size, show_progress_bar=progress,
                       convert_to_numpy=True, normalize_embeddings=True).astype(np.float64)
    if chunked:
        pooled = np.zeros((len(texts), emb.shape[1]))
        for row, (owner, weight) in zip(emb, owners):
            pooled[owner] += weight * row
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        emb = pooled / np.where(norms == 0, 1, norms)
    return np.ascontiguousarray(emb, dtype=np.float32), chunked


def embed_texts(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64,
                progress: bool = False) -> np.ndarray:
    """Embed `texts` as float32 rows of unit L2 norm, shape (len(texts), dim); long texts chunked and pooled.

    Unit rows make the dot product the cosine similarity, which GraphCut relies on.
    """
    return encode_texts(texts, model_path, batch_size, progress)[0]


def _model_fingerprint(path: str) -> str:
    """Path plus the size and mtime of its files: a rebuilt or replaced model never reuses stale rows."""
    p = Path(path)
    parts = [str(p.resolve()) if p.exists() else path]
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.relative_to(p)}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_dir() -> Path:
    from damoc.paths import damoc_home

    return damoc_home() / "embeddings"


def _cache_key(model_path: str, mode: str, texts: Sequence[Sequence[str]]) -> str:
    h = hashlib.sha256(f"v1\0{_model_fingerprint(model_path)}\0{mode}\0".encode())
    for group in texts:
        for t in group:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        h.update(b"\1")
    return h.hexdigest()


def embed_samples(samples: Sequence[Any], model_path: str | None = None, *, mode: EmbedMode = "whole",
                  cache: bool = True, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Embed samples (objects with instruction/input/output) as unit float32 rows; returns (rows, stats).

    stats: embed_mode, embed_texts (texts encoded), embed_chunked (of those, how many were longer than the
    encoder's limit and chunked), embed_cache ("hit", "miss" or "off").
    """
    if mode not in EMBED_MODES:
        raise ValueError(f"embed mode must be one of {', '.join(EMBED_MODES)}, got {mode!r}")
    path = _resolve(model_path)
    if mode == "whole":
        groups = [["\n".join(p for p in (s.instruction, s.input, s.output) if p) for s in samples]]
    else:
        groups = [["\n".join(p for p in (s.instruction, s.input) if p) for s in samples],
                  [s.output for s in samples]]
    target = cache_dir() / f"{_cache_key(path, mode, groups)}.npz" if cache else None
    if target is not None and target.is_file():
        try:
            with np.load(target) as npz:
                meta = json.loads(str(npz["meta"]))
                return np.ascontiguousarray(npz["emb"], dtype=np.float32), {**meta, "embed_cache": "hit"}
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: recompute and overwrite
    parts = [encode_texts(g, path, batch_size, progress) for g in groups]
    chunked = sum(c for _, c in parts)
    if mode == "whole":
        emb = parts[0][0]
    else:
        emb = np.ascontiguousarray(np.hstack([parts[0][0], parts[1][0]]) / np.float32(np.sqrt(2.0)),
                                   dtype=np.float32)
    meta = {"embed_mode": mode, "embed_texts": sum(len(g) for g in groups), "embed_chunked": chunked}
    if target is not None:
        from damoc import atomic

        buf = io.BytesIO()
        np.savez(buf, emb=emb, meta=np.array(json.dumps(meta)))
        atomic.write_bytes(target, buf.getvalue())
    return emb, {**meta, "embed_cache": "miss" if cache else "off"}
