"""What a run says on the console: its story, told from the tasks' own results, never from kfp's text.

One line per stage and per candidate stage as it starts and as it ends (name, candidate, seconds, the key
number: rows kept, tokens kept, layers kept, loss, score), one overall progress bar on a terminal (plain lines
otherwise), each warning once, and the final ranking table. Everything goes through the `damoc.run` logger:
plain text by default, one JSON object per line with DAMOC_LOG_FORMAT=json (for a pod's log collector).

The local runner (damoc_pipelines.run_log) feeds `RunStory` with each task's start, end and outputs; the
outputs are the tasks' typed results (StageResult / CandidateResult JSON) and their KFP Metrics, so the
story does not depend on how kfp.local formats its own output. This module does not import kfp.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

LOGGER = "damoc.run"
FORMAT_ENV = "DAMOC_LOG_FORMAT"
_HANDLER_MARK = "_damoc_console"

# kfp task (component) name -> the stage a user knows; tasks not listed are shown under their own name.
STAGES = {"validate-config": "validate", "fingerprint-data": "fingerprint", "prepare-data": "prepare", "filter-data": "filter",
          "compress-data": "compress", "prune-model": "prune", "finetune-model": "train",
          "evaluate-model": "evaluate", "rank-candidates": "rank"}
DATA_STAGES = ("validate", "fingerprint", "prepare", "filter", "compress")
CANDIDATE_STAGES = ("prune", "train", "evaluate")
_LABEL_WIDTH = 24
_MAX_ERROR = 160


# --------------------------------------------------------------------------- logging

def log_format() -> str:
    """'json' when DAMOC_LOG_FORMAT=json (pods, log collectors), else 'text'."""
    return "json" if os.environ.get(FORMAT_ENV, "").strip().lower() == "json" else "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's `event` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage()}
        doc.update(getattr(record, "event", None) or {})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, allow_nan=False) if _all_finite(doc) else json.dumps(
            _finite_only(doc), default=str)


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _finite_only(value: Any) -> Any:
    """NaN/inf are not JSON: written as strings instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING and not getattr(record, "event", None):
            text = f"{record.levelname.lower()}: {text}"
        return text


