"""Run the very same pipeline function on this machine through kfp.local (no cluster, no GPU).

Layout of OUT (every run in its own directory; the results switch to a new run in one atomic rename):

    OUT/runs/RUN_ID/{selection.json, report.md, pipeline_root/, run.log}   one per run (run.log: the full
                                                                            console stream, damoc_pipelines.run_log)
    OUT/current -> runs/RUN_ID                                      the last run that succeeded
    OUT/selection.json -> current/selection.json                    (and report.md, pipeline_root)

A run writes only into its own RUN_ID directory; `current` is replaced (a symlink rename) only when it
succeeded — it ranked at least one candidate — so selection.json and report.md always come from the same
complete run, and an interrupted or failed run (every candidate failed included) leaves the previous results
and artifacts intact: the failed run stays beside the good one (RunFailed names it) until the next run starts;
the previous successful run is removed once a newer one succeeded.
One run per OUT at a time: an advisory lock (fcntl) on OUT/.damoc.lock, holding the holder's pid; a second run
stops at once (OutputLocked); a lock left by a dead process is free again and taken over. OUT is either new,
empty, or a folder this layout made: anything else in it (the user's data, their own report.md) is refused
before anything is written (ForeignOutput). Temporary files of the task processes go to OUT/runs/RUN_ID/tmp
(TMPDIR), removed when the run ends: kfp.local's per-task temporary folders do not pile up in /tmp.
SIGINT/SIGTERM stop every task process (each task runs in its own process group) before the run stops.
Task processes inherit this process's environment: with DAMOC_RESUME=1 (set by `damoc run` unless
--no-resume; damoc.workflow.stage_cache.resume_env) each step reuses its stored outputs when its inputs are
identical, so a rerun after an interruption or a failure resumes every stage that finished.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
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
LOCK_NAME = ".damoc.lock"
# what this layout puts into OUT (plus hidden link/park leftovers of _symlink_over, named .NAME.link-/.old-)
_OWN_NAMES = {"runs", "current", "workspace", LOCK_NAME, *RESULT_NAMES}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KILL_GRACE_S = 5.0


class OutputLocked(Exception):
    """Another run holds OUT's lock (bad input: a second run into the same --out)."""


class ForeignOutput(Exception):
    """OUT holds files this layout did not create (bad input: --out names someone's folder)."""


class TaskError(RuntimeError):
    """An internal failure during the run (a task failed, or could not be started): exit 1, not bad input."""

    def __init__(self, task: str, log: Path, cause: BaseException) -> None:
        text = _ANSI.sub("", str(cause)).strip().splitlines()
        summary = f"{type(cause).__name__}: {text[0][:300]}" if text else type(cause).__name__
        super().__init__(f"task '{task}' failed ({summary}); its log: {log}")
        self.task, self.log = task, log


_TASK_NAME = re.compile(r"Task '([^']+)'")


def _task_of(err: BaseException) -> str:
    """The failed task: named in kfp.local's error, else the last task process started (e.g. E2BIG at exec)."""
    found = _TASK_NAME.search(_ANSI.sub("", str(err)))
    return found.group(1) if found else (_last_task or "?")


class RunFailed(RuntimeError):
    """The run finished but ranked no candidate: it was not published; `run_dir` holds its results."""

    def __init__(self, message: str, run_dir: Path, selection: dict[str, Any]) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.selection = selection


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a local run; the task processes were stopped first."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------- task processes

_children: set[subprocess.Popen] = set()
_children_lock = threading.RLock()  # re-entrant: the signal handler may run inside a start
_refusing = threading.Event()  # set once a run is stopping: task processes are no longer started


_task_tmp: Path | None = None  # TMPDIR of the task processes of the run in progress
_last_task: str | None = None  # the component function of the task process started last (for error lines)


def _function_of(command: Any) -> str | None:
    args = list(command) if isinstance(command, (list, tuple)) else []
    for flag, value in zip(args, args[1:]):
        if flag == "--function_to_execute":
            return str(value)
    return None


