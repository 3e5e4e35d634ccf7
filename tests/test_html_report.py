"""report.html: self-contained, escaped, complete; rendered in a real headless Chromium when one is installed."""
import re
import shutil
import subprocess

import pytest

from damoc.results import CandidateResult, StageResult
from damoc.selection.html_report import candidate_details, render_html
from damoc.selection.ranking import build_selection

EVIL = '<script>alert("x")</script>&<img src=x onerror=1>'


def _candidate(name, rows, sims=None, flags=(), loglik=-2.0, examples=()):
    result = CandidateResult(candidate=name, flags=list(flags))
    prune_stats = {}
    if sims:
        pruned = [i for i, s in enumerate(sims) if s > 0.85]
        prune_stats = {"num_layers_before": len(sims), "num_layers_after": len(sims) - len(pruned),
                       "pruned_layers": pruned, "similarities": sims, "threshold": 0.85}
    result.record(StageResult(stage="prune", seconds=3.0, stats=prune_stats))
    result.record(StageResult(stage="train", seconds=20.0, stats={"train_loss": 4.2, "samples": 300,
                                                                  "train_seconds": 18.0, "load_seconds": 1.0,
                                                                  "save_seconds": 1.0}))
    score = sum(rows) / len(rows)
    result.record(StageResult(stage="evaluate", seconds=6.0,
                              stats={"score": score, "loglik": loglik, "row_scores": rows, "samples": len(rows),
                                     "examples": list(examples)}))
    result.score = score
    return result


def sample_selection(names=("tiny-neox", "tiny-mistral", "tiny-llama", "tiny-qwen2")):
    import random

    rng = random.Random(0)
    means = [0.40, 0.39, 0.25, 0.20]
    results = []
    for i, (name, mean) in enumerate(zip(names, means)):
        rows = [min(max(rng.gauss(mean, 0.08), 0.0), 1.0) for _ in range(60)]
        sims = [0.1, 0.84, 0.96, 0.93, 0.7][: 4 + i % 2]
        flags = ["unpruned (no base_path): trained with all 5 layers"] if i == 1 else []
        examples = [{"input": f"question {k}", "reference": f"reference answer {k}", "prediction": f"answer {k}"}
                    for k in range(4)] if i == 0 else []
        results.append(_candidate(name, rows, sims=sims if i != 1 else None, flags=flags,
                                  loglik=-2.0 - i / 10, examples=examples))
    broken = CandidateResult(candidate="broken", status="failed", error="prune: FileNotFoundError: /does/not/exist")
    results.append(broken)
    stages = [StageResult(stage="prepare", seconds=0.1, stats={"train_samples": 1500, "eval_samples": 60}),
              StageResult(stage="filter", seconds=29.4, stats={"n_in": 1500, "n_out": 300}),
              StageResult(stage="compress", seconds=18.8, stats={"token_ratio": 0.8})]
    stage_seconds = {s.stage: s.seconds for s in stages}
    for stage in ("prune", "train", "evaluate"):
        stage_seconds[stage] = sum(r.seconds(stage) for r in results)
    selection = build_selection(mode="damoc", metric="bertscore_rougel", results=results, stage_results=stages,
                                stage_seconds=stage_seconds, total_seconds=150.0, bootstrap_samples=300)
    return selection, candidate_details(results)


@pytest.fixture(scope="module")
def sample():
    return sample_selection()


def test_every_candidate_and_its_interval_appear(sample):
    selection, details = sample
    page = render_html(selection, details)
    assert page.startswith("<!DOCTYPE html>")
    for row in selection["ranking"]:
        assert f'data-candidate="{row["candidate"]}"' in page
    lo, hi = selection["uncertainty"]["intervals"]["tiny-neox"]
    assert f"{lo:.4f} – {hi:.4f}" in page
    assert "prune: FileNotFoundError: /does/not/exist" in page
    assert "unpruned (no base_path)" in page
    assert page.count("<svg") >= 2 + 3  # ranking, cost, three similarity plots


def test_tied_candidates_are_marked(sample):
    selection, details = sample
    assert selection["tied_with_winner"], "the sample must have a tie (0.40 vs 0.39 on 60 noisy rows)"
    page = render_html(selection, details)
    for name in selection["tied_with_winner"]:
        assert re.search(rf'<tr class="tied" data-candidate="{re.escape(name)}">.*?tied with winner</span>', page)
    not_tied = {r["candidate"] for r in selection["ranking"] if r["status"] == "ok"} - \
        set(selection["tied_with_winner"]) - {selection["selected"]}
    for name in not_tied:
        assert f'<tr class="" data-candidate="{name}">' in page
    assert f'<tr class="winner" data-candidate="{selection["selected"]}">' in page


