"""Data stages: fingerprint, load+validate, filter, compress. Thin wrappers over damoc.workflow.

Each data stage also writes a KFP Metrics artifact (seconds, kept rows, token ratio, ...:
damoc.selection.kfp_metrics). fingerprint-data is never cached: it says what the data files are now, and
prepare-data takes that as an input, so KFP's cache serves prepare-data (and everything after it) only while
the data's content is unchanged.
"""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def fingerprint_data(config: Input[Artifact]) -> NamedTuple("FingerprintOutputs", [("fingerprint", str),
                                                                                    ("started_at", float)]):
    """Fingerprint the run's data files as they are now and start the run's clock.

    Args:
        config: The validated run configuration (JSON), from validate-config.

    Returns:
        fingerprint: ETag/size of s3:// objects or the content hash of local files
            (damoc.workflow.data_fingerprint); a fresh value when the content cannot be told.
        started_at: The run's start time (epoch seconds), for the cost figures.
    """
    import time
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.data_fingerprint import data_fingerprint

    started_at = time.time()
    cfg = RunConfig.model_validate_json(Path(config.path).read_text())
    return namedtuple("FingerprintOutputs", ["fingerprint", "started_at"])(data_fingerprint(cfg.data), started_at)


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prepare_data(config: Input[Artifact], data_fingerprint: str, train: Output[Dataset], eval_set: Output[Dataset],
                 metrics: Output[Metrics]) -> NamedTuple("StageOutputs", [("stats", str)]):
    """Load and validate the training and evaluation data (the field mapping applied, row limits).

    Args:
        config: The validated run configuration (JSON), from validate-config.
        data_fingerprint: The data's content fingerprint from fingerprint-data: part of the cache key only.

    Returns:
        train: The training rows, normalised (JSONL); metadata: samples.
        eval_set: The evaluation rows, normalised (JSONL); metadata: samples.
        metrics: Seconds and row counts.
        stats: The stage's result (damoc.results.StageResult as JSON: status, seconds, counts).
    """
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
    """Select the most informative share of the training rows (the config's filter method and ratio).

    Args:
        config: The validated run configuration (JSON), from validate-config.
        train: The normalised training rows (JSONL), from prepare-data.

    Returns:
        selected: The kept rows (JSONL); metadata: the filter's figures (rows in and out, method).
        metrics: Seconds, rows in and out.
        stats: The stage's result (damoc.results.StageResult as JSON).
    """
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
    """Compress the kept rows' tokens (the config's compression rate, behind a similarity gate).

    Args:
        config: The validated run configuration (JSON), from validate-config.
        train: The filtered training rows (JSONL), from filter-data.

    Returns:
        compressed: The compressed rows (JSONL); metadata: the compression figures (token ratio, gate).
        metrics: Seconds, token and word ratios, gate pass rate.
        stats: The stage's result (damoc.results.StageResult as JSON).
    """
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
