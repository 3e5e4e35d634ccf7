"""Fan-in: rank candidates, write selection.json and the report (also as KFP Markdown + Metrics)."""
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def rank_candidates(config: Input[Artifact], results: List[str], prepare_stats: str, filter_stats: str,
                    compress_stats: str, started_at: float, output_uri: str, selection: Output[Artifact],
                    report: Output[Markdown], metrics: Output[Metrics]) -> NamedTuple("RankOutputs",
                                                                                    [("selected", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.results import StageResult
    from damoc.workflow.rank_step import rank_step

    stages = [StageResult.model_validate_json(s) for s in (prepare_stats, filter_stats, compress_stats)]
    doc = rank_step(RunConfig.model_validate_json(Path(config.path).read_text()), results, stages, started_at,
                    Path(selection.path), Path(report.path), output_uri)
    for row in doc["ranking"]:
        if row["score"] is not None:
            metrics.log_metric(f"score.{row['candidate']}", row["score"])
    metrics.log_metric("total_seconds", doc["cost"]["total_seconds"])
    return namedtuple("RankOutputs", ["selected"])(doc["selected"] or "")