def test_user_text_is_escaped():
    selection, _ = sample_selection()
    for row in selection["ranking"]:
        if row["status"] == "failed":
            row["error"] = EVIL
    selection["ranking"][0]["flags"] = [EVIL]
    old = selection["ranking"][1]["candidate"]
    selection["ranking"][1]["candidate"] = EVIL
    selection["stats"]["candidates"][EVIL] = selection["stats"]["candidates"].pop(old)
    page = render_html(selection, {EVIL: {"flags": [EVIL], "layers": EVIL}})
    assert "<script" not in page and "<img" not in page and "onerror=1>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img" in page


def test_self_contained_no_urls(sample):
    page = render_html(*sample)
    assert not re.search(r"(https?:|//[a-z0-9.-]+\.[a-z]|src=|href=|@import|url\()", page, re.I)
    assert "<script" not in page.lower()


def test_no_winner_no_uncertainty_and_reference_costs():
    selection = build_selection(mode="grid_search", metric="rouge_l",
                                results=[CandidateResult(candidate="a", status="failed", error="train: boom")],
                                stage_results=[], stage_seconds={"train": 3.0}, total_seconds=4.0)
    assert selection["uncertainty"] is None
    page = render_html(selection, None, reference={"mode": "damoc", "cost": {"stage_seconds": {"train": 1.0}}})
    assert "every candidate failed" in page and "train: boom" in page and "damoc (reference)" in page
    assert "No candidate was scored" in page


def test_saving_against_grid_search_is_estimated_without_a_grid_run_and_measured_with_one(sample):
    selection, details = sample
    page = render_html(selection, details)
    # estimated: prepare + evaluate as measured, each candidate's training loop x (1500/300 rows) x (1/0.8
    # tokens) x (layers before/after), load/save as measured
    from damoc.selection.report import grid_saving

    est = grid_saving(selection)
    layers = {"tiny-neox": 4 / 2, "tiny-mistral": 1.0, "tiny-llama": 4 / 2, "tiny-qwen2": 5 / 3}
    expected_grid = 0.1 + sum(18.0 * 5 * 1.25 * f + 2.0 for f in layers.values()) + 4 * 6.0
    assert est["kind"] == "estimated" and est["grid_seconds"] == pytest.approx(expected_grid)
    assert est["seconds"] == pytest.approx(sum(selection["cost"]["stage_seconds"].values()))
    assert '<p class="saving" data-kind="estimated">' in page and "Estimated — no grid-search run was given" in page
    assert f"{est['factor']:.1f}× cheaper" in page
    grid = {"mode": "grid_search", "cost": {"total_seconds": 600.0, "stage_seconds": {"train": 500.0}}}
    page = render_html(selection, details, reference=grid)
    assert '<p class="saving" data-kind="measured">' in page and "4.0× cheaper" in page  # 600 / 150
    assert "GPU-hours" in page and "grid_search (reference)" in page


def test_interval_axis_is_labelled_and_columns_do_not_repeat(sample):
    selection, details = sample
    page = render_html(selection, details)
    assert re.search(r'<text class="axis-label"[^>]*>bertscore_rougel \(higher is better\) — dot: mean over eval '
                     r"rows, line: 90% bootstrap interval</text>", page)
    head = re.search(r"<table><thead><tr>(.*?)</tr></thead>", page).group(1)
    columns = re.findall(r"<th>(.*?)</th>", head)
    assert columns[:5] == ["rank", "candidate", "bertscore_rougel", "90% interval", "vs winner"]
    assert columns.count("loglik") == 1 and "score" not in columns and "metric" not in columns
    by_loglik = {**selection, "rank_by": "loglik",
                 "ranking": [{**r, "score": r.get("loglik"), "metric_score": r.get("metric_score")}
                             for r in selection["ranking"]]}
    head = re.search(r"<table><thead><tr>(.*?)</tr></thead>", render_html(by_loglik, details)).group(1)
    assert re.findall(r"<th>(.*?)</th>", head).count("loglik") == 1


