"""The DaMoC selection pipeline: wiring only; every stage lives in components/ and the damoc library.

Parameters: one per config section (a JSON object prefilled with the schema's defaults), `mode`,
`candidates`, and the run parameters `output_uri` and `s3_secret_name`. Defaults and help texts come from
the config schema (damoc.config_params); a test fails if this signature and the schema disagree.
`mode="grid_search"` runs the same graph with filtering, compression and pruning switched off.
"""
from kfp import dsl, kubernetes

from damoc.config_params import pipeline_defaults, pipeline_docstring
from damoc_components.candidate import evaluate_model, finetune_model, prune_model
from damoc_components.config import validate_config
from damoc_components.data import compress_data, filter_data, prepare_data
from damoc_components.rank import rank_candidates

PIPELINE_NAME = "damoc-selection"
SUMMARY = "Select the LLM to fine-tune on domain data via data and model compression (DaMoC)."
# Accelerator settings are compile-time constants: kfp.local (2.17) cannot resolve pipeline parameters
# used in resource fields inside a ParallelFor, and the local run must execute this same function.
ACCELERATOR_TYPE = "nvidia.com/gpu"
TRAIN_ACCELERATORS = 1
GPU_TOLERATION_KEY = "nvidia.com/gpu"
NON_ROOT_UID = 1000
_D = pipeline_defaults()


def _harden(task: dsl.PipelineTask, s3_secret_name: str) -> dsl.PipelineTask:
    """S3 credentials come from a Kubernetes Secret (never parameters); containers run as non-root."""
    kubernetes.use_secret_as_env(
        task, secret_name=s3_secret_name, optional=True,
        secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                           "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
                           "DAMOC_S3_ENDPOINT": "DAMOC_S3_ENDPOINT"})
    kubernetes.set_security_context(task, run_as_user=NON_ROOT_UID, run_as_group=NON_ROOT_UID,
                                    run_as_non_root=True)
    return task


def damoc_pipeline(
    candidates: list,
    data: dict = _D["data"],
    mode: str = _D["mode"],
    filter: dict = _D["filter"],  # noqa: A002 — the config section's name
    compression: dict = _D["compression"],
    pruning: dict = _D["pruning"],
    training: dict = _D["training"],
    evaluation: dict = _D["evaluation"],
    output_uri: str = _D["output_uri"],
    s3_secret_name: str = _D["s3_secret_name"],
) -> str:
    config = _harden(validate_config(
        mode=mode, candidates=candidates, data=data, filter=filter, compression=compression, pruning=pruning,
        training=training, evaluation=evaluation,
    ).set_display_name("validate config"), s3_secret_name)
    cfg = config.outputs["config"]

    prepared = _harden(prepare_data(config=cfg).set_display_name("load + validate data"), s3_secret_name)
    filtered = _harden(filter_data(config=cfg, train=prepared.outputs["train"]).set_display_name("filter"),
                       s3_secret_name)
    compressed = _harden(compress_data(config=cfg, train=filtered.outputs["selected"])
                         .set_display_name("compress tokens"), s3_secret_name)

    with dsl.ParallelFor(candidates, name="per-candidate") as candidate:
        pruned = _harden(prune_model(config=cfg, candidate=candidate, calibration=filtered.outputs["selected"])
                         .set_display_name("prune + merge layers"), s3_secret_name)
        trained = _harden(finetune_model(config=cfg, candidate=candidate, base_model=pruned.outputs["model"],
                                         train=compressed.outputs["compressed"])
                          .set_display_name("fine-tune"), s3_secret_name)
        trained.set_accelerator_type(ACCELERATOR_TYPE).set_accelerator_limit(TRAIN_ACCELERATORS)
        trained.set_cpu_request("4").set_memory_request("32G")
        kubernetes.add_toleration(trained, key=GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")
        evaluated = _harden(evaluate_model(config=cfg, candidate=candidate, model=trained.outputs["model"],
                                           eval_set=prepared.outputs["eval_set"])
                            .set_display_name("evaluate"), s3_secret_name)
        evaluated.set_accelerator_type(ACCELERATOR_TYPE).set_accelerator_limit(1)
        kubernetes.add_toleration(evaluated, key=GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")

    ranked = _harden(rank_candidates(
        config=cfg, results=dsl.Collected(evaluated.outputs["result"]), prepare_stats=prepared.outputs["stats"],
        filter_stats=filtered.outputs["stats"], compress_stats=compressed.outputs["stats"],
        started_at=config.outputs["started_at"], output_uri=output_uri,
    ).set_display_name("rank + report"), s3_secret_name)
    return ranked.outputs["selected"]


# The help text of every parameter is generated from the config schema, then the function becomes a pipeline.
damoc_pipeline.__doc__ = pipeline_docstring(SUMMARY)
damoc_pipeline = dsl.pipeline(name=PIPELINE_NAME, description=SUMMARY)(damoc_pipeline)
