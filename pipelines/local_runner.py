"""Run the very same pipeline function on this machine through kfp.local (no cluster, no GPU).

Layout of OUT (every run in its own directory; the results switch to a new run in one atomic rename):

    OUT/runs/RUN_ID/{selection.json, report.md, pipeline_root/, run.log}   one per run (run.log: the full
                                                                            console stream, damoc_pipelines.run_log)
    OUT/current -> runs/RUN_ID                                      the last run that succeeded
    OUT/selection.json -> current/selection.json                    (and report.md, pipeline_root)

A run writes only into its own RUN_ID directory; `current` is replaced (a symlink rename) only when it
succeeded, so selection.json and report.md always come from the same complete run, and an interrupted or
failed run leaves the previous results and artifacts intact. Leftovers of failed runs are kept for
inspection until the next run starts; the previous successful run is removed once a newer one succeeded.
SIGINT/SIGTERM stop every task process (each task runs in its own process group) before the run stops.
Task processes inherit this process's environment: with DAMOC_RESUME=1 (set by `damoc run` unless
--no-resume; damoc.workflow.stage_cache.resume_env) each step reuses its stored outputs when its inputs are
identical, so a rerun after an interruption or a failure resumes every stage that finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from damoc.config import RunConfig
from damoc.config_params import to_pipeline_arguments

RESULT_NAMES = ("selection.json", "report.md", "report.html", "pipeline_root", "run.log")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KILL_GRACE_S = 5.0


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a local run; the task processes were stopped first."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------- task processes

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


class _TrackedPopen(subprocess.Popen):
    """kfp.local's task process, in its own process group (its own children are stopped with it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)
        with _children_lock:
            _children.add(self)

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        with _children_lock:
            _children.discard(self)
        return code


class _SubprocessShim:
    """The `subprocess` module as kfp.local's task handler sees it, with Popen tracked."""

    Popen = _TrackedPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def stop_children(grace_s: float = _KILL_GRACE_S) -> list[int]:
    """SIGTERM every live task process group, SIGKILL what is left after `grace_s`; returns the pids."""
    with _children_lock:
        live = [p for p in _children if p.poll() is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return [p.pid for p in live]


@contextlib.contextmanager
def guard_task_processes() -> Iterator[None]:
    """Track kfp.local's task processes; on SIGINT/SIGTERM stop them all, then raise RunInterrupted."""
    from kfp.local import subprocess_task_handler

    original_module = subprocess_task_handler.subprocess
    subprocess_task_handler.subprocess = _SubprocessShim()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return  # a second Ctrl-C while stopping: keep stopping cleanly
        stopping.set()
        stop_children()
        raise RunInterrupted(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    except BaseException:
        stop_children()  # whatever stopped the run, no task process outlives it
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        subprocess_task_handler.subprocess = original_module


# --------------------------------------------------------------------------- results

def _strip_ansi(value: Any) -> Any:
    if isinstance(value, str):
        return _ANSI.sub("", value)
    if isinstance(value, list):
        return [_strip_ansi(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_ansi(v) for k, v in value.items()}
    return value


def _clean_results(run_dir: Path) -> None:
    """Error texts captured from tasks may carry terminal colour codes; files get plain text."""
    from damoc import atomic

    sel = run_dir / "selection.json"
    atomic.write_text(sel, json.dumps(_strip_ansi(json.loads(sel.read_text(encoding="utf-8"))), indent=2))
    report = run_dir / "report.md"
    if report.is_file():
        atomic.write_text(report, _ANSI.sub("", report.read_text(encoding="utf-8")))


def _symlink_over(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` in one rename (a directory left by an older layout is moved away)."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.parent / f".{link.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp)
    parked = None
    if link.is_dir() and not link.is_symlink():
        parked = link.parent / f".{link.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(link, parked)
    os.replace(tmp, link)
    if parked is not None:
        shutil.rmtree(parked, ignore_errors=True)


def _current_run(out: Path) -> Path | None:
    current = out / "current"
    return current.resolve() if current.is_symlink() and current.exists() else None


def _promote(out: Path, run_dir: Path) -> None:
    """Switch OUT's results to run_dir: one atomic rename of `current`; then remove the run it replaced."""
    previous = _current_run(out)
    _symlink_over(out / "current", f"runs/{run_dir.name}")
    for name in RESULT_NAMES:  # static links (created once); a no-op from the second run on
        _symlink_over(out / name, f"current/{name}")
    if previous is not None and previous != run_dir.resolve():
        shutil.rmtree(previous, ignore_errors=True)


def _remove_leftovers(out: Path) -> None:
    """Run directories of failed or interrupted runs (kept for inspection until now); never the current one."""
    current = _current_run(out)
    runs = out / "runs"
    if runs.is_dir():
        for run in runs.iterdir():
            if run.resolve() != current:
                shutil.rmtree(run, ignore_errors=True)


def run_local(cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Execute the pipeline with kfp.local's SubprocessRunner; returns the selection document.

    Everything this run writes goes to OUT/runs/RUN_ID; OUT/selection.json, report.md and pipeline_root
    switch to it only when the run succeeded (see the module docstring).
    """
    from kfp import local

    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    run_dir = out / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    # kfp.local refuses a workspace path containing "kfp-workspace" and deletes it after the run.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "pipeline_root"),
               workspace_root=str(out / "workspace"), raise_on_error=True)
    from damoc_pipelines.run_log import quiet_kfp_output

    with guard_task_processes(), quiet_kfp_output(run_dir / "run.log"):
        damoc_pipeline(**to_pipeline_arguments(cfg), output_uri=str(run_dir))
    _clean_results(run_dir)
    _promote(out, run_dir)
    return json.loads((out / "selection.json").read_text(encoding="utf-8"))
