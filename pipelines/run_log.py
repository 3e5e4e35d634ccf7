"""The console output of a local run: kfp.local's bookkeeping kept out of sight, every line kept in a file.

kfp.local prints, per task, the whole executor input as indented JSON (hundreds of lines for one task) and the
executor's loading chatter, and warns once per task that resource settings do nothing locally. On the console
a run shows the task starts, the steps' own output and progress, and errors; the complete, unfiltered stream
goes to OUT/runs/RUN_ID/run.log. DAMOC_VERBOSE=1 shows everything on the console as well.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, TextIO

# Lines of kfp's executor (inside a task) that say nothing a user acts on.
_CHATTER = ("Looking for component `", "Loading KFP component ", "Wrote executor output file",
            "Did not write output file")
_JSON_START = "Got executor_input:"
_JSON_END = "    }"  # the executor input is json.dumps(indent=4), streamed with a 4-space indent


class _FilteredStdout(io.TextIOBase):
    """Write every line to `log`; pass a line on to `console` unless it is kfp.local's bookkeeping."""

    def __init__(self, console: TextIO, log: TextIO, passthrough: bool = False) -> None:
        self.console, self.log, self.passthrough = console, log, passthrough
        self._pending = ""
        self._in_json = False
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if self.keep(line):
                self.console.write(line + "\n")
            else:
                self.dropped += 1
        return len(text)

    def keep(self, line: str) -> bool:
        if self.passthrough:
            return True
        if self._in_json:
            self._in_json = line.rstrip() != _JSON_END
            return False
        if _JSON_START in line:
            self._in_json = True
            return False
        return not any(marker in line for marker in _CHATTER)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def close_pending(self) -> None:
        if self._pending and self.keep(self._pending):
            self.console.write(self._pending)
        self._pending = ""


@contextlib.contextmanager
def quiet_kfp_output(log_path: Path) -> Iterator[None]:
    """Within the block: stdout filtered (all of it also in `log_path`), kfp.local's per-task warnings off."""
    verbose = os.environ.get("DAMOC_VERBOSE", "") not in ("", "0")
    with open(log_path, "a", encoding="utf-8") as log, warnings.catch_warnings():
        if not verbose:
            warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current local "
                                    r"runner", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"You may be attemp\w* to run a task that uses custom or "
                                    r"non-Python base image", category=RuntimeWarning)
        console = sys.stdout
        filtered = _FilteredStdout(console, log, passthrough=verbose)
        # kfp.local replaces the root logger's handlers and builtins.print while it runs and, when a task fails,
        # can leave its handler (bound to the stdout of that moment) installed: restore both afterwards, so a
        # later log record never goes to a closed stream.
        root = logging.getLogger()
        handlers, level, print_ = root.handlers[:], root.level, builtins.print
        sys.stdout = filtered  # type: ignore[assignment]
        try:
            yield
        finally:
            filtered.close_pending()
            sys.stdout = console
            root.handlers[:] = handlers
            root.setLevel(level)
            builtins.print = print_
