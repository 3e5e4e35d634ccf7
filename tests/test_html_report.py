"""report.html: self-contained, escaped, complete; rendered in a real headless Chromium when one is installed."""
import re
import shutil
import subprocess

import pytest

from damoc.results import CandidateResult, StageResult
from damoc.selection.html_report import candidate_details, render_html
from damoc.selection.ranking import build_selection

EVIL = '<script>alert("x")</script>&<img src=x onerror=1>'


def _candidate(name, rows, sims=None, flags=(), loglik=-2.0):
    result = CandidateResult(candidate=name, flags=list(flags))
    prune_stats = {}
    if sims:
        pruned = [i for i, s in enumerate(sims) if s > 0.85]
        prune_stats = {"num_layers_before": len(sims), "num_layers_after": len(sims) - len(pruned),
                       "pruned_layers": pruned, "similarities": sims, "threshold": 0.85}
    result.record(StageResult(stage="prune", seconds=3.0, stats=prune_stats))
    result.record(StageResult(stage="train", seconds=20.0, stats={"train_loss": 4.2, "samples": 300}))
    score = sum(rows) / len(rows)
    result.record(StageResult(stage="evaluate", seconds=6.0,
                              stats={"score": score, "loglik": loglik, "row_scores": rows, "samples": len(rows)}))
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
        results.append(_candidate(name, rows, sims=sims if i != 1 else None, flags=flags,
                                  loglik=-2.0 - i / 10))
    broken = CandidateResult(candidate="broken", status="failed", error="prune: FileNotFoundError: /does/not/exist")
    results.append(broken)
    stages = [StageResult(stage="prepare", seconds=0.1, stats={"train_samples": 1500, "eval_samples": 60}),
              StageResult(stage="filter", seconds=29.4, stats={"n_in": 1500, "n_out": 300}),
              StageResult(stage="compress", seconds=18.8, stats={"token_ratio": 0.93})]
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


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (apt-get install chromium)")
def test_renders_in_headless_chromium(sample, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(*sample), encoding="utf-8")
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