class _TrackedPopen(subprocess.Popen):
    """kfp.local's task process, in its own process group (its own children are stopped with it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _last_task
        kwargs.setdefault("start_new_session", True)
        if _task_tmp is not None:  # kfp's lightweight components unpack into a `mktemp -d` folder per task
            kwargs["env"] = {**(kwargs.get("env") or os.environ), "TMPDIR": str(_task_tmp)}
        with _children_lock:  # started and tracked at once: a stop sees it, or it sees the stop
            if _refusing.is_set():
                raise RuntimeError("the run was stopped: no further task is started")
            _last_task = _function_of(args[0] if args else kwargs.get("args")) or _last_task
            super().__init__(*args, **kwargs)
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

    _refusing.clear()
    subprocess_task_handler.subprocess = _SubprocessShim()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return  # a second Ctrl-C while stopping: keep stopping cleanly
        stopping.set()
        _refusing.set()  # first: kfp.local's ParallelFor threads must not start the next task meanwhile
        stop_children()
        raise RunInterrupted(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    except BaseException:
        _refusing.set()
        stop_children()  # whatever stopped the run, no task process outlives it
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not _refusing.is_set():
            subprocess_task_handler.subprocess = subprocess
        # else the shim stays, refusing: kfp.local's loop threads outlive the main thread's exception and would
        # go on starting the candidates' next tasks (the interpreter waits for them before it exits)


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


def _own_entry(path: Path) -> bool:
    name = path.name
    if name.startswith(".") and (".link-" in name or ".old-" in name):
        return True  # a symlink switch interrupted half-way
    if name not in _OWN_NAMES:
        return False
    if name in RESULT_NAMES or name == "current":
        return path.is_symlink()  # ours are links into current/ (a real report.md is the user's)
    return True


def check_output_folder(out: Path) -> None:
    """Refuse an OUT holding anything this layout did not create (before anything is written into it)."""
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _own_entry(p))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ForeignOutput(f"--out {out}: holds files a damoc run did not create ({shown}); nothing was written. "
                            "Give a new or empty folder, or one an earlier `damoc run` wrote")


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """One run per OUT: an exclusive advisory lock on OUT/.damoc.lock for the whole run.

    flock is released by the kernel when its holder dies, so a lock file left by a killed run is taken over."""
    lock = out / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputLocked(f"--out {out}: another damoc run (pid {_holder(lock)}) is writing to it; wait for "
                               f"it to finish or give another --out (lock: {lock})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a run taking it now)


def _remove_leftovers(out: Path) -> None:
    """Run directories of failed or interrupted runs (kept for inspection until now); never the current one."""
    current = _current_run(out)
    runs = out / "runs"
    if runs.is_dir():
        for run in runs.iterdir():
            if run.resolve() != current:
                shutil.rmtree(run, ignore_errors=True)


def _ranked(selection: dict[str, Any]) -> bool:
    return any(row.get("status") == "ok" and row.get("rank") is not None
               for row in selection.get("ranking") or []) and selection.get("selected") is not None


def run_local(cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Execute the pipeline with kfp.local's SubprocessRunner; returns the selection document.

    Everything this run writes goes to OUT/runs/RUN_ID; OUT/selection.json, report.md and pipeline_root
    switch to it only when the run ranked a candidate (see the module docstring); otherwise RunFailed.
    """
    from kfp import local

    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    global _task_tmp
    out = Path(out_dir).resolve()
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        check_output_folder(out)  # again under the lock: another run may have been mid-write
        _remove_leftovers(out)
        run_dir = out / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        (run_dir / "tmp").mkdir(parents=True)
        # kfp.local refuses a workspace path containing "kfp-workspace" and deletes it after the run.
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "pipeline_root"),
                   workspace_root=str(out / "workspace"), raise_on_error=True)
        from damoc_pipelines.run_log import quiet_kfp_output

        _task_tmp = run_dir / "tmp"
        try:
            with guard_task_processes(), quiet_kfp_output(run_dir / "run.log"):
                damoc_pipeline(**to_pipeline_arguments(cfg), output_uri=str(run_dir))
        except Exception as err:  # noqa: BLE001 — whatever broke inside the run is the run's failure (exit 1)
            raise TaskError(_task_of(err), run_dir / "run.log", err) from err
        finally:
            _task_tmp = None
            shutil.rmtree(run_dir / "tmp", ignore_errors=True)
        if not (run_dir / "selection.json").is_file():  # the pipeline ended without its rank task's output
            raise TaskError("rank-candidates", run_dir / "run.log", FileNotFoundError(
                f"{run_dir / 'selection.json'} was not written"))
        _clean_results(run_dir)
        selection = json.loads((run_dir / "selection.json").read_text(encoding="utf-8"))
        if not _ranked(selection):
            kept = _current_run(out)
            why = ("every one failed or diverged" if any(r.get("diverged") for r in selection.get("ranking") or [])
                   else "every one failed")
            raise RunFailed(f"no candidate could be selected: {why}; this run was not published "
                            f"(its report: {run_dir / 'report.md'})"
                            + (f"; {out / 'current'} still holds the last good run ({kept.name})" if kept else ""),
                            run_dir, selection)
        _promote(out, run_dir)
        return selection
