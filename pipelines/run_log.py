"""The console of a local run: the run's story on the console, every line kfp.local prints in run.log.

kfp.local prints, per task, the whole executor input as indented JSON, its loading chatter, each output
artifact, and every line the task process writes (progress bars included), indented by however many tasks
run in parallel. None of that reaches the console: the whole stream (stdout and stderr, Python warnings
included) goes to OUT/runs/RUN_ID/run.log. The console shows the story instead, told by
damoc.console.RunStory from structured events: kfp.local's own call that runs one task
(task_dispatcher.run_single_task_implementation) is wrapped, so each task's start, end, status, arguments
(the candidate) and outputs (its typed result) are seen as values, not parsed from text.

A task whose process fails is shown with the last lines it printed (a task runs on its own thread, which is
how its lines are told apart from its neighbours') and the path of run.log. DAMOC_VERBOSE=1 also copies the
whole stream to the console.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import io
import logging
import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from damoc.console import RunStory, describe, expected_tasks, stage_of

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAIL_LINES = 40
# kfp's own lines in a task's stream: never the reason a task failed.
_KFP_LINES = re.compile(r"^(\d\d:\d\d:\d\d\.\d+ - |-{10,}$|Looking for component|Loading KFP component|"
                        r"Got executor_input|Wrote executor output|Did not write output file)")


class _LogStream(io.TextIOBase):
    """Writes everything to `log` (and to `mirror` when verbose); keeps each thread's last lines."""

    def __init__(self, log: TextIO, mirror: TextIO | None = None) -> None:
        self.log, self.mirror = log, mirror
        self._lock = threading.Lock()
        self._tails: dict[int, collections.deque[str]] = {}
        self._pending: dict[int, str] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        ident = threading.get_ident()
        with self._lock:
            self.log.write(text)
            if self.mirror is not None:
                self.mirror.write(text)
            pending = self._pending.get(ident, "") + text
            *lines, self._pending[ident] = pending.split("\n")
            tail = self._tails.setdefault(ident, collections.deque(maxlen=_TAIL_LINES))
            tail.extend(line for line in (_ANSI.sub("", ln).strip() for ln in lines) if line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            if self.mirror is not None:
                self.mirror.flush()

    def reset_tail(self) -> None:
        with self._lock:
            self._tails.pop(threading.get_ident(), None)
            self._pending.pop(threading.get_ident(), None)

    def error_tail(self, limit: int = 3) -> list[str]:
        """The last lines this thread printed that are not kfp's own (e.g. the task's exception)."""
        with self._lock:
            tail = list(self._tails.get(threading.get_ident(), ()))
        return [line for line in tail if not _KFP_LINES.match(line)][-limit:]


def _candidate(arguments: dict[str, Any]) -> str | None:
    cand = arguments.get("candidate")
    return str(cand.get("name")) if isinstance(cand, dict) and cand.get("name") else None


def _story_task(run_task: Callable[..., Any], story: RunStory, stream: _LogStream) -> Callable[..., Any]:
    """kfp.local's run-one-task function, telling `story` when a task starts and how it ended."""
    from kfp.local import status

    def run(*args: Any, **kwargs: Any) -> Any:
        component = str(kwargs.get("component_name") or (args[1] if len(args) > 1 else "task"))
        arguments = kwargs.get("arguments") or (args[4] if len(args) > 4 else {}) or {}
        stage, candidate = stage_of(component), _candidate(arguments)
        if stage == "validate" and isinstance(arguments.get("candidates"), list):
            story.expect(expected_tasks(len(arguments["candidates"])))
        story.started(stage, candidate)
        stream.reset_tail()
        try:
            outputs, task_status = run_task(*args, **kwargs)
        except Exception:
            story.task_failed(stage, candidate, stream.error_tail())
            raise
        if task_status == status.Status.SUCCESS:
            story.finished(stage, candidate, describe(stage, outputs or {}, arguments))
        else:
            story.task_failed(stage, candidate, stream.error_tail())
        return outputs, task_status

    return run


@contextlib.contextmanager
def quiet_kfp_output(log_path: Path, story: RunStory | None = None) -> Iterator[RunStory]:
    """Within the block: stdout and stderr (all of it) go to `log_path`; the console shows `story`'s lines,
    fed by every task kfp.local runs. Yields the story (one is made when none is given)."""
    from kfp.local import task_dispatcher

    verbose = os.environ.get("DAMOC_VERBOSE", "") not in ("", "0")
    console = sys.stdout
    story = story or RunStory(stream=console, log_path=log_path)
    with open(log_path, "a", encoding="utf-8") as log, warnings.catch_warnings():
        stream = _LogStream(log, mirror=console if verbose else None)
        # kfp.local replaces the root logger's handlers and builtins.print while it runs and, when a task fails,
        # can leave its handler (bound to the stream of that moment) installed: restore both afterwards, so a
        # later log record never goes to a closed stream.
        root = logging.getLogger()
        handlers, level, print_ = root.handlers[:], root.level, builtins.print
        original_task = task_dispatcher.run_single_task_implementation
        task_dispatcher.run_single_task_implementation = _story_task(original_task, story, stream)
        stderr = sys.stderr
        sys.stdout, sys.stderr = stream, stream  # type: ignore[assignment]
        warnings.simplefilter("default")  # each distinct warning once, written (via stderr) to run.log
        try:
            yield story
        finally:
            sys.stdout, sys.stderr = console, stderr
            task_dispatcher.run_single_task_implementation = original_task
            root.handlers[:] = handlers
            root.setLevel(level)
            builtins.print = print_
            story.close()
