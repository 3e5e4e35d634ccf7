"""Cheap checks before any work: which candidates a DaMoC stage will not be able to handle.

By default (pruning.on_unsupported: unpruned) such candidates are never dropped: they are trained unpruned and
flagged, and the user learns it in seconds, from `damoc validate`/`damoc run` and the pipeline's first task,
instead of from the ranking hours later. With on_unsupported: fail, a candidate whose architecture pruning does
not know stops the run right there (ConfigError: the config-validation task fails, the CLI exits 2), before
any data stage has run.
"""
from __future__ import annotations

from damoc.config import ConfigError, RunConfig
from damoc.workflow.stage_switches import pruning_enabled
from damoc.workflow.step_runner import error_summary


def pruning_warnings(cfg: RunConfig) -> list[str]:
    """One line per candidate that will be trained unpruned (reads config.json only; no weights).

    Raises ConfigError naming the candidate, its architecture and the supported list when
    pruning.on_unsupported is "fail" and a candidate's architecture cannot be pruned.
    """
    if not pruning_enabled(cfg):
        return []
    from damoc.pruning.architectures import UnsupportedArchitectureError, check_architecture

    warnings = []
    for cand in cfg.candidates:
        if cfg.pruning.needs_base and not cand.base_path:
            warnings.append(f"candidates[{cand.name}]: no base_path, so it will be trained unpruned (flagged) "
                            "while pruned rivals lose layers")
            continue
        if cand.path.startswith("zoo://"):
            continue  # the built-in zoo: every architecture in it is known (and it may not be built yet)
        try:
            check_architecture(cand.path, trust_remote_code=cand.trust_remote_code)
        except UnsupportedArchitectureError as err:
            if cfg.pruning.on_unsupported == "fail":
                message = " ".join(str(err).split())  # the whole message (supported list, remote-code hint)
                raise ConfigError(f"candidates[{cand.name}]: cannot be pruned: {message} "
                                  "(pruning.on_unsupported: fail; set it to unpruned to train such a candidate "
                                  "with all its layers, flagged)") from None
            warnings.append(f"candidates[{cand.name}]: {error_summary(err)}; it will be trained unpruned (flagged)")
        except ValueError as err:
            warnings.append(f"candidates[{cand.name}]: {error_summary(err)}; it will be trained unpruned (flagged)")
        except Exception as err:  # noqa: BLE001 — unreachable store etc.: the prune task will say more
            warnings.append(f"candidates[{cand.name}]: could not check its architecture ({type(err).__name__})")
    return warnings
