"""Validate the pipeline parameters as a run configuration before any work starts."""
from typing import NamedTuple

from kfp import dsl

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
    evaluation_max_new_tokens: int, evaluation_batch_size: int,
) -> NamedTuple("ValidatedConfig", config_json=str, started_at=float):
    args = dict(locals())  # first statement: exactly the parameters
    import time
    from collections import namedtuple

    from damoc.config import from_pipeline_arguments

    cfg = from_pipeline_arguments(args)
    out = namedtuple("ValidatedConfig", ["config_json", "started_at"])
    return out(cfg.model_dump_json(), time.time())
