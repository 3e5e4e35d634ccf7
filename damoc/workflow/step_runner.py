"""One way to run a step: time it, record a skip or a failure, return a typed StageResult."""
from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from damoc.results import StageResult


def error_summary(err: BaseException, limit: int = 200) -> str:
    """'Type: first sentence' of an error, for one-line reasons and flags (the full text stays in the log)."""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text.split('. ')[0][:limit]}"


class StageSkipped(Exception):
    """Raised by a step body that does not apply (grid-search mode, stage disabled, no base checkpoint)."""

    def __init__(self, reason: str, stats: dict[str, Any] | None = None):
        super().__init__(reason)
        self.stats = stats or {}


def run_stage(stage: str, body: Callable[[], dict[str, Any] | None], *, capture_failure: bool) -> StageResult:
    """Run `body` (which returns the stage's statistics) and wrap its outcome.

    capture_failure=True (per-candidate steps): an exception becomes a failed StageResult, so one broken
    candidate is reported instead of sinking the run. False (data steps): it propagates, since nothing
    downstream can run without the data.
    """
    from damoc.console import stage_event  # a structured log line per stage (JSON with DAMOC_LOG_FORMAT=json)

    started = time.perf_counter()
    stage_event(stage, "started")
    try:
        result = StageResult(stage=stage, stats=body() or {})
    except StageSkipped as skip:
        result = StageResult(stage=stage, status="skipped", reason=str(skip), stats=skip.stats)
    except Exception as err:  # noqa: BLE001 — recorded as this candidate's failure
        if not capture_failure:
            raise
        result = StageResult(stage=stage, status="failed", reason=f"{type(err).__name__}: {err}",
                             traceback="".join(traceback.format_exception(err))[-4000:])
    result.seconds = round(time.perf_counter() - started, 3)
    stage_event(stage, "finished", result)
    return result
