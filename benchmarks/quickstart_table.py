"""The README's quickstart table from one command: `make quickstart-numbers` (= make demo + make grid + this).

Reads runs/quickstart/selection.json (DaMoC) and runs/quickstart-grid/selection.json (grid search) and prints
the Markdown table, agreement and cost ratios the README shows, with the date and machine they come from.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from damoc.selection.agreement import compare_selections

    args = argv if argv is not None else sys.argv[1:]
    damoc_path = Path(args[0] if args else "runs/quickstart/selection.json")
    grid_path = Path(args[1] if len(args) > 1 else "runs/quickstart-grid/selection.json")
    try:
        cheap, grid = json.loads(damoc_path.read_text()), json.loads(grid_path.read_text())
    except (OSError, ValueError) as err:
        print(f"error: {err} (run `make demo` and `make grid` first)", file=sys.stderr)
        return 2
    cmp = compare_selections(cheap, grid)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores "
             f"(`make quickstart-numbers`):", "",
             "| rank | DaMoC (`make demo`) | score | tied with #1 | train s | grid search (`make grid`) | score | train s |",
             "|---|---|---|---|---|---|---|---|"]
    a, b = cheap["ranking"], grid["ranking"]
    for i in range(max(len(a), len(b))):
        ra, rb = (a[i] if i < len(a) else {}), (b[i] if i < len(b) else {})
        cells = [str(i + 1), ra.get("candidate", ""), _num(ra.get("score")),
                 "yes" if ra.get("tied_with_winner") else "", _num(cheap["cost"]["train_seconds"].get(ra.get("candidate"))),
                 rb.get("candidate", ""), _num(rb.get("score")), _num(grid["cost"]["train_seconds"].get(rb.get("candidate")))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Top-1 agrees: {'yes' if cmp['top1_agree'] else 'no'}; Kendall tau {_num(cmp['kendall_tau'])}, "
              f"Spearman rho {_num(cmp['spearman_rho'])}; wall-time ratio {_num(cmp.get('wall_time_ratio'))}, "
              f"training-time ratio {_num(cmp.get('train_time_ratio'))}."]
    print("\n".join(lines))
    return 0


def _num(value) -> str:
    return "—" if value is None else (f"{value:.4f}" if isinstance(value, float) and abs(value) < 10 else
                                      f"{value:.1f}" if isinstance(value, float) else str(value))


if __name__ == "__main__":
    sys.exit(main())
