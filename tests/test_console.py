"""The run's console (damoc.console, damoc_pipelines.run_log): the story from the tasks' own results, fast."""
import io
import json
import re
import threading

import pytest

from damoc.console import Outcome, RunStory, describe, ranking_lines, stage_of
from damoc.results import CandidateResult, StageResult
from damoc.workflow.outcome import write_result

ANSI = re.compile(r"\x1b\[")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Artifact:
    """What kfp hands back for an output artifact: something with a local path and metadata."""

    def __init__(self, path, metadata=None):
        self.path, self.metadata = str(path), metadata or {}


def _candidate(name, tmp_path, *, failed=False):
    result = CandidateResult(candidate=name)
    if failed:
        result.record(StageResult(stage="prune", status="failed", reason="FileNotFoundError: /does/not/exist"))
        return result
    result.record(StageResult(stage="prune", seconds=2.0, stats={"num_layers_before": 8, "num_layers_after": 6}))
    result.record(StageResult(stage="train", seconds=30.0, stats={"train_loss": 2.3141, "samples": 300}))
    result.record(StageResult(stage="evaluate", seconds=8.0, stats={"loglik": -8.5491, "samples": 60}))
    result.score = -8.5491
    return result


def _feed(story, tmp_path, clock):
    """A 2-candidate run, as kfp.local reports it: data stages' stats parameters, candidates' artifacts."""
    story.started("validate")
    clock.now += 1
    story.finished("validate", None, describe("validate", {}, {"candidates": [{}, {}], "mode": "damoc"}))
    for stage, stats in (("prepare", {"train_samples": 1500, "eval_samples": 60}),
                         ("filter", {"n_in": 1500, "n_out": 300}),
                         ("compress", {"token_ratio": 0.753, "n": 300, "passed_gate": 285})):
        story.started(stage)
        clock.now += 10
        doc = StageResult(stage=stage, seconds=10.0, stats=stats).model_dump_json()
        story.finished(stage, None, describe(stage, {"stats": doc, "metrics": Artifact(tmp_path / "m")}))
    for name, failed in (("tiny-llama", False), ("broken", True)):
        result = _candidate(name, tmp_path, failed=failed)
        model_dir = tmp_path / name / "model"
        model_dir.mkdir(parents=True)
        write_result(model_dir, result)
        for stage in ("prune", "train"):
            story.started(stage, name)
            clock.now += 5
            story.finished(stage, name, describe(stage, {"model": Artifact(model_dir)}))
        result_file = tmp_path / name / "result.json"
        result_file.write_text(result.model_dump_json())
        story.started("evaluate", name)
        clock.now += 5
        story.finished("evaluate", name, describe("evaluate", {"result": Artifact(result_file)}))
    story.started("rank")
    story.finished("rank", None, describe("rank", {"selected": "tiny-llama"}))


def test_the_story_names_every_task_with_its_key_number_in_plain_lines(tmp_path):
    out, clock = io.StringIO(), Clock()
    story = RunStory(total=11, stream=out, clock=clock)
    assert story.bar is None  # not a terminal: no bar
    _feed(story, tmp_path, clock)
    story.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 22 and not ANSI.search(out.getvalue()) and "{" not in out.getvalue()
    text = out.getvalue()
    assert "done   validate" in text and "2 candidates, mode damoc" in text
    assert re.search(r"\[  0:21\] done   filter +10\.0 s  kept 300 of 1,500 rows \(20\.0%\)", text)
    assert "kept 75.3% of the tokens; 95.0% of rows passed the BERTScore gate" in text
    assert re.search(r"done   prune tiny-llama +5\.0 s  kept 6 of 8 layers", text)
    assert "done   train tiny-llama" in text and "loss 2.3141 on 300 rows" in text
    assert re.search(r"done   evaluate tiny-llama .* loglik -8\.5491", text)
    assert re.search(r"FAIL   prune broken .* FileNotFoundError: /does/not/exist", text)
    assert re.search(r"skip   train broken .* not run: prune: FileNotFoundError", text)
    assert "done   rank" in text and "selected tiny-llama" in text
    for stage in ("prune", "train", "evaluate"):
        for name in ("tiny-llama", "broken"):
            assert f"start  {stage} {name}" in text


