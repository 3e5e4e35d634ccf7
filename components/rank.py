"""Fan-in: rank candidates, write selection.json and the reports (also as KFP Markdown, HTML + Metrics)."""
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def rank_candidates(config: Input[Artifact], results: Input[List[Artifact]], prepare_stats: str,
                    filter_stats: str, compress_stats: str, started_at: float, output_uri: str,
                    selection: Output[Artifact], report: Output[Markdown], report_html: Output[HTML],
                    metrics: Output[Metrics]) -> NamedTuple("RankOutputs", [("selected", str)]):
    """Rank every candidate, decide who is tied with the winner, and write the selection and its reports.

    Args:
        config: The validated run configuration (JSON), from validate-config.
        results: Every candidate's result artifact (JSON) from evaluate-model, collected over the fan-out;
            read one at a time, keeping the ranking signal's per-row values.
        prepare_stats: prepare-data's result (StageResult JSON).
        filter_stats: filter-data's result (StageResult JSON).
        compress_stats: compress-data's result (StageResult JSON).
        started_at: The run's start time (epoch seconds), from fingerprint-data.
        output_uri: Where selection.json, report.md and report.html are also written (s3:// or a path);
            empty: only the artifacts.

    Returns:
        selection: selection.json: the ranking, intervals, ties, costs and every stage's figures.
        report: report.md, the selection for people.
        report_html: report.html, shown by the KFP UI.
        metrics: The winner, its score and the run's cost.
        selected: The selected candidate's name (empty when none succeeded).
    """
    from collections import namedtuple
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.results import StageResult
    from damoc.selection.kfp_metrics import selection_metrics
    from damoc.workflow.rank_step import rank_step

    stages = [StageResult.model_validate_json(s) for s in (prepare_stats, filter_stats, compress_stats)]
    doc = rank_step(RunConfig.model_validate_json(Path(config.path).read_text()),
                    (Path(a.path) for a in results), stages, started_at, Path(selection.path), Path(report.path),
                    output_uri, html_out=Path(report_html.path))
    for name, value in selection_metrics(doc).items():
        metrics.log_metric(name, value)
    return namedtuple("RankOutputs", ["selected"])(doc["selected"] or "")
