"""The DaMoC selection pipeline: wiring only; every stage lives in components/ and the damoc library.

Parameters: one per config section (a JSON object prefilled with the schema's defaults), `mode`,
`candidates`, and the run parameters `output_uri` and `s3_secret_name`. Defaults and help texts come from
the config schema (damoc.config_params); a test fails if this signature and the schema disagree.
`mode="grid_search"` runs the same graph with filtering, compression and pruning switched off.
Per-task CPU/memory requests and limits and accelerators come from the config's `resources` section, applied
when the pipeline is built (build_pipeline), not as parameters.

Caching (a scheduled service re-runs the same parameters): validate-config is a pure function of its
parameters; fingerprint-data is never cached and hands the data files' content fingerprint to prepare-data,
so prepare-data and everything after it are served from KFP's cache only while the data is unchanged; the
rank task is never cached (it writes to output_uri and reads the run's start time). `damoc submit/schedule
--no-cache` switches caching off for every task.
Retries with exponential back-off on the GPU tasks and the tasks that talk to the object store (RETRIED).
Images: the training image on the GPU tasks (fine-tune, evaluate), the component image elsewhere
(damoc_components.images; `damoc upload --image-*` rewrites them per family).
"""
from kfp import dsl, kubernetes

from damoc.cluster.deploy_settings import CONFIG_MAP_NAME, keys_for_task
from damoc.config import ResourcesConfig, TaskResources
from damoc.config_params import pipeline_defaults, pipeline_docstring
from damoc_components.candidate import evaluate_model, finetune_model, prune_model
from damoc_components.config import validate_config
from damoc_components.data import compress_data, filter_data, fingerprint_data, prepare_data
from damoc_components.rank import rank_candidates

PIPELINE_NAME = "damoc-selection"
SUMMARY = "Select the LLM to fine-tune on domain data via data and model compression (DaMoC)."
NON_ROOT_UID = 1000
# Keys of the S3 Secret passed to every task (each optional): credentials, endpoint, and the object-store
# retry settings (deployment settings, damoc.storage.RetrySettings), kept beside the endpoint they tune.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DAMOC_S3_ENDPOINT", "DAMOC_S3_RETRIES",
                  "DAMOC_S3_BACKOFF_S", "DAMOC_S3_BACKOFF_MAX_S", "DAMOC_S3_TIMEOUT_S")
KFP_STORE_SECRET_KEYS = {"accesskey": "MINIO_ACCESS_KEY", "secretkey": "MINIO_SECRET_KEY"}
# Keys of the API-key Secret, mounted only into the tasks that call an LLM endpoint (filter: the alpagasus
# judge; compress: the rewriter). Each optional: a run without endpoints needs no such Secret.
API_KEY_SECRET_KEYS = ("DAMOC_REWRITER_API_KEY", "OPENAI_API_KEY")
ENDPOINT_TASKS = ("filter", "compress")
DEFAULTS_CONFIG_MAP = CONFIG_MAP_NAME  # the Helm chart's ConfigMap (damoc.cluster.deploy_settings); optional
# Tasks retried on failure (a candidate's own failure is recorded in its result, never raised, so a retry
# only repeats what failed around it: a preempted GPU node, an object-store outage, an evicted pod).
RETRIED = ("fingerprint-data", "prepare-data", "prune-model", "finetune-model", "evaluate-model",
           "rank-candidates")
RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "1800s"}
UNCACHED = ("fingerprint-data", "rank-candidates")
_D = pipeline_defaults()


def _harden(task: dsl.PipelineTask, s3_secret_name: str) -> dsl.PipelineTask:
    """S3 credentials come from a Kubernetes Secret (never parameters); containers run as non-root.

    allowPrivilegeEscalation=false, all capabilities dropped and seccompProfile RuntimeDefault are not
    expressible per task in kfp-kubernetes 2.17: its set_security_context documents that the KFP backend
    enforces them for every task container itself."""
    kubernetes.use_secret_as_env(
        task, secret_name=s3_secret_name, optional=True,
        secret_key_to_env={name: name for name in S3_SECRET_KEYS})
    # KFP's own object-store Secret (mlpipeline-minio-artifact) names its keys accesskey/secretkey: mapped, also
    # optional, to the MinIO variables damoc.storage falls back to when the AWS_* ones are absent.
    kubernetes.use_secret_as_env(task, secret_name=s3_secret_name, optional=True,
                                 secret_key_to_env=KFP_STORE_SECRET_KEYS)
    kubernetes.set_security_context(task, run_as_user=NON_ROOT_UID, run_as_group=NON_ROOT_UID,
                                    run_as_non_root=True)
    return task


