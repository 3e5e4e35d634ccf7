"""Validate the pipeline parameters as a run configuration before any work starts."""
from kfp import dsl
from kfp.dsl import Artifact, Output

from components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def validate_config(
    mode: str, candidates: list, data_train: str, data_eval: str, data_task: str,
    data_field_instruction: str, data_field_input: str, data_field_output: str,
    data_max_train_samples: int, data_max_eval_samples: int,
    filter_method: str, filter_ratio: float, filter_graphcut_lambda: float, filter_embedding_model: str,
    filter_seed: int,
    compression_enabled: bool, compression_rate: float, compression_bertscore_threshold: float,
    compression_scorer_model: str, compression_segment_words: int, compression_rewrite: bool,
    pruning_enabled: bool, pruning_threshold: float, pruning_merge_keep_fraction: float,
    pruning_calibration_samples: int, pruning_max_prune_fraction: float,
    training_method: str, training_epochs: float, training_learning_rate: float, training_batch_size: int,
    training_max_length: int, training_seed: int, training_lora_r: int, training_lora_alpha: int,
    training_lora_dropout: float,
    evaluation_max_new_tokens: int, evaluation_batch_size: int, config: Output[Artifact],
) -> float:
    """Writes the validated configuration (JSON) and returns the run's start time (epoch seconds)."""
    args = dict(locals())  # first statement: exactly the parameters
    args.pop("config")
    import time
    from pathlib import Path

    from damoc.config import from_pipeline_arguments

    cfg = from_pipeline_arguments(args)
    Path(config.path).write_text(cfg.model_dump_json(indent=2))
    config.metadata.update({"mode": cfg.mode, "candidates": len(cfg.candidates)})
    return time.time()
