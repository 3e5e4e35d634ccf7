"""Issue 12: a rerun resumes finished stages (content-addressed stage outputs, damoc.workflow.stage_cache).

The in-process runner shares the cached steps with the KFP components; the slow test drives the real CLI
through kfp.local, interrupted by SIGINT after the filter stage.
"""
from __future__ import annotations

import hashlib
import json
import os
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
from damoc.workflow.inprocess import run_data_stages, run_inprocess

REPO = Path(__file__).resolve().parents[1]
ALL_STAGES = ["prepare", "filter", "compress", "tiny-llama/prune", "tiny-llama/train", "tiny-llama/evaluate",
              "broken/prune", "broken/train"]  # a failed candidate is not evaluated


def _doc(data: dict[str, Path], zoo: Path, tmp: Path) -> dict:
    return {"data": {"train": str(data["train"]), "eval": str(data["eval"]), "task": "extractive_qa"},
            "candidates": [{"name": "tiny-llama", "path": str(zoo / "tiny-llama" / "chat"),
                            "base_path": str(zoo / "tiny-llama" / "base")},
                           {"name": "broken", "path": str(tmp / "no-such-checkpoint")}],  # train fails
            "filter": {"method": "random", "ratio": 0.5}, "compression": {"enabled": False},
            "pruning": {"rule": "fraction", "target_fraction": 0.25, "calibration_samples": 4},
            "training": {"max_steps": 2, "batch_size": 4, "max_length": 64, "learning_rate": 0.005},
            "evaluation": {"max_new_tokens": 2, "bootstrap_samples": 200}}


def _with(doc: dict, section: str, **values) -> dict:
    return {**doc, section: {**doc[section], **values}}


def _scores(sel: dict) -> list:
    return [(r["candidate"], r["status"], r.get("score"), r.get("loglik")) for r in sel["ranking"]]


@pytest.fixture(scope="module")
def first(tmp_path_factory, zoo_dir):
    """One complete run into a cache of this module's own; yields (config doc, selection, tmp dir)."""
    from damoc.demo.data import write_demo

    tmp = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(stage_cache.ROOT_ENV, str(tmp / "cache"))
        data = write_demo("extractive_closed", tmp / "data", n_train=24, n_eval=6, seed=3)
        doc = _doc(data, zoo_dir, tmp)
        sel = run_inprocess(parse_config(doc), tmp / "run1", resume=True)
        yield doc, sel, tmp


@pytest.fixture
def cache(first, monkeypatch) -> Path:
    monkeypatch.setenv(stage_cache.ROOT_ENV, str(first[2] / "cache"))
    return first[2] / "cache"


def test_the_same_run_again_reuses_every_finished_stage(first, cache, tmp_path):
    doc, sel1, _ = first
    assert reused_stages(sel1) == ([], len(ALL_STAGES))
    sel2 = run_inprocess(parse_config(doc), tmp_path / "run2", resume=True)
    reused, total = reused_stages(sel2)
    # everything but the failed candidate's training (failures are never cached: it is rerun, and fails again)
    assert reused == [s for s in ALL_STAGES if s != "broken/train"] and total == len(ALL_STAGES)
    assert _scores(sel2) == _scores(sel1) and sel2["selected"] == sel1["selected"] == "tiny-llama"
    c1, c2 = sel1["stats"]["candidates"], sel2["stats"]["candidates"]
    assert c2["broken"]["train"]["status"] == "failed" and "reused" not in c2["broken"]["train"]["stats"]
    assert c2["tiny-llama"]["train"]["seconds"] == c1["tiny-llama"]["train"]["seconds"]  # the cost it had
    assert c2["tiny-llama"]["prune"]["stats"]["num_layers_after"] == c1["tiny-llama"]["prune"]["stats"][
        "num_layers_after"]
    # the restored checkpoint is byte-identical to the one trained in the first run
    files = lambda run: {p.relative_to(run): p.read_bytes() for p in run.rglob("*.safetensors")}  # noqa: E731
    run1 = first[2] / "run1" / "work" / "tiny-llama" / "trained"
    assert files(run1) and files(run1) == files(tmp_path / "run2" / "work" / "tiny-llama" / "trained")
    # nothing failed was stored
    results = [json.loads(p.read_text()) for p in cache.glob("*/*/result.json")]
    assert results and all(r["status"] != "failed" for r in results)
    # --no-resume: every stage runs
    assert reused_stages(run_inprocess(parse_config(doc), tmp_path / "run3", resume=False))[0] == []


