"""The console of a real run: the quickstart's 4 candidates through kfp.local (issue 22, acceptance).

Every task's start and end for every candidate is on the console, kfp.local's own output (executor-input
JSON, artifact dumps, colour codes, progress bars) only in run.log, and the whole console fits in 60 lines.
"""
import re
from pathlib import Path

import pytest

from damoc.cli import main

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-neox")
FAST = ["data.max_train_samples=48", "data.max_eval_samples=6", "filter.method=random", "filter.ratio=0.5",
        "pruning.calibration_samples=4", "training.max_steps=1", "training.epochs=1", "training.max_length=64",
        "evaluation.max_new_tokens=4"]


@pytest.mark.slow  # ~4 min on 2 busy cores: 17 task processes, each loading torch and a model
def test_quickstart_console_tells_every_task_and_nothing_of_kfp(zoo_dir, tmp_path, capsys):
    out = tmp_path / "quickstart"
    args = ["run", str(REPO / "examples" / "quickstart.yaml"), "--out", str(out), "--no-resume"]
    for item in FAST:
        args += ["--set", item]
    assert main(args) == 0
    captured = capsys.readouterr()
    console = captured.out + captured.err
    lines = console.splitlines()
    assert len(lines) <= 60, console
    assert "\x1b[" not in console and "\r" not in console  # no colour codes, no bar redraws (not a terminal)
    assert "{" not in console and "executor_input" not in console and "metadata=" not in console
    for stage in ("prune", "train", "evaluate"):
        for name in CANDIDATES:
            assert re.search(rf"\] start  {stage} {name}$", console, re.M), (stage, name)
            assert re.search(rf"\] done   {stage} {name} +\d+\.\d s", console, re.M), (stage, name)
    for stage in ("validate", "prepare", "filter", "compress", "rank"):
        assert re.search(rf"\] start  {stage}$", console, re.M) and re.search(rf"\] done   {stage} ", console, re.M)
    assert re.search(r"done   filter .* kept 24 of 48 rows \(50\.0%\)", console)
    assert re.search(r"done   prune tiny-llama .* kept \d+ of \d+ layers", console)
    assert re.search(r"done   train tiny-qwen2 .* loss \d+\.\d{4}", console)
    assert re.search(r"done   evaluate tiny-neox .* loglik -\d+\.\d{4}", console)
    assert "DaMoC ranking (mode damoc, ranked by reference log-likelihood per token" in console
    assert f"{out / 'report.html'}" in console
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "Got executor_input" in log and log.count("Executing task") >= 17  # the kfp text went here
