"""Cheap checks before any work: which candidates a DaMoC stage will not be able to handle.

Such candidates are never dropped (they are trained unpruned and flagged); the user learns it in seconds, from
`damoc validate`/`damoc run` and the pipeline's first task, instead of from the ranking hours later.
"""
from __future__ import annotations

from damoc.config import RunConfig
from damoc.workflow.stage_switches import pruning_enabled
from damoc.workflow.step_runner import error_summary


def pruning_warnings(cfg: RunConfig) -> list[str]:
    """One line per candidate that will be trained unpruned (reads config.json only; no weights)."""
    if not pruning_enabled(cfg):
        return []
    from damoc.pruning.architectures import check_architecture

    warnings = []
    for cand in cfg.candidates:
        if not cand.base_path:
            warnings.append(f"candidates[{cand.name}]: no base_path, so it will be trained unpruned (flagged) "
                            "while pruned rivals lose layers")
            continue
        if cand.path.startswith("zoo://"):
            continue  # the built-in zoo: every architecture in it is known (and it may not be built yet)
        try:
            check_architecture(cand.path, trust_remote_code=cand.trust_remote_code)
        except ValueError as err:
            warnings.append(f"candidates[{cand.name}]: {error_summary(err)}; it will be trained unpruned (flagged)")
        except Exception as err:  # noqa: BLE001 — unreachable store etc.: the prune task will say more
            warnings.append(f"candidates[{cand.name}]: could not check its architecture ({type(err).__name__})")
    return warnings
