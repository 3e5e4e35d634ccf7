"""Break a tie instead of reporting it: race the tied set only (uncertainty-driven racing, in the spirit of
successive halving).

When the paired bootstrap leaves rivals tied with the winner, only the winner and those rivals go on. Each round
every survivor gets the same extra budget — `steps_per_round` more optimizer steps on its proxy and/or
`rows_per_round` more eval rows scored — through the caller's `advance(name, round)`, which returns the survivor's
per-row values of the ranking signal on the (same, possibly longer) eval rows. After each round:
  - the leader is the survivor with the best mean; a rival whose gap interval to it (paired bootstrap at
    `confidence`) no longer reaches 0 is out (it is behind, not tied);
  - the race stops when one survivor is left, when the leader's bootstrap p_best among the survivors reaches
    `confidence`, when `max_rounds` rounds ran, or when the next round would pass `max_extra_steps` in total.
Every extra step and row is counted in the result (`extra_steps`, `extra_row_evaluations`) so a saving figure can
include it. Nothing here trains or scores: the pipeline (or the benchmark) supplies `advance`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from damoc.selection.uncertainty import bootstrap_p_best, paired_bootstrap

Advance = Callable[[str, int], Sequence[float]]


@dataclass(frozen=True)
class RacingSettings:
    confidence: float = 0.9        # stop once the leader's p_best reaches it; ties are judged at this level too
    max_rounds: int = 3
    steps_per_round: int = 20      # extra optimizer steps per survivor per round (0: only more eval rows)
    rows_per_round: int = 0        # extra eval rows per survivor per round (0: the same rows, retrained)
    max_extra_steps: int | None = None  # cap on the total extra steps over all survivors; None: rounds decide
    bootstrap_samples: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"racing confidence must be in (0, 1), got {self.confidence}")
        if self.max_rounds < 1 or self.steps_per_round < 0 or self.rows_per_round < 0:
            raise ValueError("racing needs max_rounds >= 1 and non-negative steps_per_round / rows_per_round")
        if self.steps_per_round == 0 and self.rows_per_round == 0:
            raise ValueError("a racing round must add optimizer steps or eval rows (both are 0)")


@dataclass
class RaceResult:
    pick: str
    p_best: float | None
    stopped_by: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    eliminated: dict[str, int] = field(default_factory=dict)  # candidate -> round it was dropped in
    extra_steps: int = 0
    extra_row_evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pick": self.pick, "p_best": self.p_best, "stopped_by": self.stopped_by, "rounds": self.rounds,
                "eliminated": self.eliminated, "extra_steps": self.extra_steps,
                "extra_row_evaluations": self.extra_row_evaluations}


def _leader(rows: Mapping[str, np.ndarray]) -> str:
    return sorted(rows, key=lambda name: (-float(np.mean(rows[name])), name))[0]


def racing_set(uncertainty: Mapping[str, Any] | None) -> list[str]:
    """The candidates that race: the winner and those tied with it (selection["uncertainty"]); [] when no tie."""
    if not uncertainty or not uncertainty.get("tied_with_winner"):
        return []
    return [uncertainty["winner"], *uncertainty["tied_with_winner"]]


def race(initial_rows: Mapping[str, Sequence[float]], tied: Sequence[str], advance: Advance,
         settings: RacingSettings = RacingSettings()) -> RaceResult:
    """Race the candidates in `tied` (the winner and its tied rivals), starting from their per-row values."""
    if len(tied) < 2:
        raise ValueError(f"racing needs at least two tied candidates, got {list(tied)}")
    missing = [name for name in tied if name not in initial_rows]
    if missing:
        raise ValueError(f"no row values for {missing}")
    rows = {name: np.asarray(initial_rows[name], dtype=np.float64) for name in tied}
    result = RaceResult(pick=_leader(rows), p_best=None, stopped_by="")
    alive = list(tied)
    for round_no in range(1, settings.max_rounds + 1):
        cost = settings.steps_per_round * len(alive)
        if settings.max_extra_steps is not None and result.extra_steps + cost > settings.max_extra_steps:
            result.stopped_by = "budget"
            break
        for name in alive:
            values = np.asarray(advance(name, round_no), dtype=np.float64)
            if values.ndim != 1 or not len(values):
                raise ValueError(f"advance({name!r}, {round_no}) returned no per-row values")
            rows[name] = values
            result.extra_row_evaluations += len(values)
        result.extra_steps += cost
        lengths = {len(rows[name]) for name in alive}
        if len(lengths) != 1:
            raise ValueError(f"round {round_no}: survivors were scored on different rows ({sorted(lengths)} rows)")
        current = {name: rows[name] for name in alive}
        leader = _leader(current)
        ties = paired_bootstrap(current, leader, confidence=settings.confidence,
                                samples=settings.bootstrap_samples, seed=round_no)["tied_with_winner"]
        for name in alive:
            if name != leader and name not in ties:
                result.eliminated[name] = round_no
        alive = [name for name in alive if name == leader or name in ties]
        # p_best among everyone scored this round (a rival dropped just now still counts: no trivial 1.0)
        conf = bootstrap_p_best(current, leader, samples=settings.bootstrap_samples, seed=round_no)
        result.pick, result.p_best = leader, conf["p_best"]
        result.rounds.append({"round": round_no, "survivors": list(alive), "leader": leader,
                              "p_best": conf["p_best"], "rows": int(lengths.pop()), "extra_steps": cost})
        if len(alive) == 1:
            result.stopped_by = "one left"
            break
        if conf["p_best"] >= settings.confidence:
            result.stopped_by = "confident"
            break
    else:
        result.stopped_by = "max_rounds"
    if not result.rounds:
        result.p_best = bootstrap_p_best(rows, result.pick, samples=settings.bootstrap_samples)["p_best"]
    return result
