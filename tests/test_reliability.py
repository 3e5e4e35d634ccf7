"""Issue 12 (reliability): bad input found before any work, clear exit codes, interruption, caches.

Every test here is fast (no model is loaded, no pipeline task runs); docs/reliability.md maps each case to
its test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from damoc import storage
from damoc.cli import main
from damoc.data.io import DataError, load_samples, validate_data

FIELDS = {"instruction": None, "input": "question", "output": "answer"}
REPO = Path(__file__).resolve().parents[1]


def _rows(n: int, bad: dict[int, dict] | None = None) -> list[dict]:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(1, n + 1)]
    for row_number, patch in (bad or {}).items():
        rows[row_number - 1] = {**rows[row_number - 1], **patch}
    return rows


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, train: str = "train.jsonl", eval_: str = "eval.jsonl", **data) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": train, "eval": eval_, "fields": {"instruction": "", "input": "question",
                                                            "output": "answer"}, **data},
        "candidates": [{"name": "a", "path": "org/model-a"}]}))  # a hub id: not checked offline
    return cfg


# --------------------------------------------------------------------------- the whole file, every bad row

def test_whole_file_validated_and_every_bad_row_reported(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _rows(300, {121: {"answer": ""}, 250: {"question": None}}))
    with pytest.raises(DataError) as err:
        validate_data(str(path), FIELDS)
    text = str(err.value)
    assert text.splitlines()[0] == f"{path}: 2 bad rows of 300 — fix or drop them:"
    assert f"{path}: row 121: field 'answer' (output) is empty" in text
    assert f"{path}: row 250: field 'question' (input) is empty" in text
    assert err.value.errors and len(err.value.errors) == 2


def test_bad_rows_listed_up_to_the_limit(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _rows(100, {i: {"answer": ""} for i in range(1, 51)}))
    with pytest.raises(DataError) as err:
        validate_data(str(path), FIELDS, max_errors=20)
    assert "50 bad rows of 100; the first 20 are listed" in str(err.value)
    assert len(err.value.errors) == 20 and "row 20:" in err.value.errors[-1]


@pytest.mark.parametrize("line,expect", [
    ("[1, 2]", "is a JSON list, not an object"), ('"text"', "is a JSON str, not an object"),
    ("{broken", "cannot parse as JSON")])
def test_jsonl_line_that_is_not_an_object(tmp_path, line, expect):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_rows(1)[0]) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=expect) as err:
        load_samples(str(path), FIELDS)
    assert f"{path}: row 2 (line 3)" in str(err.value)


@pytest.mark.parametrize("cell,kind", [({"a": 1}, "dict"), (["x"], "list"), (True, "true/false")])
def test_nested_or_boolean_text_cells_are_not_stringified(tmp_path, cell, kind):
    path = _jsonl(tmp_path / "d.jsonl", _rows(2, {2: {"answer": cell}}))
    with pytest.raises(DataError, match=rf"row 2: field 'answer' \(output\) is a {kind} value, not text"):
        load_samples(str(path), FIELDS)


def test_csv_and_parquet_stream_with_row_numbers(tmp_path):
    frame = pd.DataFrame(_rows(40, {7: {"answer": ""}}))
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        with pytest.raises(DataError, match=r"row 7: field 'answer' \(output\) is empty"):
            validate_data(str(tmp_path / name), FIELDS)
        assert validate_data(str(tmp_path / name), FIELDS, limit=6) == 6  # only the rows the run reads
    (tmp_path / "wide.csv").write_text("question,answer\nq1,a1\nq2,a2,extra\n")
    with pytest.raises(DataError, match="row 2: has 3 fields, the header has 2"):
        validate_data(str(tmp_path / "wide.csv"), FIELDS)
    (tmp_path / "long.csv").write_text("question,answer\nq," + "w " * 200_000 + "\n")  # > csv's 128 KB default
    assert validate_data(str(tmp_path / "long.csv"), FIELDS) == 1


# --------------------------------------------------------------------------- the CLI: exit 2, one clear message

def test_run_prechecks_every_row_before_any_task(tmp_path, capsys):
    _jsonl(tmp_path / "train.jsonl", _rows(200, {121: {"answer": ""}}))
    _jsonl(tmp_path / "eval.jsonl", _rows(5, {3: {"question": " "}}))
    out = tmp_path / "out"
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    assert "train.jsonl: row 121: field 'answer' (output) is empty" in err
    assert "eval.jsonl: row 3: field 'question' (input) is empty" in err  # both files in one go
    assert not (out / "runs").exists()  # nothing started


def test_debug_shows_the_traceback(tmp_path):
    _jsonl(tmp_path / "train.jsonl", ["not an object"])
    _jsonl(tmp_path / "eval.jsonl", _rows(2))
    with pytest.raises(DataError, match="not an object"):
        main(["run", str(_config(tmp_path)), "--out", str(tmp_path / "out"), "--debug"])


def test_out_arguments_that_name_a_file(tmp_path, capsys):
    _jsonl(tmp_path / "train.jsonl", _rows(2))
    _jsonl(tmp_path / "eval.jsonl", _rows(2))
    afile = tmp_path / "a-file"
    afile.write_text("keep me")
    assert main(["run", str(_config(tmp_path)), "--out", str(afile)]) == 2
    assert main(["data", "demo", "--out", str(afile)]) == 2
    assert main(["compile", "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("is an existing file; --out takes a directory") == 3 and "Traceback" not in err
    assert afile.read_text() == "keep me"
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exit_:
            main(["data", "demo", "--out", str(tmp_path / "d"), "--train", bad])
        assert exit_.value.code == 2
    assert "--train: must be at least 1" in capsys.readouterr().err


def test_errors_carry_no_colour_codes_and_interrupt_is_one_line(tmp_path, capsys, monkeypatch):
    import damoc_pipelines.local_runner as runner

    _jsonl(tmp_path / "train.jsonl", _rows(2))
    _jsonl(tmp_path / "eval.jsonl", _rows(2))
    cfg = _config(tmp_path)

    def failed(cfg, out):
        raise RuntimeError("\x1b[31mTask 'train' finished with status FAILURE\x1b[0m")

    monkeypatch.setattr(runner, "run_local", failed)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "Task 'train' finished with status FAILURE" in err

    def interrupted(cfg, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_local", interrupted)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "note:"))]  # pre-run notes
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (Ctrl-C)") and "Traceback" not in err
    monkeypatch.setattr(runner, "run_local", lambda cfg, out: (_ for _ in ()).throw(runner.RunInterrupted(15)))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 143


def test_result_files_are_written_without_colour_codes(tmp_path):
    from damoc_pipelines.local_runner import _clean_results

    (tmp_path / "selection.json").write_text(json.dumps(
        {"ranking": [{"candidate": "b", "error": "train: \x1b[1;31mCUDA out of memory\x1b[0m"}]}))
    (tmp_path / "report.md").write_text("| b | failed | \x1b[31mOOM\x1b[0m |\n")
    _clean_results(tmp_path)
    assert "\\u001b" not in (tmp_path / "selection.json").read_text()
    assert json.loads((tmp_path / "selection.json").read_text())["ranking"][0]["error"] == "train: CUDA out of memory"
    assert (tmp_path / "report.md").read_text() == "| b | failed | OOM |\n"


# --------------------------------------------------------------------------- silent surprises

def test_missing_relative_data_path_never_uses_the_current_directory(tmp_path, capsys, monkeypatch):
    confdir, cwd = tmp_path / "conf", tmp_path / "elsewhere"
    confdir.mkdir()
    cwd.mkdir()
    _jsonl(cwd / "train.jsonl", _rows(3))  # a same-named file where the command runs
    _jsonl(cwd / "eval.jsonl", _rows(3))
    _jsonl(confdir / "eval.jsonl", _rows(3))
    monkeypatch.chdir(cwd)
    assert main(["run", str(_config(confdir)), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "data.train: train.jsonl: file not found next to the config" in err
    assert str(confdir / "train.jsonl") in err
    # on the command line a relative path is relative to where you are
    assert main(["run", str(_config(confdir)), "--out", str(tmp_path / "out"), "--dry-run",
                 "--set", "data.train=train.jsonl"]) == 0


def test_dry_run_does_not_build_the_zoo(tmp_path, capsys, monkeypatch):
    import damoc.demo.zoo as zoo

    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(zoo, "ensure_zoo", lambda *a, **k: pytest.fail("--dry-run started the zoo build"))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": "demo://qa_long/train.jsonl",
                                            "eval": "demo://qa_long/eval.jsonl"},
                                   "candidates": [{"name": "l", "path": "zoo://tiny-llama"}]}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert '"zoo://tiny-llama"' in capsys.readouterr().out
    assert not (tmp_path / "home").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- interruption: results switch together

def _fake_run(out: Path, name: str, tag: str) -> Path:
    run = out / "runs" / name
    (run / "pipeline_root" / "task").mkdir(parents=True)
    (run / "pipeline_root" / "task" / "model.bin").write_text(tag)
    (run / "selection.json").write_text(json.dumps({"selected": tag}))
    (run / "report.md").write_text(f"report {tag}")
    return run


def test_results_switch_together_and_a_failed_run_loses_nothing(tmp_path):
    from damoc_pipelines.local_runner import _promote, _remove_leftovers

    out = tmp_path / "out"
    out.mkdir()
    (out / "pipeline_root").mkdir()  # the layout before: real files in OUT
    (out / "selection.json").write_text('{"selected": "old"}')
    first = _fake_run(out, "r1", "one")
    _promote(out, first)
    assert json.loads((out / "selection.json").read_text()) == {"selected": "one"}
    assert (out / "report.md").read_text() == "report one"
    assert (out / "pipeline_root" / "task" / "model.bin").read_text() == "one"
    # a second run starts and is interrupted half-way: nothing of the first run is touched
    _remove_leftovers(out)
    half = out / "runs" / "r2"
    (half / "pipeline_root").mkdir(parents=True)
    (half / "selection.json").write_text("{trunc")
    assert json.loads((out / "selection.json").read_text()) == {"selected": "one"}
    assert (out / "pipeline_root" / "task" / "model.bin").read_text() == "one"
    # the next run clears the leftover, succeeds, and switches both files in one rename
    _remove_leftovers(out)
    assert not half.exists() and first.exists()
    third = _fake_run(out, "r3", "three")
    _promote(out, third)
    assert os.readlink(out / "current") == "runs/r3" and not first.exists()
    assert (out / "selection.json").resolve().parent == (out / "report.md").resolve().parent == third
    assert (out / "report.md").read_text() == "report three"


_CHILD_SCRIPT = textwrap.dedent("""
    import concurrent.futures, sys, time
    from kfp.local import subprocess_task_handler as h
    from damoc_pipelines.local_runner import guard_task_processes, RunInterrupted

    child = [sys.executable, "-c", "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"]
    try:
        with guard_task_processes():
            with concurrent.futures.ThreadPoolExecutor(2) as pool:  # like kfp.local's ParallelFor
                futures = [pool.submit(h.run_local_subprocess, child) for _ in range(2)]
                for f in concurrent.futures.as_completed(futures):
                    f.result()
    except RunInterrupted as err:
        print("interrupted", err.signum, flush=True)
        sys.exit(128 + err.signum)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_task_process(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD_SCRIPT], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    pids = []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("child"):
            pids.append(int(line.split()[1]))
    assert len(pids) == 2
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=90)  # generous: a loaded 2-core box is slow to stop the children
    assert proc.returncode == 128 + signum and f"interrupted {int(signum)}" in rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # gone, not left running (nor a zombie of ours)
            os.kill(pid, 0)