def test_examples_are_the_winners_three_answers_after_the_ranking(sample):
    selection, details = sample
    page = render_html(selection, details)
    assert selection["selected"] == "tiny-neox"
    section = page[page.index("<h2>Example answers of tiny-neox</h2>"):]
    assert page.index("<h2>Ranking</h2>") < page.index("<h2>Example answers")
    assert section.count('<td class="text">answer ') == 3 and "answer 3" not in section.split("</table>")[0]
    assert "reference answer 0" in section
    no_answers = render_html({**selection, "selected": "tiny-mistral"}, details)
    assert "Example answers" not in no_answers  # nothing generated: nothing worth reading


def test_warnings_come_first():
    selection, details = sample_selection()
    selection["warnings"] = ["compression fell back to the uncompressed rows"]
    page = render_html(selection, details)
    assert page.index('<p class="warning"><b>Warning:</b> compression fell back') < page.index("<h2>Ranking</h2>")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (apt-get install chromium)")
def test_renders_in_headless_chromium(sample, tmp_path):
    page = tmp_path / "report.html"
    html_text = render_html(*sample)
    for figure in ('class="axis-label"', 'class="saving"', "Example answers of", "Data stages", "GPU-hours"):
        assert figure in html_text  # the figures the screenshot below must show
    page.write_text(html_text, encoding="utf-8")
    png = tmp_path / "report.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,1600", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png.is_file(), proc.stderr[-2000:]
    assert png.stat().st_size > 20_000  # a blank 1200x1600 PNG is a few KB
    Image = pytest.importorskip("PIL.Image")
    with Image.open(png) as img:
        assert img.size == (1200, 1600)
        hist = img.convert("L").histogram()  # 256 bins of grey levels
    n = sum(hist)
    mean = sum(level * count for level, count in enumerate(hist)) / n
    variance = sum((level - mean) ** 2 * count for level, count in enumerate(hist)) / n
    assert variance > 200, f"screenshot looks blank (variance {variance:.1f})"
    dark = sum(hist[:128]) / n
    assert 0.005 < dark < 0.5, f"text share {dark:.3f} out of range"


@pytest.mark.skipif(_chromium() is None, reason="no chromium (apt-get install chromium)")
def test_new_figures_render_in_headless_chromium(sample, tmp_path):
    """The saving-against-grid-search bars (this run, grid search) and the labelled interval axis, drawn."""
    from damoc.selection import html_report
    from damoc.selection.report import grid_saving

    selection, _ = sample
    body = (html_report._saving_section(grid_saving(selection)) + html_report._ranking_plot(selection)
            + "".join(html_report._examples_section(selection)))
    page = tmp_path / "figures.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{html_report._CSS}</style></head>"
                    f"<body>{body}</body></html>", encoding="utf-8")
    png = tmp_path / "figures.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,900", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png.is_file(), proc.stderr[-2000:]
    Image = pytest.importorskip("PIL.Image")
    with Image.open(png) as img:
        pixels = list(img.convert("RGB").getdata())

    def share(hex_color, tolerance=12):
        rgb = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        return sum(all(abs(a - b) <= tolerance for a, b in zip(px, rgb)) for px in pixels) / len(pixels)

    # the run's bar (OTHER) and the grid-search bar (REFERENCE): the grid bar is the longer one
    assert share(html_report.OTHER) > 0.001 and share(html_report.REFERENCE) > share(html_report.OTHER) / 2
    assert share(html_report.WINNER) > 0.0001  # the winner's dot and interval in the plot


def test_unknown_layer_count_is_a_dash_and_long_flags_are_shortened(sample):
    selection, details = sample
    flag = "unpruned (no base_path: pruning needs a base/chat pair): trained with all ? layers while pruned rivals"
    page = render_html(selection, {**details, "broken": {"layers": "None/None", "flags": [flag]}})
    assert "None/None" not in page
    assert f'title="{flag}"' in page and "…" in page and f"<li class=\"flag\">{flag}</li>" in page


def test_method_decision_is_shown_when_models_were_trained_both_ways():
    names = ("m@full", "m@lora", "n@full", "n@lora")
    selection, details = sample_selection(names)
    variants = {name: tuple(name.split("@")) for name in names}
    from damoc.selection.ranking import method_selection

    selection["methods"] = method_selection(selection["ranking"], variants)
    page = render_html(selection, details)
    assert "<h2>Fine-tuning method per model</h2>" in page
    # sample means: m@full 0.40 > m@lora 0.39, n@full 0.25 > n@lora 0.20 -> full chosen for both
    assert page.count("<td>full</td>") == 2 and "Selected: <b>m</b> with full fine-tuning" in page
    assert "Fine-tuning method per model" not in render_html(*sample_selection())