class _ConsoleHandler(logging.Handler):
    """Writes to `stream`, or to whatever sys.stdout is at the moment when none is given; above the progress
    bar (tqdm.write) when one is shown, so lines and bar never interleave."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.bar: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = self.stream if self.stream is not None else sys.stdout
            if self.bar is not None:
                from tqdm import tqdm

                tqdm.write(text, file=stream)
            else:
                stream.write(text + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 — logging never breaks a run
            self.handleError(record)


def setup_logging(stream: TextIO | None = None, fmt: str | None = None) -> logging.Logger:
    """The `damoc` loggers write to `stream` (default: the current stdout) as text or JSON lines
    (DAMOC_LOG_FORMAT); returns the run's logger.

    Idempotent: a second call replaces the handler installed by the first. The `damoc` logger does not
    propagate, so kfp.local's changes to the root logger do not reach it."""
    logger = logging.getLogger("damoc")
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    handler = _ConsoleHandler(stream)
    handler.setFormatter(JsonFormatter() if (fmt or log_format()) == "json" else _TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logging.getLogger(LOGGER)


def _console_handler() -> _ConsoleHandler | None:
    return next((h for h in logging.getLogger("damoc").handlers if getattr(h, _HANDLER_MARK, False)), None)


def info(message: str, **event: Any) -> None:
    """One console line (a JSON record with the `event` fields in JSON mode)."""
    if _console_handler() is None:
        setup_logging()
    logging.getLogger(LOGGER).info(message, extra={"event": event} if event else None)


def stage_event(stage: str, what: str, result: Any = None) -> None:
    """Inside a task: one log record as a stage starts or ends. It goes wherever the process's logging goes:
    in a KFP task the executor's stdout (a JSON line with DAMOC_LOG_FORMAT=json, for a pod's log collector;
    in a local run that is run.log); in a process that configured no logging, nowhere (INFO is dropped)."""
    if log_format() == "json" and _console_handler() is None:
        setup_logging()
    logger = logging.getLogger("damoc.stage")
    if result is None:
        logger.info(f"stage {stage} {what}", extra={"event": {"event": f"stage_{what}", "stage": stage}})
        return
    status, took = getattr(result, "status", None), getattr(result, "seconds", None)
    reason = first_line(getattr(result, "reason", None)) if status != "ok" else None
    logger.info(f"stage {stage} {what}: {status} in {seconds(took)}" + (f": {reason}" if reason else ""),
                extra={"event": {"event": f"stage_{what}", "stage": stage, "status": status, "seconds": took,
                                 "reason": reason}})


# --------------------------------------------------------------------------- numbers

def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def count(value: Any) -> str:
    number = _num(value)
    return f"{int(number):,}" if number is not None else "?"


def seconds(value: Any) -> str:
    number = _num(value)
    return f"{number:.1f} s" if number is not None else "—"  # one unit: lines compare at a glance


def percent(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return f"{number:.{digits}%}" if number is not None else "—"


def score(value: Any, digits: int = 4) -> str:
    number = _num(value)
    if number is None:
        return "—" if value is None else str(value)
    return f"{number:.{digits}f}"


def first_line(text: Any, limit: int = _MAX_ERROR) -> str:
    line = next((ln.strip() for ln in str(text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# --------------------------------------------------------------------------- what a task's outputs say

@dataclass(frozen=True)
class Outcome:
    """How a task ended: ok, skipped (stage off, or passed on a candidate's earlier failure) or failed."""

    status: str
    summary: str
    reused: bool = False


def _parse(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            doc = json.loads(value)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
    return None


def _metadata(outputs: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = outputs.get(name)
    meta = getattr(value, "metadata", None)
    return dict(meta) if isinstance(meta, Mapping) else {}


_MAX_RESULT_BYTES = 64 * 1024 * 1024


def _artifact_result(value: Any) -> str | None:
    """The typed result an output artifact holds: a JSON file (evaluate's `result`), or a model directory with
    the candidate's result so far (damoc.workflow.outcome.RESULT_FILE)."""
    from damoc.workflow.outcome import RESULT_FILE

    try:
        path = getattr(value, "path", None)
    except Exception:  # noqa: BLE001 — a remote artifact has no local path
        return None
    if not path:
        return None
    path = Path(path)
    candidate = path / RESULT_FILE if path.is_dir() else path
    try:
        if candidate.is_file() and candidate.stat().st_size < _MAX_RESULT_BYTES:
            with candidate.open(encoding="utf-8") as fh:
                head = fh.read(1)
                return head + fh.read() if head == "{" else None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _result_docs(outputs: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(a StageResult, a CandidateResult) among a task's outputs: parameters holding their JSON, or artifacts
    holding it (a JSON file, or a model directory with the candidate's result so far)."""
    stage_doc = cand_doc = None
    candidates = [v for v in outputs.values() if isinstance(v, (str, Mapping))]
    candidates += [_artifact_result(v) for k, v in outputs.items() if k in ("result", "model")]
    for value in candidates:
        doc = _parse(value)
        if doc is None:
            continue
        if "candidate" in doc and "stages" in doc:
            cand_doc = cand_doc or doc
        elif "stage" in doc and "status" in doc:
            stage_doc = stage_doc or doc
    return stage_doc, cand_doc


def _candidate_summary(stage: str, doc: Mapping[str, Any]) -> Outcome:
    stages = doc.get("stages") or {}
    own = stages.get(stage)
    if own is None:  # a candidate that failed earlier: this task only passed the failure on
        if doc.get("status") == "failed":
            return Outcome("skipped", f"not run: {first_line(doc.get('error'))}")
        return Outcome("ok", "")
    stats = own.get("stats") or {}
    reused = bool(stats.get("reused"))
    if own.get("status") == "failed":
        return Outcome("failed", first_line(own.get("reason")), reused)
    if stage == "prune":
        before, after = stats.get("num_layers_before"), stats.get("num_layers_after")
        layers = f"kept {count(after)} of {count(before)} layers" if after is not None else ""
        if own.get("status") == "skipped":
            return Outcome("skipped", "; ".join(x for x in (first_line(own.get("reason"), 90), layers) if x), reused)
        return Outcome("ok", layers, reused)
    if own.get("status") == "skipped":
        return Outcome("skipped", first_line(own.get("reason")), reused)
    if stage == "train":
        text = f"loss {score(stats.get('train_loss'))}"
        if stats.get("samples") is not None:
            text += f" on {count(stats.get('samples'))} rows"
        return Outcome("ok", text, reused)
    if stage == "evaluate":
        parts = []
        if stats.get("loglik") is not None:
            parts.append(f"loglik {score(stats.get('loglik'))}")
        if stats.get("score") is not None:
            parts.append(f"metric {score(stats.get('score'))}")
        if doc.get("status") == "failed":
            return Outcome("failed", first_line(doc.get("error")), reused)
        flags = doc.get("flags") or []
        if flags:  # e.g. degenerate answers, training diverged: worth seeing as it happens
            parts.append(f"flagged: {first_line(flags[0], 80)}" + (f" (+{len(flags) - 1})" if len(flags) > 1 else ""))
        return Outcome("ok", ", ".join(parts), reused)
    return Outcome("ok", "", reused)


def describe(stage: str, outputs: Mapping[str, Any], arguments: Mapping[str, Any] | None = None) -> Outcome:
    """The outcome of a finished task from its outputs (and, for `validate`, its arguments)."""
    arguments = arguments or {}
    if stage == "validate":
        cands = arguments.get("candidates")
        n = len(cands) if isinstance(cands, (list, tuple)) else None
        mode = arguments.get("mode")
        return Outcome("ok", ", ".join(x for x in (f"{n} candidates" if n is not None else "",
                                                   f"mode {mode}" if mode else "") if x))
    if stage == "fingerprint":
        return Outcome("ok", "")
    if stage == "rank":
        selected = outputs.get("selected")
        return Outcome("ok", f"selected {selected}" if selected else "no candidate could be ranked")
    stage_doc, cand_doc = _result_docs(outputs)
    if cand_doc is not None:
        return _candidate_summary(stage, cand_doc)
    if stage_doc is not None:
        stats = stage_doc.get("stats") or {}
        reused = bool(stats.get("reused"))
        if stage_doc.get("status") == "skipped":
            return Outcome("skipped", first_line(stage_doc.get("reason")), reused)
        if stage_doc.get("status") == "failed":
            return Outcome("failed", first_line(stage_doc.get("reason")), reused)
        from damoc.selection.report import stage_figures

        return Outcome("ok", stage_figures(stage, stats), reused)
    # No typed result among the outputs: the task's KFP Metrics still carry the key figures.
    metrics = _metadata(outputs, "metrics")
    if stage in ("filter", "compress", "prepare") and metrics.get("kept_rows") is not None:
        return Outcome("ok", f"kept {count(metrics['kept_rows'])} rows")
    if metrics.get("layers_kept") is not None and stage == "prune":
        return Outcome("ok", f"kept {count(metrics['layers_kept'])} of {count(metrics.get('layers_total'))} layers")
    if metrics.get("score") is not None:
        return Outcome("ok", f"score {score(metrics['score'])}")
    return Outcome("ok", "")


# --------------------------------------------------------------------------- the story

def stage_of(task_name: str) -> str:
    """The user's name of a kfp task ('comp-prune-model', 'prune-model-2' -> 'prune')."""
    name = task_name.removeprefix("comp-")
    for task, stage in STAGES.items():
        if name == task or name.startswith(task + "-"):
            return stage
    return name


def label(stage: str, candidate: str | None) -> str:
    return f"{stage} {candidate}" if candidate else stage


class RunStory:
    """The console lines of one run, fed by the runner: `started` / `finished` per task, thread-safe.

    total: the number of tasks, when known (the progress bar's length; `expect` can set it later).
    bar: show a tqdm bar; default: only in text mode on a terminal."""

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None, bar: bool | None = None,
                 log_path: Path | None = None, clock: Any = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.logger = setup_logging(self.stream)
        self.handler = _console_handler()
        self.clock, self.t0 = clock, clock()
        self.total, self.done = total, 0
        self.log_path = log_path
        self.started_at: dict[tuple[str, str | None], float] = {}
        self.outcomes: dict[tuple[str, str | None], Outcome] = {}
        self._lock = threading.Lock()
        isatty = getattr(self.stream, "isatty", lambda: False)
        want_bar = (log_format() == "text" and isatty()) if bar is None else bar
        self.bar = None
        if want_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.stream, desc="DaMoC", unit="task", leave=False,
                            dynamic_ncols=True, bar_format="{desc} {n_fmt}/{total_fmt} tasks |{bar}| {elapsed}")
            if self.handler is not None:
                self.handler.bar = self.bar

    def expect(self, total: int) -> None:
        with self._lock:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
                self.bar.refresh()

    def _clock_text(self) -> str:
        elapsed = int(self.clock() - self.t0)
        return f"[{elapsed // 60:>3}:{elapsed % 60:02d}]"

    def _emit(self, text: str, level: int = logging.INFO, **event: Any) -> None:
        self.logger.log(level, text, extra={"event": event})

    def started(self, stage: str, candidate: str | None = None) -> None:
        with self._lock:
            self.started_at[(stage, candidate)] = self.clock()
            self._emit(f"{self._clock_text()} start  {label(stage, candidate)}", event="task_started",
                       stage=stage, candidate=candidate)

    def finished(self, stage: str, candidate: str | None, outcome: Outcome, task_seconds: float | None = None) -> None:
        with self._lock:
            begun = self.started_at.get((stage, candidate))
            took = task_seconds if task_seconds is not None else (self.clock() - begun if begun is not None else None)
            self.outcomes[(stage, candidate)] = outcome
            verb = {"ok": "done", "skipped": "skip", "failed": "FAIL"}.get(outcome.status, outcome.status)
            summary = outcome.summary + (" (reused from the stage cache)" if outcome.reused else "")
            text = (f"{self._clock_text()} {verb:<6} {label(stage, candidate):<{_LABEL_WIDTH}} "
                    f"{seconds(took):>8}" + (f"  {summary}" if summary else ""))
            level = logging.WARNING if outcome.status == "failed" else logging.INFO
            self._emit(text.rstrip(), level, event="task_finished", stage=stage, candidate=candidate,
                       status=outcome.status, seconds=round(took, 3) if took is not None else None,
                       summary=outcome.summary, reused=outcome.reused)
            self.done += 1
            if self.bar is not None:
                if self.bar.total is not None and self.done > self.bar.total:
                    self.bar.total = self.done + len(self.started_at) - len(self.outcomes)
                self.bar.update(1)
                self.bar.refresh()  # one update per task: never throttled away

    def task_failed(self, stage: str, candidate: str | None, tail: Sequence[str]) -> None:
        """A task process that exited non-zero: its last lines, and where the whole log is."""
        reason = "; ".join(first_line(t, 200) for t in tail if t.strip())[-300:] or "the task process failed"
        where = f" (full log: {self.log_path})" if self.log_path else ""
        self.finished(stage, candidate, Outcome("failed", reason + where))

    def close(self) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            setup_logging()  # later lines go to whatever stdout is then


def expected_tasks(n_candidates: int, data_tasks: int = len(DATA_STAGES)) -> int:
    """The progress bar's length: the data tasks (validate, fingerprint, prepare, filter, compress), 3 per
    candidate, rank. A pipeline with more tasks just grows the bar."""
    return data_tasks + len(CANDIDATE_STAGES) * n_candidates + 1


# --------------------------------------------------------------------------- the final table

def ranking_lines(selection: Mapping[str, Any], out: Path | str | None = None,
                  reused: Sequence[str] = (), stages_total: int | None = None) -> list[str]:
    """The ranking as a plain-text table: the ranking signal, its interval, ties, flags, seconds and (given
    `out`) where the reports are. The selection's warnings are the caller's to print (once)."""
    from damoc.selection.report import signal_name, ties_text

    unc = selection.get("uncertainty") or {}
    intervals = unc.get("intervals") or {}
    tied = set(selection.get("tied_with_winner") or [])
    train_s = (selection.get("cost") or {}).get("train_seconds") or {}
    signal = signal_name(selection)
    conf = _num(unc.get("confidence"))
    iv_head = f"{conf:.0%} interval" if conf is not None else "interval"
    rows = selection.get("ranking") or []
    width = max([len("candidate")] + [len(str(r.get("candidate"))) for r in rows])
    by = "reference log-likelihood per token" if signal == "loglik" else f"the metric {signal}"
    lines = ["", f"DaMoC ranking (mode {selection.get('mode')}, ranked by {by}; higher is better):",
             f"  {'rank':>4}  {'candidate':<{width}}  {signal:>10}  {iv_head:>19}  {'vs winner':<9}  "
             f"{'train':>8}  notes"]
    for r in rows:
        name = str(r.get("candidate"))
        iv = intervals.get(name)
        iv_text = f"{score(iv[0], 3)} .. {score(iv[1], 3)}" if iv else "—"
        if r.get("status") != "ok":
            vs, note = "failed", first_line(r.get("error"), 100)
        else:
            vs = "winner" if name == selection.get("selected") else ("tied" if name in tied else "behind")
            flags = r.get("flags") or []
            note = first_line(flags[0], 70) + (f" (+{len(flags) - 1} more)" if len(flags) > 1 else "") if flags else ""
        rank = r.get("rank") if r.get("rank") is not None else "—"
        lines.append(f"  {rank!s:>4}  {name:<{width}}  {score(r.get('score')):>10}  {iv_text:>19}  {vs:<9}  "
                     f"{seconds(train_s.get(name)):>8}  {note}".rstrip())
    selected = selection.get("selected")
    if selected:
        lines.append(f"  selected: {selected}; tied with the winner: {ties_text(selection)}")
    else:
        lines.append("  selected: none — every candidate failed")
    total_s = _num((selection.get("cost") or {}).get("total_seconds"))
    total = f"  total {seconds(total_s)}" + (f" ({total_s / 60:.1f} min)" if total_s and total_s >= 120 else "")
    if reused:
        total += f"; {len(reused)}{f' of {stages_total}' if stages_total else ''} stages reused from the stage " \
                 "cache (--no-resume reruns them)"
    lines.append(total)
    if out is not None:
        lines.append(f"  report: {Path(out) / 'report.html'} (also report.md; data: selection.json; log: run.log)")
    return lines


def print_ranking(selection: Mapping[str, Any], out: Path | str | None = None, reused: Sequence[str] = (),
                  stages_total: int | None = None) -> None:
    """The final table on the console (text), or one `ranked` record per candidate plus a `selected` one (JSON)."""
    if log_format() == "json":
        from damoc.selection.report import signal_name

        unc = selection.get("uncertainty") or {}
        for r in selection.get("ranking") or []:
            info(f"ranked {r.get('candidate')}", event="ranked", candidate=r.get("candidate"), rank=r.get("rank"),
                 status=r.get("status"), score=r.get("score"), signal=signal_name(selection),
                 interval=(unc.get("intervals") or {}).get(r.get("candidate")),
                 tied_with_winner=bool(r.get("tied_with_winner")), error=r.get("error"), flags=r.get("flags"))
        info(f"selected {selection.get('selected')}", event="selected", selected=selection.get("selected"),
             tied_with_winner=selection.get("tied_with_winner"), warnings=selection.get("warnings"),
             total_seconds=(selection.get("cost") or {}).get("total_seconds"), reused=list(reused),
             report=str(Path(out) / "report.html") if out is not None else None)
        return
    for line in ranking_lines(selection, out, reused, stages_total):
        info(line)
