"""Per-candidate stages (inside the ParallelFor): prune+merge, fine-tune, evaluate.

Each also writes a KFP Metrics artifact (damoc.selection.kfp_metrics.candidate_metrics): prune and fine-tune
show their own stage; evaluate shows the candidate's whole way (score, loglik, layers kept, flags, seconds).
"""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prune_model(config: Input[Artifact], candidate: dict, calibration: Input[Dataset], model: Output[Model],
                metrics: Output[Metrics]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import prune_step

    result = prune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                        Path(calibration.path), Path(model.path))
    for name, value in candidate_metrics(result, stages=("prune",)).items():
        metrics.log_metric(name, value)
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def finetune_model(config: Input[Artifact], candidate: dict, base_model: Input[Model], train: Input[Dataset],
                   model: Output[Model],
                   metrics: Output[Metrics]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import finetune_step

    result = finetune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                           Path(base_model.path), Path(train.path), Path(model.path))
    for name, value in candidate_metrics(result, stages=("train",)).items():
        metrics.log_metric(name, value)
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def evaluate_model(config: Input[Artifact], candidate: dict, model: Input[Model], eval_set: Input[Dataset],
                   metrics: Output[Metrics]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import evaluate_step

    result = evaluate_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                           Path(model.path), Path(eval_set.path))
    for name, value in candidate_metrics(result, stages=None).items():
        metrics.log_metric(name, value)
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())
