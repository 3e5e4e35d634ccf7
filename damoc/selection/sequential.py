"""Sequential evaluation: how many eval rows the ranking needs before its leader is decided.

Every candidate is scored on the same eval rows in the same order (the eval file's), so the rows can be read
in blocks (a first block, then doubling: 20, 40, 80, ... rows): after each, the leader of the rows so far is compared with every rival by the paired
bootstrap of :mod:`damoc.selection.uncertainty`; the ranking is decided at the first look where no rival's gap
interval reaches 0. Looking after every block is a multiple test: each look uses the confidence
1 - (1 - confidence) / looks (Bonferroni over the planned looks), so the chance of stopping on a leader that
is not ahead stays within 1 - confidence overall. A leader never separated uses every row (the cap,
``data.max_eval_samples``).

Design for the pipeline, where candidates are evaluated in parallel tasks: the candidates cannot stop each
other, so the rank step applies this to the per-row log-likelihoods they report and records the rows the
decision needed (`rows_used`) and the evaluation FLOPs a block-wise evaluation would have saved; the ranking
itself still uses every row evaluated. An evaluation that stops (blocks evaluated in lockstep, or a second
pass for the contenders only) is what realises the saving.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from damoc.selection.uncertainty import paired_bootstrap


def looks(n_rows: int, block: int, min_rows: int | None = None) -> list[int]:
    """Prefix lengths checked: `block` rows (or `min_rows`), doubling at every look, then all rows.

    Doubling keeps the looks few (log2 of rows/block), so the Bonferroni share of each stays mild and the
    bootstrap work stays near that of one look on all rows."""
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    points, rows = [], max(block, min_rows or block)
    while rows < n_rows:
        points.append(rows)
        rows *= 2
    return points + [n_rows] if n_rows else []


def sequential_decision(row_values: Mapping[str, Sequence[float]], *, block: int = 20, confidence: float = 0.9,
                        samples: int = 1000, seed: int = 0, min_rows: int | None = None) -> dict[str, Any]:
    """The first prefix of the rows at which the leader is separated from every rival.

    row_values: per candidate, one value per eval row, same rows and order for all (higher is better).
    Returns rows_used, rows_available, decided (separated before or at the last look), leader (on the rows
    used), full_leader (on every row), agrees (the two are the same), saving (share of rows not needed),
    per_look_confidence, and the trace of looks (rows, leader, rivals still tied).
    """
    if len(row_values) < 2:
        n = len(next(iter(row_values.values()), []))
        name = next(iter(row_values), None)
        return {"rows_used": min(n, block), "rows_available": n, "decided": True, "leader": name,
                "full_leader": name, "agrees": True, "saving": 1 - min(n, block) / n if n else 0.0,
                "per_look_confidence": confidence, "looks": []}
    lengths = {len(v) for v in row_values.values()}
    if len(lengths) != 1:
        raise ValueError(f"candidates have different eval row counts {sorted(lengths)}: rows must be paired")
    n = lengths.pop()
    points = looks(n, block, min_rows)
    per_look = 1.0 - (1.0 - confidence) / max(1, len(points))
    full_leader = max(row_values, key=lambda k: math.fsum(row_values[k]))
    trace = []
    used, leader, decided = n, full_leader, False
    for rows in points:
        prefix = {k: list(v[:rows]) for k, v in row_values.items()}
        lead = max(prefix, key=lambda k: math.fsum(prefix[k]))
        boot = paired_bootstrap(prefix, lead, confidence=per_look, samples=samples, seed=seed)
        tied = list(boot["tied_with_winner"])
        trace.append({"rows": rows, "leader": lead, "tied": tied})
        if not tied and not boot["unpaired"]:
            used, leader, decided = rows, lead, True
            break
    return {"rows_used": used, "rows_available": n, "decided": decided, "leader": leader,
            "full_leader": full_leader, "agrees": leader == full_leader, "saving": 1 - used / n if n else 0.0,
            "per_look_confidence": per_look, "block": block, "looks": trace}


def for_results(results: Sequence[Any], rank_by: str, *, block: int, confidence: float,
                samples: int = 1000) -> dict[str, Any]:
    """:func:`sequential_decision` over the ranked candidates' per-row values (the rank step's input)."""
    from damoc.selection.ranking import RANK_KEYS

    key = RANK_KEYS[rank_by]
    rows = {}
    for r in results:
        ev = r.stages.get("evaluate")
        if r.status == "ok" and ev is not None and isinstance(ev.stats.get(key), list):
            rows[r.candidate] = ev.stats[key]
    if not rows:
        return {"error": f"no candidate reported per-row values ({key})"}
    try:
        out = sequential_decision(rows, block=block, confidence=confidence, samples=samples)
    except ValueError as err:
        return {"error": str(err)}
    out["signal"] = key
    return out
