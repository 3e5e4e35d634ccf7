"""Fan-in: rank candidates, write selection.json and the reports (also as KFP Markdown, HTML + Metrics)."""
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from damoc_components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def rank_candidates(config: Input[Artifact], results: List[str], prepare_stats: str, filter_stats: str,
                    compress_stats: str, started_at: float, output_uri: str, selection: Output[Artifact],
                    report: Output[Markdown], report_html: Output[HTML],
                    metrics: Output[Metrics]) -> NamedTuple("RankOutputs", [("selected", str)]):
    from collections import namedtuple
    from pathlib import Path

    from damoc import storage
    from damoc.config import RunConfig
    from damoc.results import StageResult
    from damoc.selection.html_report import candidate_details, render_html
    from damoc.selection.kfp_metrics import selection_metrics
    from damoc.workflow.rank_step import rank_step

    stages = [StageResult.model_validate_json(s) for s in (prepare_stats, filter_stats, compress_stats)]
    doc = rank_step(RunConfig.model_validate_json(Path(config.path).read_text()), results, stages, started_at,
                    Path(selection.path), Path(report.path), output_uri)
    page = render_html(doc, candidate_details(results))
    Path(report_html.path).write_text(page, encoding="utf-8")
    if output_uri:
        storage.write_text(f"{output_uri.rstrip('/')}/report.html", page)
    for name, value in selection_metrics(doc).items():
        metrics.log_metric(name, value)
    return namedtuple("RankOutputs", ["selected"])(doc["selected"] or "")
