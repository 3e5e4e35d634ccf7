"""Which stages run in a mode. Grid search is the same graph with the compression stages off."""
from __future__ import annotations

from damoc.config import RunConfig


def filter_enabled(cfg: RunConfig) -> bool:
    from damoc.filtering import get_filter

    return cfg.mode == "damoc" and not get_filter(cfg.filter.method).passes_through and cfg.filter.ratio < 1.0


def compression_enabled(cfg: RunConfig) -> bool:
    return cfg.mode == "damoc" and cfg.compression.enabled and cfg.compression.rate < 1.0


def pruning_enabled(cfg: RunConfig) -> bool:
    return cfg.mode == "damoc" and cfg.pruning.enabled
