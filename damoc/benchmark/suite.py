"""What the selection-fidelity benchmark runs: tasks of the paper's four types, the candidates, the recipes.

Sizes are chosen for 2 CPU cores: the grid-search ground truth (every candidate fine-tuned on all training
rows, 3 seeds) is computed once per zoo/data/settings version and cached; recipes then cost minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GRID_SEEDS = (0, 1, 2)
GRID_TRAINING = {"method": "full", "epochs": 3, "learning_rate": 0.005, "batch_size": 16}
EVAL_BATCH = 64


@dataclass(frozen=True)
class BenchTask:
    name: str
    demo_task: str          # damoc.demo.data generator
    task_type: str          # damoc.evaluation.tasks entry (decides the metric)
    max_new_tokens: int
    max_length: int         # training/scoring tokens per row: room for the longest prompt + answer
    n_train: int = 400
    n_eval: int = 400
    options_field: str = ""

    def data_section(self, train: str, eval_: str, max_eval: int | None = None) -> dict[str, Any]:
        fields = {"instruction": "instruction", "input": "input", "output": "output", "options": self.options_field}
        section: dict[str, Any] = {"train": train, "eval": eval_, "task": self.task_type, "fields": fields}
        if max_eval:
            section["max_eval_samples"] = max_eval
        return section


TASKS: tuple[BenchTask, ...] = (
    BenchTask("medical_qa", "qa_long", "qa_long", max_new_tokens=80, max_length=224),
    BenchTask("summarisation", "summarisation", "summarisation", max_new_tokens=64, max_length=288),
    # tiny models need ~2.5x the rows to rise off the F1 floor here (1000 rows: ~0.10; 400 rows: ~0.02)
    BenchTask("reading", "extractive_closed", "extractive_qa", max_new_tokens=12, max_length=160, n_train=1000),
    BenchTask("instructions_mc", "instruction_mc", "multiple_choice", max_new_tokens=1, max_length=64,
              options_field="options"),
)


@dataclass(frozen=True)
class Recipe:
    """A cheap way to rank the candidates. kind: pipeline (the DaMoC stages with `overrides`), shots (no
    training: score the chat models with k demonstrations in the prompt), halving (successive halving)."""

    name: str
    description: str
    kind: str = "pipeline"
    overrides: dict[str, Any] = field(default_factory=dict)
    shots: int = 0


_PAPER = {"filter": {"method": "graphcut", "ratio": 0.2},
          "compression": {"enabled": True, "rate": 0.6, "bertscore_threshold": 0.9},
          "pruning": {"enabled": True, "rule": "threshold", "threshold": 0.85, "max_prune_fraction": 0.5}}
PROXY_STEPS = 40  # optimizer steps per proxy (batch 16): ~53% of one grid-search seed's 75 steps


def _with(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value}
    return out


RECIPES: tuple[Recipe, ...] = (
    Recipe("paper", "GraphCut 20% + token compression 0.6 (gate 0.9) + pruning at 0.85 (cap 50%), grid epochs",
           overrides=_PAPER),
    Recipe("steps+fair", "paper's data compression; every candidate loses 25% of its layers; a fixed "
           f"{PROXY_STEPS}-step budget per proxy", overrides=_with(_PAPER, pruning={"rule": "fraction",
                                                                   "target_fraction": 0.25},
                                                           training={"proxy_steps": PROXY_STEPS})),
    Recipe("lean10", "GraphCut 10% + the paper's token compression + every candidate loses 25% of its layers, "
           "grid epochs (half the paper's training)", overrides=_with(_PAPER, filter={"ratio": 0.1},
                                                                       pruning={"rule": "fraction",
                                                                                "target_fraction": 0.25})),
    Recipe("random-filter", "paper recipe with a random 20% instead of GraphCut",
           overrides=_with(_PAPER, filter={"method": "random"})),
    Recipe("no-compression", "paper recipe without token compression",
           overrides=_with(_PAPER, compression={"enabled": False})),
    Recipe("no-pruning", "paper recipe without layer pruning", overrides=_with(_PAPER, pruning={"enabled": False})),
    Recipe("filter-only", "GraphCut 20% only", overrides=_with(_PAPER, compression={"enabled": False},
                                                               pruning={"enabled": False})),
    Recipe("compress-only", "token compression only (all rows)",
           overrides=_with(_PAPER, filter={"method": "none"}, pruning={"enabled": False})),
    Recipe("prune-only", "layer pruning only (all rows, uncompressed)",
           overrides=_with(_PAPER, filter={"method": "none"}, compression={"enabled": False})),
    # The paper's baselines: its data and model compression swapped for LLMLingua / LongLLMLingua (at the same
    # rate, on the same GraphCut 20%, so only the methods differ) and LaCo layer collapse.
    Recipe("llmlingua+laco", "GraphCut 20% + LLMLingua token compression (rate 0.6) + LaCo layer collapse",
           overrides=_with(_PAPER, compression={"method": "llmlingua"}, pruning={"method": "laco"})),
    Recipe("longllmlingua+laco", "GraphCut 20% + LongLLMLingua (question-aware) compression (rate 0.6) + LaCo",
           overrides=_with(_PAPER, compression={"method": "longllmlingua"}, pruning={"method": "laco"})),
    # learning-curve extrapolation (AtS / LensLLM style): damoc/benchmark/curve_recipe.py
    Recipe("paper-curve", "the paper recipe, trained once with the reference log-likelihood measured at 4 evenly "
           "spaced steps; ranks by the power-law extrapolation to grid search's training length (lr-area axis; "
           "the step axis as `curve-steps`)", kind="curve",
           overrides=_with(_PAPER, curve={"points": 4, "axis": "lr_area"})),
    # the rectified scaling law across data sizes (AtS): damoc/benchmark/subsets_recipe.py
    Recipe("paper-subsets", "the paper recipe's proxies fine-tuned on 4 nested subsets of the compressed rows "
           "(n/8, n/4, n/2, n); ranks by the rectified law L(D) = B/(D_l + D)^beta + E extrapolated to all "
           "training rows", kind="subsets", overrides=_with(_PAPER, subsets={"points": 4})),
    Recipe("0-shot", "no training: score the chat models as they are", kind="shots", shots=0),
    Recipe("1-shot", "no training: one training example in every prompt", kind="shots", shots=1),
    Recipe("2-shot", "no training: two training examples in every prompt", kind="shots", shots=2),
    Recipe("halving", "successive halving on the compressed set: all candidates get a small step budget, "
           "the better half (by reference log-likelihood) continues with double the steps, until one is left",
           kind="halving", overrides=_with(_PAPER, pruning={"rule": "fraction", "target_fraction": 0.25})),
)
# The paper's filtering experiment (its Table 2): each of the twelve methods alone, at 5/10/20% of the rows.
FILTER_FAMILIES: dict[str, tuple[str, ...]] = {
    "distribution-aware": ("dq", "graphcut", "kcenter", "random"),
    "quality-aware": ("alpagasus", "lma", "superfiltering", "less"),
    "hybrid": ("mods", "cherry", "deita", "car"),
}
FILTER_RATIOS = (0.05, 0.1, 0.2)
FILTER_TASK = "instructions_mc"  # the cheapest task (~1 CPU-minute per recipe): 36 recipes fit in an hour


def filter_recipe_name(method: str, ratio: float) -> str:
    return f"filter-{method}-{round(ratio * 100)}"


FILTER_RECIPES: tuple[Recipe, ...] = tuple(
    Recipe(filter_recipe_name(m, r), f"{m} keeps {round(r * 100)}% of the rows; no compression, no pruning",
           overrides=_with(_PAPER, filter={"method": m, "ratio": r}, compression={"enabled": False},
                           pruning={"enabled": False}))
    for methods in FILTER_FAMILIES.values() for m in methods for r in FILTER_RATIOS)

UNAVAILABLE: dict[str, str] = {}  # recipes of the paper that cannot run yet, with the reason


@dataclass(frozen=True)
class Variant:
    name: str
    tasks: tuple[str, ...]
    recipes: tuple[str, ...]
    proxy_eval_rows: int | None  # None: all eval rows


VARIANTS = {
    "quick": Variant("quick", ("medical_qa", "instructions_mc"), ("paper", "steps+fair", "0-shot"), 100),
    # every recipe that trains on a subset; the two ablations that train on ALL rows (about one grid-search run
    # each) have their own variant, on the two cheapest long/short tasks, so the full variant fits an hour
    "full": Variant("full", tuple(t.name for t in TASKS),
                    tuple(r.name for r in RECIPES if r.name not in ("compress-only", "prune-only", "paper-subsets"))
                    + ("paper@seed1", "paper@seed2"), 200),  # the default recipe's spread over proxy seeds
    "ablations": Variant("ablations", ("medical_qa", "instructions_mc"), ("compress-only", "prune-only"), 200),
    "filters": Variant("filters", (FILTER_TASK,), tuple(r.name for r in FILTER_RECIPES), 200),
    # data-size extrapolation (issue 19) against the one-run step curve and the plain last point
    "subsets": Variant("subsets", tuple(t.name for t in TASKS), ("paper", "paper-curve", "paper-subsets"), 200),
}


def task(name: str) -> BenchTask:
    return next(t for t in TASKS if t.name == name)


SEED_MARK = "@seed"  # "paper@seed1": the paper recipe with proxy training seed 1 (the spread over proxy seeds)


def recipe(name: str) -> Recipe:
    base, _, seed = name.partition(SEED_MARK)
    found = next((r for r in RECIPES + FILTER_RECIPES if r.name == base), None)
    if found is None or (seed and not seed.isdigit()):
        known = ", ".join(r.name for r in RECIPES)
        raise ValueError(f"unknown recipe {name!r}: one of {known}, optionally with {SEED_MARK}N (N = proxy seed)")
    if not seed:
        return found
    if found.kind != "pipeline":
        raise ValueError(f"recipe {name!r}: only pipeline recipes take a proxy seed")
    return Recipe(name, f"{found.description}; proxy training seed {int(seed)}", found.kind,
                  _with(found.overrides, training={"seed": int(seed)}), found.shots)


def seed_variant(name: str) -> tuple[str, int | None]:
    """('paper', 1) for 'paper@seed1'; ('paper', None) for 'paper'."""
    base, _, seed = name.partition(SEED_MARK)
    return base, (int(seed) if seed else None)
