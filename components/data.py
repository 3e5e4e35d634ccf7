"""Data stages: load+validate, filter, compress. Thin wrappers over damoc.workflow.data_steps.

Each also writes a KFP Metrics artifact (seconds, kept rows, token ratio, ...: damoc.selection.kfp_metrics).
"""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prepare_data(config: Input[Artifact], train: Output[Dataset], eval_set: Output[Dataset],
                 metrics: Output[Metrics]) -> NamedTuple("StageOutputs", [("stats", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import stage_metrics
    from damoc.workflow.cached_steps import prepare_data as step

    result = step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path),
                  Path(eval_set.path))
    train.metadata.update({"samples": result.stats["train_samples"]})
    eval_set.metadata.update({"samples": result.stats["eval_samples"]})
    for name, value in stage_metrics(result).items():
        metrics.log_metric(name, value)
    return namedtuple("StageOutputs", ["stats"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def filter_data(config: Input[Artifact], train: Input[Dataset], selected: Output[Dataset],
                metrics: Output[Metrics]) -> NamedTuple("StageOutputs", [("stats", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import stage_metrics
    from damoc.workflow.cached_steps import filter_step

    result = filter_step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path),
                         Path(selected.path))
    selected.metadata.update({k: v for k, v in result.stats.items() if isinstance(v, (int, float, str, bool))})
    for name, value in stage_metrics(result).items():
        metrics.log_metric(name, value)
    return namedtuple("StageOutputs", ["stats"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def compress_data(config: Input[Artifact], train: Input[Dataset], compressed: Output[Dataset],
                  metrics: Output[Metrics]) -> NamedTuple("StageOutputs", [("stats", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import stage_metrics
    from damoc.workflow.cached_steps import compress_step

    result = compress_step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path),
                           Path(compressed.path))
    compressed.metadata.update({k: v for k, v in result.stats.items() if isinstance(v, (int, float, str, bool))})
    for name, value in stage_metrics(result).items():
        metrics.log_metric(name, value)
    return namedtuple("StageOutputs", ["stats"])(result.model_dump_json())