def test_json_lines_for_log_collectors(tmp_path, monkeypatch):
    monkeypatch.setenv("DAMOC_LOG_FORMAT", "json")
    out, clock = io.StringIO(), Clock()
    story = RunStory(stream=out, clock=clock, bar=None)
    assert story.bar is None
    story.started("prune", "tiny-llama")
    clock.now += 2.5
    story.finished("prune", "tiny-llama", Outcome("ok", "kept 6 of 8 layers", reused=True))
    story.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["task_started", "task_finished"]
    assert records[1] | {"time": None} == {
        "time": None, "level": "info", "logger": "damoc.run", "event": "task_finished", "stage": "prune",
        "candidate": "tiny-llama", "status": "ok", "seconds": 2.5, "summary": "kept 6 of 8 layers", "reused": True,
        "message": records[1]["message"]}
    assert "(reused from the stage cache)" in records[1]["message"]


def test_one_progress_bar_on_a_terminal_and_lines_above_it():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    story = RunStory(total=3, stream=out)
    assert story.bar is not None
    for stage in ("validate", "prepare", "filter"):
        story.started(stage)
        story.finished(stage, None, Outcome("ok", ""))
    story.close()
    text = out.getvalue()
    assert "3/3 tasks" in text and text.count("done   ") == 3


def test_task_names_map_to_stages():
    assert stage_of("comp-prune-model") == "prune" and stage_of("finetune-model-2") == "train"
    assert stage_of("rank-candidates") == "rank" and stage_of("something-new") == "something-new"


def test_the_final_table_shows_signal_interval_ties_and_the_report(tmp_path):
    selection = {
        "mode": "damoc", "metric": "bertscore_rougel", "rank_by": "loglik", "selected": "a",
        "tied_with_winner": ["b"],
        "uncertainty": {"rows": 60, "confidence": 0.9, "samples": 1000,
                        "intervals": {"a": [-8.6, -8.4], "b": [-8.7, -8.45]}},
        "ranking": [{"candidate": "a", "rank": 1, "score": -8.5, "status": "ok"},
                    {"candidate": "b", "rank": 2, "score": -8.55, "status": "ok", "tied_with_winner": True,
                     "flags": ["unpruned (no base_path)"]},
                    {"candidate": "c", "rank": None, "score": None, "status": "failed", "error": "prune: boom"}],
        "cost": {"train_seconds": {"a": 30.0, "b": 31.0, "c": 0.0}, "total_seconds": 312.4},
    }
    lines = ranking_lines(selection, tmp_path)
    text = "\n".join(lines)
    assert "ranked by reference log-likelihood per token" in text and "loglik" in lines[2]
    assert "90% interval" in lines[2] and "-8.600 .. -8.400" in text
    assert re.search(r"1  a +-8\.5000 .* winner", text) and re.search(r"2  b .* tied .* unpruned", text)
    assert re.search(r"—  c .* failed .* prune: boom", text)
    assert "tied with the winner: b" in text and f"{tmp_path / 'report.html'}" in text
    one_row = {**selection, "tied_with_winner": [], "uncertainty": {**selection["uncertainty"], "rows": 1}}
    assert "not measurable with 1 eval row" in "\n".join(ranking_lines(one_row))
    assert "outside" not in "\n".join(ranking_lines(one_row))


