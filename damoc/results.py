"""Typed stage results: what every step reports, shared by the steps, the ranking and the report.

A `StageResult` is one stage's outcome (ran, skipped or failed; seconds; its own statistics). A
`CandidateResult` is one candidate's way through prune -> train -> evaluate, carried from step to step inside
the model artifacts and fanned into the rank step. selection.json and report.md are built from these.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StageStatus = Literal["ok", "skipped", "failed"]
CandidateStatus = Literal["ok", "failed"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)


class StageResult(_Result):
    stage: str = Field(description="prepare, filter, compress, prune, train or evaluate")
    status: StageStatus = "ok"
    reason: str | None = Field(None, description="why it was skipped, or the error when it failed")
    seconds: float = Field(0.0, description="wall time of the step")
    stats: dict[str, Any] = Field(default_factory=dict, description="the stage's own figures")
    traceback: str | None = Field(None, description="tail of the traceback of a failure")


class CandidateResult(_Result):
    candidate: str
    status: CandidateStatus = "ok"
    score: float | None = None
    error: str | None = Field(None, description="'<stage>: <error>' of the first failed stage")
    stages: dict[str, StageResult] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list, description="caveats on the score (e.g. trained unpruned "
                             "against pruned rivals): shown beside the ranking, never a reason to drop it")

    def record(self, result: StageResult) -> "CandidateResult":
        self.stages[result.stage] = result
        if result.status == "failed" and self.status == "ok":
            self.status, self.error = "failed", f"{result.stage}: {result.reason}"
        return self

    def seconds(self, stage: str) -> float:
        result = self.stages.get(stage)
        return result.seconds if result else 0.0

    def diverged(self) -> bool:
        """Its training diverged: a non-finite loss, or a final loss far above the untrained model's (the train
        stage's stats say so, damoc.training.finetune.diverged)."""
        train = self.stages.get("train")
        return train is not None and (train.stats.get("loss_is_finite") is False
                                      or train.stats.get("diverged") is True)

    def degenerate(self) -> str | None:
        """Why its answers are degenerate (mostly empty or identical: damoc.evaluation.degenerate), else None."""
        ev = self.stages.get("evaluate")
        return ev.stats.get("degenerate") or None if ev is not None else None

    def layers(self) -> str | None:
        """'kept/total' layers when pruning ran, else None."""
        prune = self.stages.get("prune")
        if prune is None or prune.stats.get("num_layers_after") is None:
            return None
        return f"{prune.stats['num_layers_after']}/{prune.stats['num_layers_before']}"