# --------------------------------------------------------------------------- caches (moto S3 on 127.0.0.1)

_S3_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "DAMOC_S3_SECURE", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")


@pytest.fixture(scope="module")
def s3_server(start_moto) -> Iterator[int]:
    with start_moto() as port:
        yield port


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path) -> str:
    for name in _S3_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", f"http://127.0.0.1:{s3_server}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIARELIABILITY0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "reliability-secret-0123456789")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("DAMOC_HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    name = f"rel-{uuid.uuid4().hex[:12]}"
    storage.client_from_env().make_bucket(name)
    return name


def test_s3_data_validated_whole_and_leaves_no_temp_folders(s3_bucket, tmp_path):
    _jsonl(tmp_path / "t.jsonl", _rows(150, {121: {"answer": ""}, 140: {"answer": ""}}))
    storage.upload_file(tmp_path / "t.jsonl", f"s3://{s3_bucket}/d/train.jsonl")
    pd.DataFrame(_rows(5)).to_parquet(tmp_path / "t.parquet")
    storage.upload_file(tmp_path / "t.parquet", f"s3://{s3_bucket}/d/train.parquet")
    with pytest.raises(DataError) as err:
        validate_data(f"s3://{s3_bucket}/d/train.jsonl", FIELDS)
    assert f"s3://{s3_bucket}/d/train.jsonl: row 121: field 'answer'" in str(err.value) and "row 140" in str(err.value)
    assert len(load_samples(f"s3://{s3_bucket}/d/train.jsonl", FIELDS, limit=100)) == 100
    assert len(load_samples(f"s3://{s3_bucket}/d/train.parquet", FIELDS)) == 5
    assert list((tmp_path / "tmp").iterdir()) == []  # no damoc-s3-* folders left behind
    assert not (tmp_path / "home").exists()  # streamed: no copy kept either