def test_run_log_keeps_kfp_text_out_of_the_console_whatever_its_indentation(tmp_path):
    """The old filter waited for a line '    }' and swallowed task lines of parallel tasks (indented 12
    spaces): the story does not read kfp's text at all, so nothing of it reaches the console."""
    from kfp.local import status

    from damoc_pipelines.run_log import _LogStream, _story_task

    console, log = io.StringIO(), io.StringIO()
    stream = _LogStream(log)
    story = RunStory(stream=console)

    def fake_task(pipeline_resource_name, component_name, component_spec, executor_spec, arguments, **_):
        indent = " " * 12  # a task inside the ParallelFor, beside another one
        stream.write(f"{indent}Got executor_input:\n{indent}{{\n{indent}    \"a\": 1\n{indent}}}\n")
        stream.write("\x1b[96m'prune-model'\x1b[0m Streamed logs:\n")
        if arguments["candidate"]["name"] == "bad":
            stream.write("Traceback (most recent call last):\nRuntimeError: checkpoint not found: /x\n")
            return {}, status.Status.FAILURE
        stage = StageResult(stage="prune", stats={"num_layers_before": 4, "num_layers_after": 3})
        doc = CandidateResult(candidate=arguments["candidate"]["name"], stages={"prune": stage})
        return {"result": doc.model_dump_json()}, status.Status.SUCCESS

    run = _story_task(fake_task, story, stream)
    threads = [threading.Thread(target=run, args=("p", "comp-prune-model", None, None, {"candidate": {"name": n}}))
               for n in ("a", "b", "bad")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    story.close()
    shown = console.getvalue()
    assert shown.count("start  prune") == 3 and shown.count("done   prune") == 2
    assert "kept 3 of 4 layers" in shown and not ANSI.search(shown) and "executor_input" not in shown
    assert re.search(r"FAIL   prune bad .*RuntimeError: checkpoint not found: /x", shown)
    assert log.getvalue().count("Got executor_input") == 3


@pytest.mark.parametrize("rows,expected", [(1, "not measurable"), (10, "too few"), (60, "outside")])
def test_tie_wording_never_contradicts_the_thin_data_warning(rows, expected):
    from damoc.selection.report import ties_text

    text = ties_text({"selected": "a", "tied_with_winner": [], "uncertainty": {"rows": rows}})
    assert expected in text and ("outside" not in text or rows >= 30)


def test_a_stage_logs_json_lines_in_a_pod(monkeypatch):
    """In a task (pod) with DAMOC_LOG_FORMAT=json every stage's start and end is one JSON record."""
    from damoc import console
    from damoc.workflow.step_runner import StageSkipped, run_stage

    monkeypatch.setenv("DAMOC_LOG_FORMAT", "json")
    out = io.StringIO()
    console.setup_logging(out)

    def skipped():
        raise StageSkipped("pruning off")

    run_stage("filter", lambda: {"n_out": 3}, capture_failure=False)
    run_stage("prune", skipped, capture_failure=True)
    console.setup_logging()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["stage"], r.get("status")) for r in records] == [
        ("stage_started", "filter", None), ("stage_finished", "filter", "ok"),
        ("stage_started", "prune", None), ("stage_finished", "prune", "skipped")]
    assert records[3]["reason"] == "pruning off" and records[1]["logger"] == "damoc.stage"


def test_the_final_table_as_json_records(monkeypatch, capsys):
    from damoc import console

    monkeypatch.setenv("DAMOC_LOG_FORMAT", "json")
    console.setup_logging()
    selection = {"mode": "damoc", "metric": "m", "rank_by": "metric", "selected": "a", "tied_with_winner": [],
                 "uncertainty": {"rows": 40, "confidence": 0.9, "intervals": {"a": [0.6, 0.8]}},
                 "ranking": [{"candidate": "a", "rank": 1, "score": 0.7, "status": "ok"},
                             {"candidate": "b", "rank": None, "score": None, "status": "failed", "error": "x"}],
                 "cost": {"total_seconds": 5.0}, "warnings": []}
    console.print_ranking(selection, "/o")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["event"], r.get("candidate")) for r in records] == [("ranked", "a"), ("ranked", "b"), ("selected", None)]
    assert records[0]["interval"] == [0.6, 0.8] and records[1]["error"] == "x" and records[2]["report"] == "/o/report.html"
    monkeypatch.delenv("DAMOC_LOG_FORMAT")
    console.setup_logging()
