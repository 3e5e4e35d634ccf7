"""Issue 23 (never lose a good result): each numbered case of the issue, fast (no pipeline task runs a model).

1 self-contained cache entries (the in-process repros A and C are in tests/test_reliability_resume.py),
2 publish only what succeeded / refuse a foreign --out, 3 one run per --out, 4 a stage's failure is that
stage's, 5 divergence and degenerate answers, 6 no password echoed, 7 exit codes, 8 kfp.local temp folders.
docs/reliability.md ("Never lose a good result") maps each case to its test.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from damoc.cli import main
from damoc.results import CandidateResult, StageResult
from damoc.workflow import stage_cache

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- 1: self-contained cache entries

def _model_stage(tmp: Path, run: str, calls: list[str]) -> tuple[stage_cache.Cached, Path]:
    """A stage that writes a checkpoint into its output and a model reference to it (as prune does)."""
    out = tmp / "runs" / run / "model"

    def body() -> str:
        calls.append(run)
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "weights.bin").write_bytes(b"w" * 64)
        (out / "damoc_model_ref.json").write_text(json.dumps({"source": str(out / "checkpoint")}))
        return "ok"

    cached = stage_cache.run_cached("prune", parts={"x": 1}, inputs={}, outputs={"model": out}, run=body,
                                    dump=lambda v: json.dumps(v), load=json.loads, cacheable=lambda v: True,
                                    resume=True)
    return cached, out


def test_a_cache_entry_survives_the_removal_of_the_run_that_made_it(tmp_path, monkeypatch):
    import shutil

    from damoc.workflow.model_sources import model_in_artifact

    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    calls: list[str] = []
    first, out1 = _model_stage(tmp_path, "r1", calls)
    key_before = stage_cache.fingerprint(out1)
    entry = next((tmp_path / "cache" / "prune").iterdir())
    ref = json.loads((entry / "out" / "model" / "damoc_model_ref.json").read_text())
    assert ref == {"source": "checkpoint", "relative_to_artifact": True}  # never a path into the run
    shutil.rmtree(tmp_path / "runs" / "r1")  # the next run in that --out cleans this one
    second, out2 = _model_stage(tmp_path, "r2", calls)
    assert second.reused and calls == ["r1"]
    # the restored reference names this run's own copy, which is there; the next stage's key is unchanged
    assert model_in_artifact(out2) == str(out2.resolve() / "checkpoint")
    assert (out2 / "checkpoint" / "weights.bin").read_bytes() == b"w" * 64
    assert stage_cache.fingerprint(out2) == key_before
    shutil.rmtree(tmp_path / "runs" / "r2")
    third, out3 = _model_stage(tmp_path, "r3", calls)  # repro A: the third run
    assert third.reused and model_in_artifact(out3) == str(out3.resolve() / "checkpoint")


def test_a_damaged_or_dangling_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(stage_cache.ROOT_ENV, str(tmp_path / "cache"))
    calls: list[str] = []
    _model_stage(tmp_path, "r1", calls)
    entry = next((tmp_path / "cache" / "prune").iterdir())
    weights = entry / "out" / "model" / "checkpoint" / "weights.bin"
    weights.unlink()
    weights.write_bytes(b"w" * 10)  # truncated (a new inode: the run's hard link is untouched)
    again, _ = _model_stage(tmp_path, "r2", calls)
    assert not again.reused and calls == ["r1", "r2"]
    assert "differ from the manifest" in capsys.readouterr().err
    # an entry of the old kind: an absolute reference into a run directory that is gone
    ref = entry / "out" / "model" / "damoc_model_ref.json"
    assert json.loads(ref.read_text())["relative_to_artifact"]  # (rewritten whole by the rerun)
    ref.unlink()
    ref.write_text(json.dumps({"source": str(tmp_path / "runs" / "gone" / "checkpoint")}, indent=2))
    manifest = json.loads((entry / stage_cache.MANIFEST).read_text())
    manifest["model"]["damoc_model_ref.json"] = ref.stat().st_size
    (entry / stage_cache.MANIFEST).write_text(json.dumps(manifest))
    third, out3 = _model_stage(tmp_path, "r3", calls)
    assert not third.reused and calls[-1] == "r3" and (out3 / "checkpoint" / "weights.bin").is_file()
    assert "no longer exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- 2 and 3: publishing, --out

def _selection(selected: str | None) -> dict:
    row = ({"candidate": "a", "rank": 1, "status": "ok", "score": 0.5} if selected else
           {"candidate": "a", "rank": None, "status": "failed", "score": None, "error": "train: boom"})
    return {"mode": "damoc", "metric": "rougel", "selected": selected, "warnings": [], "ranking": [row],
            "cost": {"train_seconds": {"a": 1.0}, "total_seconds": 2.0}, "stats": {}}


@pytest.fixture
def fake_pipeline(monkeypatch):
    """run_local with the pipeline replaced by a function writing its results (no task process starts)."""
    import damoc_pipelines.damoc_pipeline as pipeline_module

    plan: dict = {"selected": "a", "raise": None}

    def fake(**kwargs):
        if plan["raise"] is not None:
            raise plan["raise"]
        run = Path(kwargs["output_uri"])
        (run / "selection.json").write_text(json.dumps(_selection(plan["selected"])))
        (run / "report.md").write_text(f"# report {plan['selected']}\n")
        (run / "pipeline_root").mkdir(exist_ok=True)

    monkeypatch.setattr(pipeline_module, "damoc_pipeline", fake)
    monkeypatch.setattr("damoc_pipelines.local_runner.to_pipeline_arguments", lambda cfg: {})
    return plan


def test_a_run_where_every_candidate_failed_never_replaces_a_good_one(tmp_path, fake_pipeline, capsys):
    from damoc_pipelines.local_runner import RunFailed, run_local

    out = tmp_path / "out"
    assert run_local(None, out)["selected"] == "a"
    good = (out / "current").resolve()
    fake_pipeline["selected"] = None
    with pytest.raises(RunFailed) as failed:
        run_local(None, out)
    assert (out / "current").resolve() == good and (out / "report.md").read_text() == "# report a\n"
    assert failed.value.run_dir.is_dir() and failed.value.run_dir != good  # kept beside the good one
    assert str(failed.value.run_dir) in str(failed.value) and good.name in str(failed.value)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([good.name, failed.value.run_dir.name])


def test_cli_names_the_unpublished_run_and_exits_1(tmp_path, fake_pipeline, capsys, monkeypatch):
    cfg = _run_config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    fake_pipeline["selected"] = None
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "was not published" in err[0] and str(out / "runs") in err[0]
    assert json.loads((out / "selection.json").read_text())["selected"] == "a"


def _run_config(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = "".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(4))
    (data / "train.jsonl").write_text(rows)
    (data / "eval.jsonl").write_text(rows)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl"),
                 "fields": {"instruction": "", "input": "question", "output": "answer"}},
        "candidates": [{"name": "a", "path": "org/model-a"}]}))
    return cfg


def test_an_out_folder_with_files_the_run_did_not_create_is_refused(tmp_path, fake_pipeline, capsys):
    cfg = _run_config(tmp_path)
    data = tmp_path / "data"
    (data / "report.md").write_text("my own notes\n")
    assert main(["run", str(cfg), "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "holds files a damoc run did not create (eval.jsonl, report.md, train.jsonl)" in err
    assert (data / "report.md").read_text() == "my own notes\n" and not (data / "runs").exists()
    assert not (data / ".damoc.lock").exists()
    # a folder an earlier run wrote is fine, and so is a new one
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_into_the_same_out_exits_2_naming_the_holder(tmp_path, fake_pipeline, capsys):
    cfg = _run_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out / ".damoc.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        assert main(["run", str(cfg), "--out", str(out)]) == 2
        assert time.monotonic() - started < 10  # at once, not after waiting
        err = capsys.readouterr().err
        assert f"another damoc run (pid {holder.pid}) is writing to it" in err and not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock (the file still names its pid) is taken over
    assert (out / ".damoc.lock").read_text().strip() == str(holder.pid)
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    assert (out / ".damoc.lock").read_text().strip() == str(os.getpid())


# --------------------------------------------------------------------------- 4: compression's failure is its own

def test_an_empty_candidate_directory_does_not_switch_compression_off(tmp_path, zoo_dir, capsys):
    from damoc.config import parse_config
    from damoc.data.records import write_samples
    from damoc.data.schema import Sample
    from damoc.workflow.data_steps import compress_step

    (tmp_path / "empty").mkdir()
    cfg = parse_config({
        "data": {"train": "t.jsonl", "eval": "e.jsonl"},
        "candidates": [{"name": "good", "path": str(zoo_dir / "tiny-llama" / "chat")},
                       {"name": "empty", "path": str(tmp_path / "empty")}],
        "compression": {"rate": 0.6, "bertscore_threshold": 0.0, "scorer_model": str(zoo_dir / "tiny-llama" / "base")}})
    rows = [Sample(id=f"t{i}", instruction="Answer briefly.", input=f"the river flows past the market {i} " * 6,
                   output=f"the bridge {i}") for i in range(4)]
    write_samples(rows, tmp_path / "train.jsonl")
    result = compress_step(cfg, tmp_path / "train.jsonl", tmp_path / "out.jsonl", progress=False)
    assert result.status == "ok" and "fallback" not in result.stats
    assert set(result.stats["token_ratio_skipped"]) == {"empty"}
    assert "good" in json.dumps(result.stats) and "warning: compression fell back" not in capsys.readouterr().err


def test_a_compression_fallback_is_said_on_the_console_in_the_report_and_as_a_flag(tmp_path, capsys):
    from damoc.config import parse_config
    from damoc.data.records import write_samples
    from damoc.data.schema import Sample
    from damoc.selection.ranking import build_selection
    from damoc.selection.report import render_report
    from damoc.workflow.data_steps import compress_step

    cfg = parse_config({"data": {"train": "t.jsonl", "eval": "e.jsonl"},
                        "candidates": [{"name": "a", "path": "org/a"}],
                        "compression": {"rate": 0.6, "scorer_model": str(tmp_path / "no-scorer")}})
    write_samples([Sample(id="t0", instruction="", input="q " * 30, output="a")], tmp_path / "train.jsonl")
    stage = compress_step(cfg, tmp_path / "train.jsonl", tmp_path / "out.jsonl", progress=False)
    assert stage.status == "skipped" and stage.stats == {"fallback": True}
    assert "warning: compression fell back: the scorer" in capsys.readouterr().err
    sel = build_selection(mode="damoc", metric="rougel", results=[_ok("a", 0.5)], stage_results=[stage],
                          stage_seconds={}, total_seconds=1.0)
    assert sel["warnings"] == [f"compression fell back: {stage.reason}"]
    assert f"**Warning:** compression fell back: {stage.reason}" in render_report(sel)


# --------------------------------------------------------------------------- 5: divergence, degenerate answers

def _ok(name: str, score: float, *, train: dict | None = None, evaluate: dict | None = None) -> CandidateResult:
    r = CandidateResult(candidate=name, score=score)
    r.record(StageResult(stage="train", stats={"train_loss": 1.0, "loss_is_finite": True, **(train or {})}))
    r.record(StageResult(stage="evaluate", stats={"loglik": score, **(evaluate or {})}))
    return r


def test_divergence_rule():
    from damoc.training.finetune import _loss_span, diverged

    assert diverged(7.0, 1.5e8) and diverged(7.0, float("nan")) and diverged(float("inf"), 3.0)
    assert not diverged(7.0, 6.0) and not diverged(7.0, 14.0) and not diverged(None, 3.0)
    history = [{"step": 1, "loss": 7.2}, {"step": 10, "loss": 9e7}, {"train_loss": 4e7, "step": 12}]
    assert _loss_span(history, 4e7) == (7.2, 9e7)
    assert _loss_span([{"step": 1, "loss": 7.2}, {"train_loss": 1.5e8}], 1.5e8) == (7.2, 1.5e8)


def test_a_training_that_blew_up_is_flagged_with_its_losses(tiny_pair, tmp_path):
    from damoc.config import TrainingConfig
    from damoc.data.schema import Sample
    from damoc.training.finetune import finetune

    samples = [Sample(id=str(i), instruction="Repeat.", input=f"word {w}", output=w)
               for i, w in enumerate(["river", "market", "bridge", "fever"] * 2)]
    stats = finetune(tiny_pair[1], samples, tmp_path / "m",
                     TrainingConfig(learning_rate=30, max_steps=6, batch_size=4, max_length=32))
    assert stats["diverged"] is True and 0 < stats["loss_start"] < 20  # the untrained model's first step
    assert not math.isfinite(stats["loss_end"]) or stats["loss_end"] > 3 * stats["loss_start"]
    healthy = finetune(tiny_pair[1], samples, tmp_path / "h",
                       TrainingConfig(learning_rate=3e-3, max_steps=4, batch_size=4, max_length=32))
    assert healthy["diverged"] is False and healthy["loss_end"] < 3 * healthy["loss_start"]


def test_a_diverged_candidate_is_never_selected_even_alone():
    from damoc.selection.ranking import build_selection

    blown = _ok("blown", -1.0, train={"train_loss": 1.5e8, "loss_start": 7.0, "diverged": True})
    healthy = _ok("healthy", -8.55)
    sel = build_selection(mode="damoc", metric="rougel", results=[blown, healthy], stage_results=[],
                          stage_seconds={}, total_seconds=1.0)
    assert sel["selected"] == "healthy" and [r["candidate"] for r in sel["ranking"]] == ["healthy", "blown"]
    assert sel["ranking"][1]["diverged"] and "training diverged" in sel["ranking"][1]["flags"][0]
    alone = build_selection(mode="damoc", metric="rougel", results=[blown], stage_results=[], stage_seconds={},
                            total_seconds=1.0)
    assert alone["selected"] is None
    # a diverged run whose score came out non-finite says why, instead of "no score reported"
    nan = _ok("nan", float("nan"), train={"train_loss": 1.5e8, "loss_start": 7.0, "diverged": True})
    row = build_selection(mode="damoc", metric="rougel", results=[nan, healthy], stage_results=[],
                          stage_seconds={}, total_seconds=1.0)["ranking"][1]
    assert row["status"] == "failed" and row["error"].startswith("training diverged (loss 7.0 at the first step")


def test_degenerate_answers_rank_below_healthy_ones_and_warn_first_when_selected():
    from damoc.evaluation.degenerate import degenerate_reason, degenerate_stats
    from damoc.selection.ranking import build_selection
    from damoc.selection.report import render_report

    assert degenerate_reason([""] * 10) == "10 of 10 answers are empty"
    assert degenerate_reason(["the"] * 9 + ["a"]) == "9 of 10 answers are the same text ('the')"
    assert degenerate_reason(["the"] * 4) is None  # too few rows to call agreement degenerate
    assert degenerate_reason(["A"] * 10, generated=False) is None  # a choice task's picks may agree
    assert degenerate_reason([f"answer {i}" for i in range(10)]) is None
    empty = _ok("empty", -7.62, evaluate=degenerate_stats([""] * 10))
    healthy = _ok("healthy", -8.55, evaluate=degenerate_stats([f"a{i}" for i in range(10)]))
    sel = build_selection(mode="damoc", metric="rougel", results=[empty, healthy], stage_results=[],
                          stage_seconds={}, total_seconds=1.0)
    assert sel["selected"] == "healthy" and sel["ranking"][1]["degenerate"] == "10 of 10 answers are empty"
    assert sel["warnings"] == []
    alone = build_selection(mode="damoc", metric="rougel", results=[empty], stage_results=[], stage_seconds={},
                            total_seconds=1.0)
    assert alone["selected"] == "empty" and alone["warnings"][0].startswith(
        "the selected candidate empty has degenerate answers (10 of 10 answers are empty)")
    report = render_report(alone)
    assert report.index(alone["warnings"][0]) < report.index("## Ranking")


# --------------------------------------------------------------------------- 6: secrets never echoed

_S3_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")


@pytest.mark.parametrize("endpoint", [
    "http://user:PW-s3cr3t@host:9000/path", "ftp://user:PW-s3cr3t@host:21", "http://user:PW-s3cr3t@host:9000",
    "https://user:PW%2Ds3cr3t%40x@host", "user:PW-s3cr3t@host:9000", "http://user:PW-s3cr3t/x@host:1"])
def test_a_password_in_the_endpoint_is_never_printed(endpoint, monkeypatch):
    from damoc import storage

    for name in _S3_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secretexample")
    with pytest.raises(storage.StorageError) as err:
        storage.s3_settings_from_env()
    assert "PW" not in str(err.value) and "s3cr3t" not in str(err.value) and "credentials" in str(err.value)


@pytest.mark.parametrize("text,clean", [
    ("read http://user:PW@host:9000/b failed", "read http://host:9000/b failed"),
    ("ftp://u:p%40ss%3Aw@h/x", "ftp://h/x"),
    ("s3://key:secret@bucket/k and https://a:b@c:1", "s3://bucket/k and https://c:1"),
    ("http://u:p@ss@host/x", "http://host/x"),
    ("https://host/path?q=1", "https://host/path?q=1")])
def test_redact_uri(text, clean):
    from damoc.storage import StorageError, redact_uri

    assert redact_uri(text) == clean and str(StorageError(text)) == clean


def test_the_error_line_and_the_kfp_host_never_show_a_password(monkeypatch, capsys):
    from damoc.cli import _error
    from damoc.cluster.kfp_client import KfpError, make_client

    _error("cannot reach https://admin:PW-s3cr3t@kfp.example:443")
    assert "PW-s3cr3t" not in capsys.readouterr().err
    monkeypatch.setenv("DAMOC_KFP_HOST", "ftp://admin:PW-s3cr3t@kfp.example")
    with pytest.raises(KfpError) as err:
        make_client()
    assert "PW-s3cr3t" not in str(err.value)


# --------------------------------------------------------------------------- 7: exit codes

@pytest.mark.parametrize("value", ["filter.ratio=[", "filter.ratio=@0.1",
                                   "filter.ratio=!!python/object/apply:os.system ['true']"])
def test_an_unparsable_set_value_is_one_line_and_exit_2(tmp_path, capsys, value):
    assert main(["run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "o"), "--set", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --set {value}: not a valid value (")
    assert "Traceback" not in err


def test_an_internal_failure_exits_1_naming_the_task_and_its_log(tmp_path, fake_pipeline, capsys, monkeypatch):
    cfg = _run_config(tmp_path)
    out = tmp_path / "out"
    fake_pipeline["raise"] = RuntimeError("Task 'rank-candidates' finished with status \x1b[91mFAILURE\x1b[0m")
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    log = next((out / "runs").iterdir()) / "run.log"
    assert err.startswith("error: run failed: task 'rank-candidates' failed (RuntimeError: Task") and str(log) in err
    # an OS error once the run started (kfp.local could not start a task: E2BIG) is the run's failure, not 2
    import damoc_pipelines.local_runner as runner

    monkeypatch.setattr(runner, "_last_task", "rank_candidates")
    fake_pipeline["raise"] = OSError(7, "Argument list too long")
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert "task 'rank_candidates' failed (OSError: [Errno 7] Argument list too long)" in err[-1]
    assert "run.log" in err[-1]


# --------------------------------------------------------------------------- 8: kfp.local's temporary folders

def test_task_processes_get_the_runs_own_tmpdir_which_is_removed(tmp_path, fake_pipeline, monkeypatch):
    import damoc_pipelines.local_runner as runner

    seen = {}

    def fake(**kwargs):  # a task process, started as kfp.local starts it
        proc = runner._TrackedPopen([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp())",
                                     "--function_to_execute", "prepare_data"], stdout=subprocess.PIPE, text=True)
        seen["tmp"] = Path(proc.communicate()[0].strip())
        run = Path(kwargs["output_uri"])
        (run / "selection.json").write_text(json.dumps(_selection("a")))

    import damoc_pipelines.damoc_pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "damoc_pipeline", fake)
    runner.run_local(None, tmp_path / "out")
    run_dir = (tmp_path / "out" / "current").resolve()
    assert seen["tmp"].parent == run_dir / "tmp" and not (run_dir / "tmp").exists()
    assert runner._last_task == "prepare_data"


def test_no_task_process_starts_once_a_run_is_stopping():
    """kfp.local runs the candidates' loop in threads that outlive the main thread's interrupt: after a stop they
    must not start the next task (a Ctrl-C during fine-tuning used to let the run go on to evaluate)."""
    from kfp.local import subprocess_task_handler as handler

    from damoc_pipelines.local_runner import guard_task_processes

    with pytest.raises(KeyboardInterrupt):
        with guard_task_processes():
            raise KeyboardInterrupt
    with pytest.raises(RuntimeError, match="no further task is started"):
        handler.subprocess.Popen([sys.executable, "-c", "pass"])
    with guard_task_processes():  # the next run starts its tasks again
        assert handler.run_local_subprocess([sys.executable, "-c", "print('task')"]) == 0
    assert handler.subprocess is subprocess
