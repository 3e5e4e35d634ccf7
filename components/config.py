"""Validate the pipeline parameters as a run configuration before any work starts."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def validate_config(mode: str, candidates: list, data: dict, filter: dict, compression: dict,  # noqa: A002
                    pruning: dict, training: dict, evaluation: dict,
                    config: Output[Artifact]) -> NamedTuple("Outputs", [("started_at", float)]):
    """Writes the validated configuration (JSON artifact) and returns the run's start time (epoch seconds).

    One parameter per config section (damoc.config.SECTIONS): a test keeps this list equal to the schema's.
    """
    args = dict(locals())  # first statement: exactly the parameters
    args.pop("config")
    import time
    from collections import namedtuple
    from pathlib import Path

    from damoc.config_params import from_pipeline_arguments

    from damoc.workflow.preflight import pruning_warnings

    from damoc.training.methods import check_fanout

    cfg = from_pipeline_arguments(args)
    check_fanout(candidates, cfg)  # the ParallelFor runs over `candidates` as given: training.method both expands it
    warnings = pruning_warnings(cfg)  # candidates pruning cannot handle: trained unpruned, flagged, never dropped
    for line in warnings:
        print(f"warning: {line}")
    Path(config.path).write_text(cfg.model_dump_json(indent=2))
    config.metadata.update({"mode": cfg.mode, "candidates": len(cfg.candidates), "warnings": warnings})
    return namedtuple("Outputs", ["started_at"])(time.time())