@pytest.mark.parametrize("section,change,rerun", [
    ("evaluation", {"max_new_tokens": 3}, ["tiny-llama/evaluate"]),
    ("training", {"learning_rate": 0.002}, ["tiny-llama/train", "tiny-llama/evaluate"]),
    ("filter", {"seed": 1}, ALL_STAGES[1:])])  # other rows: everything after prepare (pruning calibrates on them)
def test_a_changed_setting_reruns_its_stage_and_the_later_ones(first, cache, tmp_path, section, change, rerun):
    doc, _, _ = first
    sel = run_inprocess(parse_config(_with(doc, section, **change)), tmp_path / "run", resume=True)
    reused, _ = reused_stages(sel)
    assert reused == [s for s in ALL_STAGES if s not in rerun + ["broken/train"]]
    assert all(r["status"] == "ok" for r in sel["ranking"] if r["candidate"] == "tiny-llama")


def test_a_data_file_edited_in_place_is_read_again(first, cache, tmp_path):
    doc, _, _ = first
    train = tmp_path / "train.jsonl"
    train.write_bytes(Path(doc["data"]["train"]).read_bytes())
    doc = _with(doc, "data", train=str(train))
    same = run_data_stages(parse_config(doc), tmp_path / "a", resume=True)
    assert [r.stats.get("reused") for r in same.results] == [None, True, True]  # new path, same rows
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same name and size, other order
    edited = run_data_stages(parse_config(doc), tmp_path / "b", resume=True)
    assert [r.stats.get("reused") for r in edited.results] == [None, None, None]


def test_an_interrupted_run_resumes_what_finished(first, cache, tmp_path, monkeypatch):
    import damoc.workflow.inprocess as inprocess

    doc = _with(first[0], "filter", ratio=0.75)  # keys of their own: nothing of this config is cached yet
    real = inprocess.compress_step

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inprocess, "compress_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_data_stages(parse_config(doc), tmp_path / "a", resume=True)
    monkeypatch.setattr(inprocess, "compress_step", real)
    again = run_data_stages(parse_config(doc), tmp_path / "b", resume=True)
    assert [(r.stage, r.stats.get("reused")) for r in again.results] == [
        ("prepare", True), ("filter", True), ("compress", None)]
    assert (tmp_path / "a" / "filtered.jsonl").read_bytes() == (tmp_path / "b" / "filtered.jsonl").read_bytes()


def _entry(cache: Path, stage: str, doc: dict, work: Path) -> Path:
    run_data_stages(parse_config(doc), work, resume=True)
    entries = [p for p in (cache / stage).iterdir() if (p / stage_cache.COMPLETE).is_file()]
    key = stage_cache.stage_key(stage, {"mode": "damoc", "filter": parse_config(doc).filter.model_dump(mode="json")},
                                {"train": work / "train.jsonl"})
    assert (cache / stage / key) in entries
    return cache / stage / key


def test_an_incomplete_or_damaged_entry_is_ignored(first, cache, tmp_path, capsys):
    doc = _with(first[0], "filter", ratio=0.25)
    entry = _entry(cache, "filter", doc, tmp_path / "a")
    (entry / stage_cache.COMPLETE).unlink()  # as if the process died before the entry was whole
    again = run_data_stages(parse_config(doc), tmp_path / "b", resume=True)
    assert again.results[1].stats.get("reused") is None  # ran again ...
    assert (entry / stage_cache.COMPLETE).is_file()  # ... and replaced the incomplete entry
    (entry / "result.json").write_text('{"stage": "filter", "stat')  # truncated, marker present
    third = run_data_stages(parse_config(doc), tmp_path / "c", resume=True)
    assert third.results[1].stats.get("reused") is None and third.results[1].status == "ok"
    assert "warning: stage cache: filter: entry" in capsys.readouterr().err
    # an entry whose output went missing is not trusted either
    (entry / stage_cache.COMPLETE).unlink()
    run_data_stages(parse_config(doc), tmp_path / "d", resume=True)
    (entry / "out" / "selected").unlink()
    fourth = run_data_stages(parse_config(doc), tmp_path / "e", resume=True)
    assert fourth.results[1].stats.get("reused") is None and (tmp_path / "e" / "filtered.jsonl").stat().st_size > 0


def test_a_compression_fallback_is_not_cached(first, cache, tmp_path):
    doc = _with(first[0], "compression", enabled=True, scorer_model=str(tmp_path / "no-scorer"))
    for work in ("a", "b"):
        compress = run_data_stages(parse_config(doc), tmp_path / work, resume=True).results[2]
        assert compress.status == "skipped" and compress.stats == {"fallback": True}  # tried again, not reused


