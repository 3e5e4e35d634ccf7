"""Fine-tuning method per candidate: full, LoRA, or both (each candidate trained and evaluated both ways).

`training.method: both` is carried out by expanding each candidate into two ordinary candidates,
``<name>@full`` and ``<name>@lora``, each with its own ``training_method``. The KFP ParallelFor, kfp.local
and the rank step then treat them like any other candidates (no new pipeline wiring); the ranking groups the
variants back by model to say which method won (damoc.selection.ranking.method_selection).

The expansion happens when the config is validated; the pipeline's fan-out runs over the ``candidates``
parameter as passed, so `damoc run` / `damoc submit` pass the expanded list, and a hand-written
(unexpanded) list with ``both`` is refused by :func:`check_fanout` before any work starts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # damoc.config imports this module: only types from it here
    from damoc.config import Candidate, RunConfig, TrainingConfig

METHODS: tuple[str, ...] = ("full", "lora")
SEPARATOR = "@"


def split_variant(name: str) -> tuple[str, str | None]:
    """'m@lora' -> ('m', 'lora'); a name without a method suffix -> (name, None)."""
    base, sep, suffix = name.rpartition(SEPARATOR)
    if sep and suffix in METHODS:
        return base, suffix
    return name, None


def variant_name(name: str, method: str) -> str:
    return f"{name}{SEPARATOR}{method}"


def expand_candidates(candidates: Sequence["Candidate"]) -> list["Candidate"]:
    """Each candidate without a training_method becomes one variant per method; the others stay as given."""
    out: list[Candidate] = []
    for cand in candidates:
        if cand.training_method is not None:
            out.append(cand)
            continue
        out += [cand.model_copy(update={"name": variant_name(cand.name, m), "training_method": m})
                for m in METHODS]
    return out


def training_for(settings: "TrainingConfig", candidate: "Candidate") -> "TrainingConfig":
    """The training settings one candidate is trained with: its own training_method, if any, wins."""
    method = candidate.training_method or settings.method
    if method not in METHODS:
        raise ValueError(f"candidate '{candidate.name}': training.method is {method!r} but the candidate has no "
                         "training_method; 'both' is resolved by expanding the candidates (damoc.config)")
    return settings if method == settings.method else settings.model_copy(update={"method": method})


def check_fanout(raw_candidates: Sequence[dict[str, Any]], cfg: "RunConfig") -> None:
    """The pipeline fans out over the `candidates` parameter as given: it must already be the validated list."""
    from damoc.config import ConfigError

    given = [c.get("name") if isinstance(c, dict) else None for c in raw_candidates]
    expected = [c.name for c in cfg.candidates]
    if given != expected:
        raise ConfigError(f"candidates: training.method is '{cfg.training.method}', so the pipeline needs the "
                          f"expanded list {expected}, got {given}; submit with `damoc run`/`damoc submit` (which "
                          "expand it) or list each '<name>@full' / '<name>@lora' with its training_method")