def test_run_prechecks_s3_data(s3_bucket, tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"question": "q", "answer": "a"}\n[1]\n')
    storage.upload_file(tmp_path / "t.jsonl", f"s3://{s3_bucket}/train.jsonl")
    storage.upload_file(tmp_path / "t.jsonl", f"s3://{s3_bucket}/eval.jsonl")
    cfg = _config(tmp_path, f"s3://{s3_bucket}/train.jsonl", f"s3://{s3_bucket}/missing.jsonl")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"s3://{s3_bucket}/train.jsonl: row 2: is a JSON list, not an object" in err
    assert "Traceback" not in err and "reliability-secret" not in err
    cfg = _config(tmp_path, f"s3://{s3_bucket}/eval.jsonl", f"s3://{s3_bucket}/missing.jsonl")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_model_cache_key_includes_the_endpoint(s3_bucket, s3_server, tmp_path, monkeypatch):
    from damoc.workflow.model_sources import resolve_model_source

    storage.write_text(f"s3://{s3_bucket}/m/config.json", "{}")
    first = Path(resolve_model_source(f"s3://{s3_bucket}/m"))
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", f"http://localhost:{s3_server}")  # another object store's name
    second = Path(resolve_model_source(f"s3://{s3_bucket}/m"))
    assert first != second and (first / "config.json").is_file() and (second / "config.json").is_file()
    assert "127.0.0.1" in str(first) and "localhost" in str(second)


