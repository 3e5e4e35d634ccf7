"""Rendering of the compress stage's statistics (damoc.selection.compression_stats) from a hand-made dict."""
from __future__ import annotations

from damoc.selection.compression_stats import html_fragment, markdown

STATS = {
    "n": 10, "method": "longllmlingua", "rate": 0.5, "budget_unit": "tokens", "threshold": 0.9,
    "token_ratio": 0.55, "word_ratio": 0.6,
    "passed_gate": 6, "rewritten": 3, "fell_back": 1, "best_attempt": 0, "still_failing": 1,
    "gate_pass_rate_before_rewrite": 0.6, "gate_pass_rate": 0.9,
    "parts": {"instruction": {"tokens_in": 100, "tokens_out": 100, "token_ratio": 1.0},
              "input": {"tokens_in": 300, "tokens_out": 150, "token_ratio": 0.5},
              "output": {"tokens_in": 200, "tokens_out": 80, "token_ratio": 0.4}},
    "tokenizers": {"tiny-qwen2": {"tokens_in": 640, "tokens_out": 352, "token_ratio": 0.55,
                                  "parts": {"instruction": 1.0, "input": 0.5, "output": 0.4}},
                   "<x>": {"tokens_in": 10, "tokens_out": 5, "token_ratio": 0.5}},
    "rewrite_rounds": [{"round": 1, "tried": 4, "answered": 4, "too_long": 0, "passed": 2},
                       {"round": 2, "tried": 2, "answered": 1, "too_long": 1, "passed": 1}],
    "bertscore_quantiles": {"min": 0.7, "p10": 0.75, "p25": 0.85, "p50": 0.91, "p75": 0.93, "p90": 0.95, "max": 0.97},
    "bertscore_histogram": [{"lo": 0.0, "hi": 0.8, "count": 2}, {"lo": 0.8, "hi": 0.9, "count": 2},
                            {"lo": 0.9, "hi": 1.0, "count": 6}],
    "method_stats": {"segments": 30, "segments_dropped": 12},
}


def test_markdown_shows_every_statistic_with_hand_computed_values():
    md = markdown(STATS)
    assert ("method longllmlingua, rate 0.5 (tokens), 10 samples: kept 0.550 of the scorer's tokens, "
            "0.600 of the words") in md
    assert ("60.0% passed before rewriting, 90.0% after; 1 still failing (10.0%): 1 on their original text, "
            "0 on their best attempt") in md
    assert "| question/context | 300 | 150 | 0.500 |" in md
    assert "| answer | 200 | 80 | 0.400 |" in md
    assert "| tiny-qwen2 | 640 | 352 | 0.550 | 1.000 | 0.500 | 0.400 |" in md
    assert "| <x> | 10 | 5 | 0.500 | — | — | — |" in md  # per-part ratios not recorded: a dash, not a guess
    assert "| 1 | 4 | 4 | 0 | 2 | 20.0% |" in md and "| 2 | 2 | 1 | 1 | 1 | 10.0% |" in md
    assert "| before rewriting | 0.700 | 0.750 | 0.850 | 0.910 | 0.930 | 0.950 | 0.970 |" in md
    # bars scale to the largest bin (6 -> 20 characters; 2 -> round(20 * 2 / 6) = 7)
    assert f"| [0.00, 0.80) | 2 | {'#' * 7} |" in md and f"| [0.90, 1.00] | 6 | {'#' * 20} |" in md
    assert "| segments_dropped | 12 |" in md


def test_missing_statistics_are_left_out():
    md = markdown({"n": 3, "rate": 1.0, "token_ratio": 1.0, "word_ratio": 1.0})
    assert md.startswith("- method damoc, rate 1.0 (tokens), 3 samples") and "|" not in md
    assert "Rewriting per round" not in markdown({**STATS, "rewrite_rounds": []})


def test_html_has_the_same_numbers_escaped():
    page = html_fragment(STATS)
    assert "<td>&lt;x&gt;</td>" in page and "<x>" not in page
    assert "<td>question/context</td><td>300</td><td>150</td><td>0.500</td>" in page
    assert page.count("<table>") == markdown(STATS).count("**") // 2


def test_the_run_reports_show_the_compression_section_only_when_the_stage_ran():
    from damoc.results import StageResult
    from damoc.selection.html_report import render_html
    from damoc.selection.ranking import build_selection
    from damoc.selection.report import render_report

    def selection(status: str):
        stage = StageResult(stage="compress", status=status, seconds=1.0, stats=STATS if status == "ok" else {})
        return build_selection(mode="damoc", metric="rougel", results=[], stage_results=[stage],
                               stage_seconds={"compress": 1.0}, total_seconds=1.0)

    ran, skipped = selection("ok"), selection("skipped")
    assert "## Token compression" in render_report(ran)
    assert "| question/context | 300 | 150 | 0.500 |" in render_report(ran)
    assert "<td>question/context</td><td>300</td><td>150</td><td>0.500</td>" in render_html(ran)
    assert "Token compression" not in render_report(skipped) and "Token compression" not in render_html(skipped)