# --------------------------------------------------------------------------- keys

def test_candidate_results_are_keyed_without_timings_or_reuse_marks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, seconds, extra in ((a, 1.5, {}), (b, 99.0, {"reused": True})):
        d.mkdir()
        (d / "damoc_result.json").write_text(json.dumps(
            {"candidate": "x", "stages": {"prune": {"stage": "prune", "seconds": seconds,
                                                    "stats": {"layers": 3, **extra}}}}, indent=2 if extra else None))
        (d / "w.bin").write_bytes(b"\x00\x01")
    assert stage_cache.fingerprint(a) == stage_cache.fingerprint(b)
    (b / "damoc_result.json").write_text(json.dumps(
        {"candidate": "x", "stages": {"prune": {"stage": "prune", "seconds": 1.5, "stats": {"layers": 4}}}}))
    assert stage_cache.fingerprint(a) != stage_cache.fingerprint(b)
    (b / "damoc_result.json").write_bytes((a / "damoc_result.json").read_bytes())
    (b / "w.bin").write_bytes(b"\x00\x02")
    assert stage_cache.fingerprint(a) != stage_cache.fingerprint(b)


def test_a_model_reference_is_keyed_by_the_checkpoint_content(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    art = tmp_path / "art"
    art.mkdir()
    (art / "damoc_model_ref.json").write_text(json.dumps({"source": str(ckpt)}))
    before = stage_cache.fingerprint(art)
    (ckpt / "config.json").write_text('{"n": 1}')  # rebuilt in place under the same name
    assert stage_cache.fingerprint(art) != before


def test_large_files_are_hashed_once_and_rehashed_when_changed(tmp_path, monkeypatch):
    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    big = tmp_path / "model.safetensors"
    big.write_bytes(b"a" * (stage_cache._MEMO_MIN_BYTES + 5))
    expect = hashlib.sha256(big.read_bytes()).hexdigest()
    assert stage_cache.file_digest(big) == expect
    memo = list((tmp_path / "cache" / ".hash-memo").rglob("*"))
    memo = [p for p in memo if p.is_file()]
    assert len(memo) == 1 and memo[0].read_text() == expect
    memo[0].write_text("f" * 64)  # the memo is what is read while (path, size, mtime, inode) stay the same
    assert stage_cache.file_digest(big) == "f" * 64
    time.sleep(0.01)
    big.write_bytes(b"b" * (stage_cache._MEMO_MIN_BYTES + 5))
    assert stage_cache.file_digest(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_changed_code_changes_every_key(tmp_path, monkeypatch):
    import damoc

    monkeypatch.delenv(stage_cache.CODE_ENV, raising=False)

    pkg = tmp_path / "damoc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "step.py").write_text("X = 1\n")
    monkeypatch.setattr(damoc, "__file__", str(pkg / "__init__.py"))
    stage_cache._source_version.cache_clear()
    try:
        one = stage_cache.stage_key("filter", {"ratio": 0.5}, {})
        (pkg / "step.py").write_text("X = 2\n")
        stage_cache._source_version.cache_clear()
        assert stage_cache.stage_key("filter", {"ratio": 0.5}, {}) != one
        assert stage_cache.stage_key("filter", {"ratio": 0.6}, {}) != stage_cache.stage_key("filter", {"ratio": 0.5}, {})
        two = stage_cache.code_version()
        with stage_cache.resume_env(True):  # a run hands its version to its tasks: one run, one version
            (pkg / "step.py").write_text("X = 3\n")
            stage_cache._source_version.cache_clear()
            assert os.environ[stage_cache.CODE_ENV] == two == stage_cache.code_version()
        assert stage_cache.CODE_ENV not in os.environ and stage_cache.code_version() != two
        # a plugin module's source counts as code too
        plugin = tmp_path / "plugins" / "my_filter_plugin.py"
        plugin.parent.mkdir()
        plugin.write_text("K = 1\n")
        monkeypatch.syspath_prepend(str(plugin.parent))
        monkeypatch.setenv("DAMOC_PLUGINS", "my_filter_plugin")
        versions = []
        for text in ("K = 1\n", "K = 2\n"):
            plugin.write_text(text)
            stage_cache._source_version.cache_clear()
            versions.append(stage_cache.code_version())
        assert versions[0] != versions[1] != two
    finally:
        stage_cache._source_version.cache_clear()


def test_cache_clear_and_cli_flag(tmp_path, monkeypatch, capsys):
    from damoc.cli import build_parser, main

    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    for key in ("k1", "k2"):
        (tmp_path / "cache" / "filter" / key).mkdir(parents=True)
        (tmp_path / "cache" / "filter" / key / stage_cache.COMPLETE).write_text(key)
    assert main(["cache", "clear"]) == 0
    assert "removed 2 stage cache entries" in capsys.readouterr().out and not (tmp_path / "cache").exists()
    assert build_parser().parse_args(["run", "c.yaml", "--out", "o", "--fresh"]).no_resume
    assert not build_parser().parse_args(["run", "c.yaml", "--out", "o"]).no_resume


# --------------------------------------------------------------------------- the real CLI through kfp.local

@pytest.mark.slow
def test_sigint_after_the_filter_stage_then_a_rerun_resumes(tmp_path, zoo_dir, capsys, monkeypatch):
    from damoc.cli import main

    cache = tmp_path / "cache"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": "demo://qa_long/train.jsonl", "eval": "demo://qa_long/eval.jsonl", "task": "qa_long",
                 "max_train_samples": 40, "max_eval_samples": 4},
        "candidates": [{"name": "tiny-llama", "path": "zoo://tiny-llama", "base_path": "zoo://tiny-llama/base"},
                       {"name": "tiny-neox", "path": "zoo://tiny-neox"}],
        "filter": {"method": "random", "ratio": 0.5},
        "compression": {"rate": 0.6, "bertscore_threshold": 0.85, "scorer_model": "zoo://tiny-llama/base"},
        "pruning": {"rule": "fraction", "target_fraction": 0.25, "calibration_samples": 4},
        "training": {"max_steps": 2, "batch_size": 4, "max_length": 64},
        "evaluation": {"max_new_tokens": 4, "bootstrap_samples": 200}}))
    out = tmp_path / "out"
    monkeypatch.setenv(stage_cache.ROOT_ENV, str(cache))
    # the code version this process will use for the reruns (other people's edits to the tree in between would
    # otherwise, rightly, make every key differ)
    monkeypatch.setenv(stage_cache.CODE_ENV, stage_cache.code_version())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "first.log"
    with log.open("w") as stderr:  # a file, not a pipe: kfp.local's logs would fill a pipe and block the run
        proc = subprocess.Popen([sys.executable, "-m", "damoc.cli", "run", str(cfg), "--out", str(out)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 240
        while not list(cache.glob(f"filter/*/{stage_cache.COMPLETE}")) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    assert proc.returncode == 130 and "error: interrupted" in log.read_text()
    assert not (out / "selection.json").exists()

    assert main(["run", str(cfg), "--out", str(out)]) == 0
    second = json.loads((out / "selection.json").read_text())
    reused, total = reused_stages(second)
    assert reused[:2] == ["prepare", "filter"] and len(reused) < total  # what finished, not what did not
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    third = json.loads((out / "selection.json").read_text())
    assert len(reused_stages(third)[0]) == total  # every stage of a run that finished
    assert _scores(third) == _scores(second)
    assert f"resumed: {total} of {total} stages reused" in capsys.readouterr().out


def test_s3_data_is_read_again_but_later_stages_still_resume(tmp_path, monkeypatch):
    """The object's content is not hashed, so prepare never reuses; filter is keyed by the rows it got."""
    from damoc.results import StageResult
    from damoc.workflow import cached_steps, data_steps

    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    rows = "".join(json.dumps({"id": f"train-{i}", "instruction": "", "input": f"q{i}", "output": f"a{i}"}) + "\n"
                   for i in range(8))
    calls = []

    def fake_prepare(cfg, train_out, eval_out, cache_dir=None):
        calls.append(train_out)
        train_out.write_text(rows)
        eval_out.write_text(rows)
        return StageResult(stage="prepare", stats={"train_samples": 8, "eval_samples": 8})

    monkeypatch.setattr(data_steps, "prepare_data", fake_prepare)
    cfg = parse_config({"data": {"train": "s3://b/train.jsonl", "eval": "s3://b/eval.jsonl"},
                        "candidates": [{"name": "a", "path": "/models/a"}],
                        "filter": {"method": "random", "ratio": 0.5}})
    got = []
    for run in ("a", "b"):
        work = tmp_path / run
        work.mkdir()
        prepared = cached_steps.prepare_data(cfg, work / "train.jsonl", work / "eval.jsonl", resume=True)
        filtered = cached_steps.filter_step(cfg, work / "train.jsonl", work / "filtered.jsonl", False, resume=True)
        got.append((prepared.stats.get("reused"), filtered.stats.get("reused")))
    assert got == [(None, None), (None, True)] and len(calls) == 2
    assert not (tmp_path / "cache" / "prepare").exists()
