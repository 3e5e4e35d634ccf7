"""Validate the pipeline parameters as a run configuration before any work starts."""
from kfp import dsl
from kfp.dsl import Artifact, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def validate_config(mode: str, candidates: list, data: dict, filter: dict, compression: dict,  # noqa: A002
                    pruning: dict, training: dict, evaluation: dict, config: Output[Artifact]):
    """Validate the parameters as one run configuration and write it as a JSON artifact.

    One parameter per config section (damoc.config.SECTIONS): a test keeps this list equal to the schema's.
    A pure function of its parameters, so KFP may cache it; the run's start time comes from the uncached
    fingerprint-data task instead.

    Args:
        mode: damoc (compress data and models, rank proxies) or grid_search (the ground truth).
        candidates: The candidate models: a list of {name, path, base_path, ...}.
        data: The `data` section: training and evaluation files, task, field mapping, row limits.
        filter: The `filter` section: data selection method and ratio.
        compression: The `compression` section: token compression rate and gate.
        pruning: The `pruning` section: layer pruning and merging.
        training: The `training` section: the proxy fine-tuning recipe and launcher.
        evaluation: The `evaluation` section: ranking signal, bootstrap, generation settings.

    Returns:
        config: The validated configuration (damoc.config.RunConfig as JSON); metadata: mode, candidates,
            warnings.
    """
    args = dict(locals())  # first statement: exactly the parameters
    args.pop("config")
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
