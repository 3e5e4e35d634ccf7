"""Issue 23, case 1: resume survives its own cleanup — the three repros of the issue.

A: the same run three times; B: interrupted during fine-tuning, then rerun; C: after A's second run, a changed
training.learning_rate. Each run's directory is removed before the next (as `damoc run` removes an older run
after a success and an interrupted one at start): a cache entry must never depend on it. The fast variants run
the cached steps in process (the KFP components call the same functions); the slow ones drive `damoc run`
through kfp.local.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from damoc.config import parse_config
from damoc.workflow import stage_cache
from damoc.workflow.cached_steps import reused_stages
from damoc.workflow.inprocess import run_inprocess

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "filter", "compress", "tiny-llama/prune", "tiny-llama/train", "tiny-llama/evaluate"]


def _doc(data: dict[str, Path], zoo: Path) -> dict:
    return {"data": {"train": str(data["train"]), "eval": str(data["eval"]), "task": "extractive_qa"},
            "candidates": [{"name": "tiny-llama", "path": str(zoo / "tiny-llama" / "chat"),
                            "base_path": str(zoo / "tiny-llama" / "base")}],
            "filter": {"method": "random", "ratio": 0.5}, "compression": {"enabled": False},
            "pruning": {"rule": "fraction", "target_fraction": 0.25, "calibration_samples": 4},
            "training": {"max_steps": 2, "batch_size": 4, "max_length": 64, "learning_rate": 0.005},
            "evaluation": {"max_new_tokens": 2, "bootstrap_samples": 200}}


def _ranking(sel: dict) -> list:
    return [(r["candidate"], r["status"], r.get("score"), r.get("loglik")) for r in sel["ranking"]]


def _weights(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*.safetensors"))}


@pytest.fixture
def setup(tmp_path, zoo_dir, monkeypatch):
    from damoc.demo.data import write_demo

    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    data = write_demo("extractive_closed", tmp_path / "data", n_train=16, n_eval=4, seed=5)
    return _doc(data, zoo_dir), tmp_path


def test_repro_a_and_c_the_same_run_three_times_then_a_new_learning_rate(setup):
    doc, tmp = setup
    runs = tmp / "runs"
    first = run_inprocess(parse_config(doc), runs / "1", resume=True)
    weights = _weights(runs / "1" / "work" / "tiny-llama" / "trained")
    shutil.rmtree(runs / "1")  # the run that made the entries is gone
    second = run_inprocess(parse_config(doc), runs / "2", resume=True)
    assert reused_stages(second) == (STAGES, len(STAGES)) and _ranking(second) == _ranking(first)
    shutil.rmtree(runs / "2")
    third = run_inprocess(parse_config(doc), runs / "3", resume=True)  # used to fail every candidate
    assert reused_stages(third) == (STAGES, len(STAGES)) and _ranking(third) == _ranking(first)
    assert third["selected"] == "tiny-llama" and _weights(runs / "3" / "work" / "tiny-llama" / "trained") == weights
    # C: the docs' own resume example, after the earlier runs were cleaned
    shutil.rmtree(runs / "3")
    changed = {**doc, "training": {**doc["training"], "learning_rate": 0.002}}
    lr = run_inprocess(parse_config(changed), runs / "4", resume=True)
    reused, _ = reused_stages(lr)
    assert reused == ["prepare", "filter", "compress", "tiny-llama/prune"]
    assert lr["selected"] == "tiny-llama" and lr["ranking"][0]["status"] == "ok"


def test_repro_b_interrupted_during_fine_tuning_then_rerun(setup, monkeypatch):
    import damoc.workflow.inprocess as inprocess

    doc, tmp = setup
    real = inprocess.finetune_step

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the candidate trains

    monkeypatch.setattr(inprocess, "finetune_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_inprocess(parse_config(doc), tmp / "runs" / "1", resume=True)
    shutil.rmtree(tmp / "runs" / "1")  # the next run removes the interrupted one first
    monkeypatch.setattr(inprocess, "finetune_step", real)
    again = run_inprocess(parse_config(doc), tmp / "runs" / "2", resume=True)
    assert reused_stages(again)[0] == ["prepare", "filter", "compress", "tiny-llama/prune"]
    assert again["selected"] == "tiny-llama"
    shutil.rmtree(tmp / "runs" / "2")
    third = run_inprocess(parse_config(doc), tmp / "runs" / "3", resume=True)
    assert reused_stages(third) == (STAGES, len(STAGES)) and _ranking(third) == _ranking(again)


# --------------------------------------------------------------------------- the real CLI through kfp.local

def _cli_config(tmp: Path) -> Path:
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl", "task": "qa_long",
                 "max_train_samples": 24, "max_eval_samples": 4},
        "candidates": [{"name": "tiny-llama", "path": "zoo://tiny-llama", "base_path": "zoo://tiny-llama/base"}],
        "filter": {"method": "random", "ratio": 0.5}, "compression": {"enabled": False},
        "pruning": {"rule": "fraction", "target_fraction": 0.25, "calibration_samples": 4},
        "training": {"max_steps": 2, "batch_size": 4, "max_length": 64},
        "evaluation": {"max_new_tokens": 2, "bootstrap_samples": 200}}))
    return cfg


def _tmp_folders() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).iterdir()}


@pytest.fixture
def cli_env(tmp_path, zoo_dir, monkeypatch):
    import tempfile

    # a temporary directory of the test's own: what the runs leave in it is theirs (others share /tmp)
    (tmp_path / "systmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "systmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    # one code version for every run of the test (others' edits to the tree in between would change the keys)
    monkeypatch.setenv(stage_cache.CODE_ENV, stage_cache.code_version())
    return tmp_path


def _selection(out: Path) -> dict:
    return json.loads((out / "selection.json").read_text())


def _trained(out: Path) -> dict:
    """The current run's weights by task and file (the pipeline root's first folder is named by the run's time)."""
    weights = _weights((out / "current").resolve() / "pipeline_root")
    return {name.split("/", 1)[1]: data for name, data in weights.items()}


