"""Per-candidate stages (inside the ParallelFor): prune+merge, fine-tune, evaluate.

Each also writes a KFP Metrics artifact (damoc.selection.kfp_metrics.candidate_metrics): prune and fine-tune
show their own stage; evaluate shows the candidate's whole way (score, loglik, layers kept, flags, seconds).
The candidate's result so far travels inside its Model artifact (damoc_result.json); evaluate writes the
final one as a JSON artifact for the rank task. No result travels as a parameter: with per-row values and
examples it outgrows what an argument (128 KiB on Linux) and the metadata store hold.
Fine-tune and evaluate are the GPU tasks: they run the training image (damoc_components.images).
"""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from damoc_components.images import DAMOC_IMAGE, TRAINING_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prune_model(config: Input[Artifact], candidate: dict, calibration: Input[Dataset], model: Output[Model],
                metrics: Output[Metrics]):
    """Prune and merge the candidate's layers (or keep it whole, flagged, where pruning does not apply).

    Args:
        config: The validated run configuration (JSON), from validate-config.
        candidate: One entry of the pipeline's `candidates` list (name, path, base_path, ...).
        calibration: The filtered training rows (JSONL) whose activations decide which layers go.

    Returns:
        model: The pruned checkpoint, or a reference to the unchanged one, with the candidate's result so
            far; metadata: candidate, status, layers_kept, layers_total, parameters.
        metrics: Seconds, layers kept and pruned, parameters before and after.
    """
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import prune_step
    from damoc.workflow.model_metadata import model_metadata

    result = prune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                        Path(calibration.path), Path(model.path))
    model.metadata.update(model_metadata(Path(model.path), result))
    for name, value in candidate_metrics(result, stages=("prune",)).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def finetune_model(config: Input[Artifact], candidate: dict, base_model: Input[Model], train: Input[Dataset],
                   model: Output[Model], metrics: Output[Metrics]):
    """Fine-tune the (pruned) candidate on the compressed training rows with the run's training recipe.

    Args:
        config: The validated run configuration (JSON), from validate-config.
        candidate: One entry of the pipeline's `candidates` list (name, path, training_method, ...).
        base_model: The pruned checkpoint from prune-model (a failed candidate passes its failure on).
        train: The compressed training rows (JSONL), from compress-data.

    Returns:
        model: The fine-tuned checkpoint (or adapter) with the candidate's result so far; metadata:
            candidate, status, layers_kept, layers_total, parameters.
        metrics: Seconds, training loss, steps, tokens, GPU-hours.
    """
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import finetune_step
    from damoc.workflow.model_metadata import model_metadata

    result = finetune_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                           Path(base_model.path), Path(train.path), Path(model.path))
    model.metadata.update(model_metadata(Path(model.path), result))
    for name, value in candidate_metrics(result, stages=("train",)).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def evaluate_model(config: Input[Artifact], candidate: dict, model: Input[Model], eval_set: Input[Dataset],
                   result: Output[Artifact], metrics: Output[Metrics]):
    """Score the fine-tuned candidate on the evaluation rows (log-likelihood of the references, the metric).

    Args:
        config: The validated run configuration (JSON), from validate-config.
        candidate: One entry of the pipeline's `candidates` list.
        model: The fine-tuned checkpoint from finetune-model.
        eval_set: The evaluation rows (JSONL), from prepare-data.

    Returns:
        result: The candidate's whole result (JSON, damoc.results.CandidateResult: every stage's figures,
            per-row scores and log-likelihoods, a few examples), collected by rank-candidates; metadata:
            candidate, status, score.
        metrics: The candidate's way: score, loglik, layers kept, flags, seconds per stage.
    """
    import math
    from pathlib import Path

    from damoc import atomic
    from damoc.config import RunConfig
    from damoc.selection.kfp_metrics import candidate_metrics
    from damoc.workflow.cached_steps import evaluate_step

    outcome = evaluate_step(RunConfig.model_validate_json(Path(config.path).read_text()), candidate,
                            Path(model.path), Path(eval_set.path))
    atomic.write_text(Path(result.path), outcome.model_dump_json())
    score = outcome.score if outcome.score is not None and math.isfinite(outcome.score) else None
    result.metadata.update({"candidate": outcome.candidate, "status": outcome.status, "score": score})
    for name, value in candidate_metrics(outcome, stages=None).items():
        metrics.log_metric(name, value)
