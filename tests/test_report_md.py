"""report.md for people: tables, no JSON, numbers by kind, the saving against grid search, honest tie wording."""
import re

import pytest

from damoc.results import CandidateResult, StageResult
from damoc.selection.ranking import build_selection
from damoc.selection.report import render_report
from test_html_report import sample_selection


@pytest.fixture(scope="module")
def sample():
    return sample_selection()


def test_tables_only_no_json_and_numbers_by_kind(sample):
    selection, details = sample
    report = render_report(selection, details)
    assert "```" not in report and '"' not in report and "{" not in report
    assert len(report.splitlines()) < 90  # it was ~1,000 lines of pretty-printed JSON
    # scores with 4 decimals, intervals likewise, seconds with 1, counts with separators, shares in percent
    assert re.search(r"^\| 1 \| tiny-neox \| 0\.\d{4} \| 0\.\d{4} – 0\.\d{4} \| winner \| -2\.0000 \| ok \| 20\.0 \| "
                     r"2/4 \|  \|$", report, re.M)
    assert "| filter | ok | 29.4 | kept 300 of 1,500 rows (20.0%) |" in report
    assert "| Total wall time | 150.0 s |" in report
    assert "| prune | 12.0 | summed over candidates |" not in report  # the sample gives no summed stages
    assert "| tiny-qwen2 | 3.0 s — 3/5 layers | 20.0 s — loss 4.2000, 300 rows | 6.0 s — 60 rows |" in report
    assert "**2: 0.960**" in report  # a pruned layer's similarity, bold


def test_the_ranking_names_its_signal_once(sample):
    selection, details = sample
    header = next(line for line in render_report(selection, details).splitlines() if line.startswith("| rank"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:5] == ["rank", "candidate", "bertscore_rougel", "90% interval", "vs winner"]
    assert cols.count("loglik") == 1 and "score" not in cols and "metric" not in cols


def test_saving_is_estimated_and_labelled_without_a_grid_run_and_measured_with_one(sample):
    selection, details = sample
    report = render_report(selection, details)
    line = next(ln for ln in report.splitlines() if ln.startswith("| Saving against grid search"))
    assert "estimated — no grid-search run given" in line and re.search(r"\d+\.\d× cheaper", line)
    grid = {"mode": "grid_search", "cost": {"total_seconds": 600.0, "stage_seconds": {"train": 500.0}}}
    measured = render_report(selection, details, reference=grid)
    assert "| Saving against grid search | 4.0× cheaper: 150.0 s against 600.0 s of the grid-search run " \
           "(measured, wall time) |" in measured
    assert "| train | 80.0 | wall time | 500.0 |" in measured
    assert "Saving against grid search" not in render_report({**selection, "mode": "grid_search"}, details)


def test_gpu_hours_are_summed_over_candidates():
    results = []
    for name, gpus in (("a", 1), ("b", 2)):
        r = CandidateResult(candidate=name, score=0.5 if name == "a" else 0.4)
        r.record(StageResult(stage="train", seconds=1800.0, stats={"accelerators": gpus}))
        results.append(r)
    sel = build_selection(mode="damoc", metric="m", results=results, stage_results=[],
                          stage_seconds={"train": 3600.0}, total_seconds=3700.0)
    assert "| GPU-hours | 1.500 GPU-hours" in render_report(sel)  # 1 GPU x 0.5 h + 2 GPUs x 0.5 h


def test_examples_are_the_winners_after_the_ranking_and_only_with_answers(sample):
    selection, details = sample
    report = render_report(selection, details)
    assert report.index("## Ranking") < report.index("## Example answers of `tiny-neox`")
    block = report[report.index("## Example answers"):].split("\n\n")[2]
    assert len(re.findall(r"^\| question \d", block, re.M)) == 3 and "| question 0 | reference answer 0 | answer 0 |" in block
    loglik_only = {**selection, "selected": "tiny-mistral"}  # no generated answers: nothing worth reading
    assert "Example answers" not in render_report(loglik_only, details)


def test_warnings_come_first(sample):
    selection, details = sample
    report = render_report({**selection, "warnings": ["compression fell back: the scorer failed"]}, details)
    assert report.splitlines()[2] == "> **Warning:** compression fell back: the scorer failed  "


def _one_row(name, value):
    r = CandidateResult(candidate=name, score=value)
    r.record(StageResult(stage="evaluate", stats={"score": value, "row_scores": [value]}))
    return r


def test_one_eval_row_never_says_both_within_and_outside_the_noise():
    """issue 23 item 8: one eval row made the report say "within sampling noise" and "outside the noise"."""
    prepare = StageResult(stage="prepare", stats={"train_samples": 100, "eval_samples": 1})
    sel = build_selection(mode="damoc", metric="m", results=[_one_row("a", 0.9), _one_row("b", 0.1)],
                          stage_results=[prepare], stage_seconds={}, total_seconds=1.0)
    report = render_report(sel)
    assert "within sampling noise" in report and "outside" not in report
    assert "| Tied with the winner | not measurable with 1 eval row" in report


def test_a_run_dearer_than_grid_search_says_so():
    from damoc.selection.report import factor_text

    assert factor_text(4.26) == "4.3× cheaper" and factor_text(0.4) == "2.5× dearer" and factor_text(None) == "—"