@pytest.mark.slow
def test_kfp_local_repro_a_and_c(cli_env, capsys):
    from damoc.cli import main

    cfg, out = _cli_config(cli_env), cli_env / "out"
    before = _tmp_folders()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    first, weights = _selection(out), _trained(out)
    assert main(["run", str(cfg), "--out", str(out)]) == 0  # removes the first run's directory
    second = _selection(out)
    assert main(["run", str(cfg), "--out", str(out)]) == 0  # used to exit 1: every candidate failed
    third = _selection(out)
    total = reused_stages(third)[1]
    assert reused_stages(second) == reused_stages(third) == (STAGES, total)
    assert _ranking(first) == _ranking(second) == _ranking(third)
    assert _trained(out) == weights and any(name.startswith("for-loop") for name in weights)
    assert len(list((out / "runs").iterdir())) == 1
    assert main(["run", str(cfg), "--out", str(out), "--set", "training.learning_rate=0.002"]) == 0
    assert reused_stages(_selection(out))[0] == ["prepare", "filter", "compress", "tiny-llama/prune"]
    assert _selection(out)["selected"] == "tiny-llama"
    assert _tmp_folders() - before == set()  # kfp.local's per-task temporary folders were removed


@pytest.mark.slow
def test_kfp_local_repro_b_sigint_during_fine_tuning(cli_env):
    from damoc.cli import main

    cfg, out, cache = _cli_config(cli_env), cli_env / "out", cli_env / "cache"
    log = cli_env / "first.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as stderr:  # a file, not a pipe: kfp.local's logs would fill a pipe and block the run
        proc = subprocess.Popen([sys.executable, "-m", "damoc.cli", "run", str(cfg), "--out", str(out)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while not list(cache.glob(f"prune/*/{stage_cache.COMPLETE}")) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(1.0)  # the train task is starting
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    assert proc.returncode == 130 and not list(cache.glob(f"train/*/{stage_cache.COMPLETE}"))
    assert main(["run", str(cfg), "--out", str(out)]) == 0  # used to exit 1, forever
    second = _selection(out)
    assert reused_stages(second)[0] == ["prepare", "filter", "compress", "tiny-llama/prune"]
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    third = _selection(out)
    assert reused_stages(third)[0] == STAGES and _ranking(third) == _ranking(second)
