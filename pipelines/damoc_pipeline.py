"""The DaMoC selection pipeline: wiring only; every stage lives in components/ and the damoc library.

Its parameters mirror the run configuration's keys (section_key, see damoc.config.to_pipeline_arguments),
typed and with the same defaults, so a KFP UI user fills in a form. `mode="grid_search"` runs the same
graph with filtering, compression and pruning switched off: the ground truth DaMoC is compared with.
"""
from kfp import dsl, kubernetes

from components.candidate import evaluate_model, finetune_model, prune_model
from components.config import validate_config
from components.data import compress_data, filter_data, prepare_data
from components.rank import rank_candidates

PIPELINE_NAME = "damoc-selection"
# Accelerator settings are compile-time constants: kfp.local (2.17) cannot resolve pipeline parameters
# used in resource fields inside a ParallelFor, and the local run must execute this same function.
ACCELERATOR_TYPE = "nvidia.com/gpu"
TRAIN_ACCELERATORS = 1
GPU_TOLERATION_KEY = "nvidia.com/gpu"
NON_ROOT_UID = 1000


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


@dsl.pipeline(name=PIPELINE_NAME,
              description="Select the LLM to fine-tune on domain data via data and model compression (DaMoC).")
def damoc_pipeline(
    candidates: list,
    data_train: str,
    data_eval: str,
    mode: str = "damoc",
    output_uri: str = "",
    s3_secret_name: str = "s3-credentials",
    data_task: str = "qa_long",
    data_field_instruction: str = "instruction",
    data_field_input: str = "input",
    data_field_output: str = "output",
    data_max_train_samples: int = 0,
    data_max_eval_samples: int = 200,
    filter_method: str = "graphcut",
    filter_ratio: float = 0.2,
    filter_graphcut_lambda: float = 0.4,
    filter_embedding_model: str = "",
    filter_seed: int = 0,
    compression_enabled: bool = True,
    compression_rate: float = 0.6,
    compression_bertscore_threshold: float = 0.9,
    compression_scorer_model: str = "",
    compression_segment_words: int = 200,
    compression_rewrite: bool = False,
    pruning_enabled: bool = True,
    pruning_threshold: float = 0.85,
    pruning_merge_keep_fraction: float = 0.2,
    pruning_calibration_samples: int = 32,
    pruning_max_prune_fraction: float = 0.5,
    training_method: str = "full",
    training_epochs: float = 1.0,
    training_learning_rate: float = 0.001,
    training_batch_size: int = 16,
    training_max_length: int = 256,
    training_seed: int = 0,
    training_lora_r: int = 16,
    training_lora_alpha: int = 32,
    training_lora_dropout: float = 0.0,
    evaluation_max_new_tokens: int = 64,
    evaluation_batch_size: int = 16,
) -> str:
    config = _harden(validate_config(
        mode=mode, candidates=candidates, data_train=data_train, data_eval=data_eval, data_task=data_task,
        data_field_instruction=data_field_instruction, data_field_input=data_field_input,
        data_field_output=data_field_output, data_max_train_samples=data_max_train_samples,
        data_max_eval_samples=data_max_eval_samples, filter_method=filter_method, filter_ratio=filter_ratio,
        filter_graphcut_lambda=filter_graphcut_lambda, filter_embedding_model=filter_embedding_model,
        filter_seed=filter_seed, compression_enabled=compression_enabled, compression_rate=compression_rate,
        compression_bertscore_threshold=compression_bertscore_threshold,
        compression_scorer_model=compression_scorer_model, compression_segment_words=compression_segment_words,
        compression_rewrite=compression_rewrite, pruning_enabled=pruning_enabled,
        pruning_threshold=pruning_threshold, pruning_merge_keep_fraction=pruning_merge_keep_fraction,
        pruning_calibration_samples=pruning_calibration_samples,
        pruning_max_prune_fraction=pruning_max_prune_fraction, training_method=training_method,
        training_epochs=training_epochs, training_learning_rate=training_learning_rate,
        training_batch_size=training_batch_size, training_max_length=training_max_length,
        training_seed=training_seed, training_lora_r=training_lora_r, training_lora_alpha=training_lora_alpha,
        training_lora_dropout=training_lora_dropout, evaluation_max_new_tokens=evaluation_max_new_tokens,
        evaluation_batch_size=evaluation_batch_size,
    ).set_display_name("validate config"), s3_secret_name)
    cfg = config.outputs["config"]

    data = _harden(prepare_data(config=cfg).set_display_name("load + validate data"), s3_secret_name)
    filtered = _harden(filter_data(config=cfg, train=data.outputs["train"]).set_display_name("filter"),
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
                                           eval_set=data.outputs["eval_set"])
                            .set_display_name("evaluate"), s3_secret_name)
        evaluated.set_accelerator_type(ACCELERATOR_TYPE).set_accelerator_limit(1)
        kubernetes.add_toleration(evaluated, key=GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")

    ranked = _harden(rank_candidates(
        config=cfg, results=dsl.Collected(evaluated.outputs["Output"]), data_stats=data.outputs["Output"],
        filter_stats=filtered.outputs["Output"], compression_stats=compressed.outputs["Output"],
        started_at=config.outputs["Output"], output_uri=output_uri,
    ).set_display_name("rank + report"), s3_secret_name)
    return ranked.outputs["Output"]