def _sized(task: dsl.PipelineTask, resources: TaskResources, accelerator_type: str) -> dsl.PipelineTask:
    """Requests and limits from the config's resources section; accelerators also tolerate their taint."""
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    if resources.accelerators:
        task.set_accelerator_type(accelerator_type).set_accelerator_limit(resources.accelerators)
        kubernetes.add_toleration(task, key=accelerator_type, operator="Exists", effect="NoSchedule")
    return task


def build_pipeline(resources: ResourcesConfig | None = None):
    """The pipeline with per-task resources fixed at compile time (kfp.local, which runs this same function,
    cannot resolve pipeline parameters in resource fields inside a ParallelFor)."""
    res = resources or ResourcesConfig()

    def task(component_task: dsl.PipelineTask, name: str, s3_secret_name: str,
             api_key_secret_name: str | None = None) -> dsl.PipelineTask:
        task_name = component_task.component_spec.name.replace("_", "-")
        if api_key_secret_name is not None:
            kubernetes.use_secret_as_env(component_task, secret_name=api_key_secret_name, optional=True,
                                         secret_key_to_env={k: k for k in API_KEY_SECRET_KEYS})
        settings = keys_for_task(task_name)
        if settings:
            kubernetes.use_config_map_as_env(component_task, config_map_name=DEFAULTS_CONFIG_MAP, optional=True,
                                             config_map_key_to_env=settings)
        if task_name in RETRIED:
            component_task.set_retry(**RETRY)
        if task_name in UNCACHED:
            component_task.set_caching_options(False)
        return _sized(_harden(component_task, s3_secret_name), getattr(res, name), res.accelerator_type)

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
        api_key_secret_name: str = _D["api_key_secret_name"],
    ) -> str:
        config = task(validate_config(
            mode=mode, candidates=candidates, data=data, filter=filter, compression=compression, pruning=pruning,
            training=training, evaluation=evaluation,
        ).set_display_name("validate config"), "validate_config", s3_secret_name)
        cfg = config.outputs["config"]
        snapshot = task(fingerprint_data(config=cfg).set_display_name("fingerprint data"), "validate_config",
                        s3_secret_name)

        prepared = task(prepare_data(config=cfg, data_fingerprint=snapshot.outputs["fingerprint"])
                        .set_display_name("load + validate data"), "prepare", s3_secret_name)
        filtered = task(filter_data(config=cfg, train=prepared.outputs["train"]).set_display_name("filter"),
                        "filter", s3_secret_name, api_key_secret_name)
        compressed = task(compress_data(config=cfg, train=filtered.outputs["selected"])
                          .set_display_name("compress tokens"), "compress", s3_secret_name, api_key_secret_name)

        with dsl.ParallelFor(candidates, name="per-candidate") as candidate:
            pruned = task(prune_model(config=cfg, candidate=candidate, calibration=filtered.outputs["selected"])
                          .set_display_name("prune + merge layers"), "prune", s3_secret_name)
            trained = task(finetune_model(config=cfg, candidate=candidate, base_model=pruned.outputs["model"],
                                          train=compressed.outputs["compressed"])
                           .set_display_name("fine-tune"), "train", s3_secret_name)
            evaluated = task(evaluate_model(config=cfg, candidate=candidate, model=trained.outputs["model"],
                                            eval_set=prepared.outputs["eval_set"])
                             .set_display_name("evaluate"), "evaluate", s3_secret_name)

        ranked = task(rank_candidates(
            config=cfg, results=dsl.Collected(evaluated.outputs["result"]), prepare_stats=prepared.outputs["stats"],
            filter_stats=filtered.outputs["stats"], compress_stats=compressed.outputs["stats"],
            started_at=snapshot.outputs["started_at"], output_uri=output_uri,
        ).set_display_name("rank + report"), "rank", s3_secret_name)
        return ranked.outputs["selected"]

    # The help text of every parameter is generated from the config schema, then the function becomes a pipeline.
    damoc_pipeline.__doc__ = pipeline_docstring(SUMMARY)
    return dsl.pipeline(name=PIPELINE_NAME, description=SUMMARY)(damoc_pipeline)


# The schema's default resources: what `damoc compile` (no --config) and the local runner use.
damoc_pipeline = build_pipeline()
