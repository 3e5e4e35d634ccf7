"""Lineage metadata of a candidate's model artifact: which candidate, layers kept, parameter count.

Read from what the steps already measured (the prune step's layer and parameter counts, the trainer's
parameter count); where a step measured nothing (pruning skipped, the model kept as it was) the checkpoint's
own files answer: `config.json` for the layer count and the safetensors headers for the parameter count, so
no weights are loaded. Values that cannot be known are left out rather than guessed.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from damoc.results import CandidateResult
from damoc.workflow.outcome import read_model_ref

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors header larger than this is not one


def _checkpoint_dir(model_dir: Path) -> Path | None:
    """The local checkpoint the artifact holds or refers to (a remote or hub reference: None)."""
    ref = read_model_ref(model_dir)
    if ref is None:
        return model_dir
    source = Path(str(ref.get("source", "")).removeprefix("file://"))
    return source if source.is_dir() else None  # zoo:// is resolved to a directory by the config already


def config_layers(checkpoint: Path) -> int | None:
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    return next((int(config[k]) for k in _LAYER_KEYS if isinstance(config.get(k), int)), None)


def safetensors_parameters(checkpoint: Path) -> int | None:
    """Sum of the tensor sizes in every *.safetensors header of the checkpoint (None without such files)."""
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > _HEADER_LIMIT:
                return None
            header = json.loads(fh.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
    return total


def model_metadata(model_dir: Path, result: CandidateResult) -> dict[str, Any]:
    """{candidate, status, layers_kept, layers_total, parameters} for a Model artifact's metadata."""
    meta: dict[str, Any] = {"candidate": result.candidate, "status": result.status}
    prune = result.stages.get("prune")
    stats = prune.stats if prune is not None else {}
    train = result.stages.get("train")
    checkpoint = _checkpoint_dir(Path(model_dir))
    kept = stats.get("num_layers_after")
    if kept is None and checkpoint is not None:
        kept = config_layers(checkpoint)
    if kept is not None:
        meta["layers_kept"] = int(kept)
        meta["layers_total"] = int(stats.get("num_layers_before") or kept)
    params = (train.stats.get("params") if train is not None else None) or stats.get("params_after")
    if params is None and checkpoint is not None:
        params = safetensors_parameters(checkpoint)
    if params is not None:
        meta["parameters"] = int(params)
    return meta
