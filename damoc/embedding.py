"""Sentence embeddings on CPU for the distribution-aware filters (default: local all-MiniLM-L6-v2)."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np


@lru_cache(maxsize=2)
def _load_model(model_path: str):
    # Imported lazily: sentence-transformers pulls in torch, which filters that need no embeddings avoid.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def embed_texts(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64,
                progress: bool = False) -> np.ndarray:
    """Embed `texts` as float32 rows of unit L2 norm, shape (len(texts), dim).

    Unit rows make the dot product the cosine similarity, which GraphCut relies on.
    """
    if model_path is None:
        from damoc.hf import default_embedding_model

        model_path = default_embedding_model()
    model = _load_model(str(model_path))
    if len(texts) == 0:
        # sentence-transformers renamed the getter (old name deprecated); accept either.
        dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dim_fn()), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                       convert_to_numpy=True, normalize_embeddings=True)
    return np.ascontiguousarray(emb, dtype=np.float32)
