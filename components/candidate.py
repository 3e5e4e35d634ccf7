"""Per-candidate stages (inside the ParallelFor): prune+merge, fine-tune, evaluate."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prune_model(config: Input[Artifact], candidate: dict, calibration: Input[Dataset],
                model: Output[Model]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import prune_step

    result = prune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                        Path(calibration.path), Path(model.path))
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def finetune_model(config: Input[Artifact], candidate: dict, base_model: Input[Model], train: Input[Dataset],
                   model: Output[Model]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import finetune_step

    result = finetune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                           Path(base_model.path), Path(train.path), Path(model.path))
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def evaluate_model(config: Input[Artifact], candidate: dict, model: Input[Model],
                   eval_set: Input[Dataset]) -> NamedTuple("CandidateOutputs", [("result", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.candidate_steps import evaluate_step

    result = evaluate_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                           Path(model.path), Path(eval_set.path))
    return namedtuple("CandidateOutputs", ["result"])(result.model_dump_json())