def test_model_cache_refreshes_when_the_s3_checkpoint_changes(s3_bucket, monkeypatch):
    from damoc.workflow.model_sources import resolve_model_source

    uri = f"s3://{s3_bucket}/ckpt"
    storage.write_text(f"{uri}/config.json", '{"v": 1}')
    storage.write_text(f"{uri}/weights.bin", "old weights")
    downloads = []
    real_download = storage.download_dir
    monkeypatch.setattr(storage, "download_dir", lambda *a: downloads.append(a[0]) or real_download(*a))
    first = Path(resolve_model_source(uri))
    assert (first / "weights.bin").read_text() == "old weights"
    assert Path(resolve_model_source(uri)) == first and len(downloads) == 1  # unchanged: the copy is reused
    storage.write_text(f"{uri}/weights.bin", "new weights")  # rewritten in place, same key
    second = Path(resolve_model_source(uri))
    assert second == first and (second / "weights.bin").read_text() == "new weights" and len(downloads) == 2
    storage.write_text(f"{uri}/extra.json", "{}")  # an object added
    assert (Path(resolve_model_source(uri)) / "extra.json").is_file() and len(downloads) == 3
    assert not [p for p in first.parent.iterdir() if p.name.startswith((".download-", "."))]


def test_a_run_where_every_candidate_failed_exits_1_not_0(tmp_path, capsys, monkeypatch):
    import damoc_pipelines.local_runner as runner

    _jsonl(tmp_path / "train.jsonl", _rows(2))
    _jsonl(tmp_path / "eval.jsonl", _rows(2))
    cfg = _config(tmp_path)
    nobody = {"mode": "damoc", "metric": "rougel", "selected": None, "cost": {"train_seconds": {}, "total_seconds": 1.0},
              "ranking": [{"rank": None, "candidate": "a", "score": None, "status": "failed", "error": "boom"}],
              "stats": {}}
    monkeypatch.setattr(runner, "run_local", lambda cfg, out: nobody)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "every one failed" in err and "Traceback" not in err
    monkeypatch.setattr(runner, "run_local", lambda cfg, out: {**nobody, "selected": "a"})
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 0


def test_console_keeps_the_steps_output_but_not_kfp_bookkeeping(tmp_path, capsys, monkeypatch):
    import json as _json
    import warnings

    from damoc_pipelines.run_log import quiet_kfp_output

    executor_input = _json.dumps({"inputs": {"parameterValues": {"data": {"train": "t.jsonl"}}}}, indent=4)
    streamed = ("    [KFP Executor 2026 INFO]: Looking for component `prepare_data` in --component_module_path x\n"
                "    [KFP Executor 2026 INFO]: Got executor_input:\n"
                + "\n".join("    " + line for line in executor_input.splitlines()) + "\n"
                "    compress: 100%|##########| 12/12\n"
                "    [KFP Executor 2026 INFO]: Wrote executor output file to /x/out.json.\n")
    monkeypatch.delenv("DAMOC_VERBOSE", raising=False)
    import logging

    root_handlers = logging.getLogger().handlers[:]
    with quiet_kfp_output(tmp_path / "run.log"):
        sys.stdout.write(streamed)  # (not print: kfp.local patches builtins.print while it runs)
        logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))  # as kfp.local's logger does
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current "
                                    r"local runner", category=UserWarning)  # as quiet_kfp_output installs it
            warnings.warn("Task 'rank': settings ['cpu_limit'] have no effect in the current local runner and "
                          "will be ignored.", UserWarning)
    out = capsys.readouterr().out
    assert out == ""  # nothing of the stream: the console shows the run's story (damoc.console), not task text
    assert (tmp_path / "run.log").read_text() == streamed  # nothing lost: the whole stream is in run.log
    assert not seen
    assert logging.getLogger().handlers == root_handlers  # nothing left bound to the run's (closed) streams
    monkeypatch.setenv("DAMOC_VERBOSE", "1")
    with quiet_kfp_output(tmp_path / "run2.log"):
        sys.stdout.write(streamed)
    assert capsys.readouterr().out == streamed and (tmp_path / "run2.log").read_text() == streamed
