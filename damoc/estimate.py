"""`damoc estimate`: what a run configuration will cost, and save against grid search, before it runs.

Inputs come from the configuration itself: each candidate's parameter count from its config.json (built on the
meta device: no weights), token counts of a sample of the training and evaluation rows through each
candidate's tokenizer, encoded as fine-tuning encodes them, the row counts of the data files, the training
settings, and the recipe's kept fractions. What a run measures only while it runs is an assumption, stated in
the output and settable: the share of compressed samples passing the BERTScore gate (failures train on their
original text) and, under the threshold pruning rule, the share of layers pruned. The FLOPs are those of
:mod:`damoc.cost`, the model the benchmark counts measured runs with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from damoc import cost
from damoc.config import RunConfig
from damoc.data.schema import Sample

PAPER_PRUNE_SHARE = 0.25  # the paper prunes ~25% of layers at the 0.85 threshold


@dataclass(frozen=True)
class Assumptions:
    gpu_tflops: float = cost.DEFAULT_GPU_TFLOPS
    gate_pass: float = cost.PAPER_GATE_PASS
    prune_share: float | None = None  # None: the rule's target_fraction, or the paper's 25% (threshold rule)
    compression_kept: float | None = None  # None: gate_pass x compression.rate + (1 - gate_pass)
    sample_rows: int = 200  # rows tokenized per candidate
    dropped_layers: Mapping[str, int] | None = None  # per candidate, layers known to be pruned (overrides the share)


def _spread(samples: Sequence[Sample], n: int) -> list[Sample]:
    """n rows spread evenly over the file (not only its head, which may be ordered)."""
    if len(samples) <= n:
        return list(samples)
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _token_means(tok, train: Sequence[Sample], evals: Sequence[Sample], max_length: int,
                 chat_template: bool) -> tuple[float, float, float, float]:
    """(train tokens per row, template overhead per row, eval prompt tokens, eval answer tokens)."""
    from damoc.training.finetune import IGNORE_INDEX, encode_example

    train_lens = [len(encode_example(tok, s, max_length, chat_template)["input_ids"]) for s in train]
    overhead = len(encode_example(tok, Sample("empty", "", "", ""), max_length, chat_template)["input_ids"])
    prompt, answer = [], []
    for s in evals:
        ex = encode_example(tok, s, max_length, chat_template)
        n_answer = sum(1 for x in ex["labels"] if x != IGNORE_INDEX)
        prompt.append(len(ex["input_ids"]) - n_answer)
        answer.append(n_answer)
    return _mean(train_lens), float(overhead), _mean(prompt), _mean(answer)


def recipe_from_config(cfg: RunConfig, train: Sequence[Sample], evals: Sequence[Sample],
                       assumptions: Assumptions, scorer: tuple[int, float] = (0, 0.0)) -> cost.Recipe:
    """The kept fractions and sizes a run of `cfg` applies (train/eval: every row the run reads)."""
    from damoc.evaluation.tasks import TASKS
    from damoc.filtering import get_filter
    from damoc.workflow.stage_switches import compression_enabled, filter_enabled, pruning_enabled

    comp, prune = cfg.compression, cfg.pruning
    if assumptions.compression_kept is not None:
        kept = assumptions.compression_kept
    elif compression_enabled(cfg):
        kept = assumptions.gate_pass * comp.rate + (1.0 - assumptions.gate_pass)
    else:
        kept = 1.0
    if not pruning_enabled(cfg):
        share = 0.0
    elif assumptions.prune_share is not None:
        share = assumptions.prune_share
    else:
        share = prune.target_fraction if prune.rule == "fraction" else min(PAPER_PRUNE_SHARE,
                                                                          prune.max_prune_fraction)
    choice = TASKS.get(cfg.data.task).kind == "choice"
    filtering = filter_enabled(cfg)
    return cost.Recipe(
        train_rows=len(train), eval_rows=len(evals), epochs=cfg.training.epochs, batch_size=cfg.training.batch_size,
        max_steps=cfg.training.max_steps, filter_ratio=cfg.filter.ratio if filtering else 1.0,
        filter_embeds=filtering and get_filter(cfg.filter.method).needs_embeddings,
        compression_kept=kept, prune_share=share,
        calibration_rows=prune.calibration_samples if pruning_enabled(cfg) and prune.method == "damoc" else 0,
        predict=cfg.evaluation.predict, max_new_tokens=cfg.evaluation.max_new_tokens,
        choice_options=round(_mean([len(s.options) for s in evals])) if choice else 0,
        train_words_per_row=_mean([len(s.text.split()) for s in train]),
        scorer_params=scorer[0], scorer_tokens_per_row=scorer[1])


def candidate_inputs(cfg: RunConfig, train: Sequence[Sample], evals: Sequence[Sample],
                     assumptions: Assumptions) -> list[cost.CandidateInputs]:
    from damoc.hf import load_tokenizer

    train_s, eval_s = _spread(train, assumptions.sample_rows), _spread(evals, assumptions.sample_rows)
    out = []
    for cand in cfg.candidates:
        tok = load_tokenizer(cand.path, cand.trust_remote_code)
        means = _token_means(tok, train_s, eval_s, cfg.training.max_length, cfg.training.chat_template)
        out.append(cost.CandidateInputs(cand.name, cost.model_shape(cand.path, cand.trust_remote_code), *means,
                                        prunable=cand.base_path is not None,
                                        dropped_layers=(assumptions.dropped_layers or {}).get(cand.name)))
    return out


def _scorer(cfg: RunConfig, train: Sequence[Sample], assumptions: Assumptions) -> tuple[int, float]:
    """(parameters, tokens per row in its own tokenizer) of the compression scorer."""
    from damoc.hf import load_tokenizer
    from damoc.workflow.stage_switches import compression_enabled

    if not compression_enabled(cfg):
        return 0, 0.0
    path = cfg.scorer_model_path()
    tok = load_tokenizer(path)
    rows = _spread(train, assumptions.sample_rows)
    return cost.model_shape(path).params, _mean([len(tok(s.text, add_special_tokens=False)["input_ids"])
                                                 for s in rows])


def load_rows(cfg: RunConfig) -> tuple[list[Sample], list[Sample]]:
    from damoc.data.io import load_samples
    from damoc.evaluation.tasks import TASKS

    fields = cfg.data.fields.model_dump()
    train = load_samples(cfg.data.train, fields, limit=cfg.data.max_train_samples, id_prefix="train-")
    evals = load_samples(cfg.data.eval, fields, limit=cfg.data.max_eval_samples, id_prefix="eval-",
                         require_options=TASKS.get(cfg.data.task).kind == "choice")
    return train, evals


def _estimate(cfg: RunConfig, assumptions: Assumptions) -> tuple[dict[str, Any], list[Sample], RunConfig,
                                                                   list[cost.CandidateInputs], cost.Recipe]:
    from damoc.demo.builtin import resolve_builtins

    cfg = resolve_builtins(cfg)
    train, evals = load_rows(cfg)
    if not train or not evals:
        from damoc.config import ConfigError

        raise ConfigError(f"{cfg.data.train if not train else cfg.data.eval}: no rows to estimate from")
    cands = candidate_inputs(cfg, train, evals, assumptions)
    recipe = recipe_from_config(cfg, train, evals, assumptions, _scorer(cfg, train, assumptions))
    out = cost.compare(cands, recipe, assumptions.gpu_tflops)
    out["candidates"] = {c.name: {"params": c.shape.params, "layers": c.shape.layers,
                                  "train_tokens_per_row": round(c.train_tokens, 1),
                                  "eval_tokens_per_row": round(c.eval_prompt_tokens + c.eval_answer_tokens, 1)}
                         for c in cands}
    out["assumptions"] = {
        "gpu_tflops": assumptions.gpu_tflops, "gate_pass": assumptions.gate_pass,
        "compression_kept": recipe.compression_kept, "prune_share": recipe.prune_share,
        "sample_rows": min(assumptions.sample_rows, len(train)),
        "notes": "6 x params x tokens per training token, 2 x params per forward token; one GPU per candidate "
                 "in parallel for wall time; failed gate samples train on their original text"}
    return out, train, cfg, cands, recipe


def estimate(cfg: RunConfig, assumptions: Assumptions = Assumptions()) -> dict[str, Any]:
    """The projected cost of `cfg` as a DaMoC run and as grid search (zoo:// and demo:// resolved here)."""
    return _estimate(cfg, assumptions)[0]


def measured_flops(cfg: RunConfig, results: Sequence[Any], stage_results: Sequence[Any], *, train_words: int,
                   scorer_params: int, calibration_tokens: dict[str, float] | None = None) -> dict[str, float]:
    """FLOPs of a finished run from what its stages reported, counted as the benchmark counts them
    (damoc.cost): filtering and compression from their stage stats, per candidate pruning (calibration rows x
    their tokens), training from the train stats, evaluation from the evaluate stats' token counts."""
    out: dict[str, float] = {}

    def add(stage: str, value: float) -> None:
        if value:
            out[stage] = out.get(stage, 0.0) + value

    for stage in stage_results:
        doc = stage.model_dump()
        if stage.stage == "filter":
            add("filter", cost.filter_flops(doc, train_words))
        elif stage.stage == "compress":
            add("compress", cost.compress_flops(doc, scorer_params))
    for res in results:
        prune, train, ev = (res.stages.get(k) for k in ("prune", "train", "evaluate"))
        if prune is not None:
            add("prune", cost.prune_flops(prune.model_dump(), round((calibration_tokens or {}).get(res.candidate, 0))))
        if train is not None and train.status == "ok":
            add("train", cost.train_flops(train.stats, cfg.training.batch_size))
        if ev is not None and ev.status == "ok" and ev.stats.get("prompt_tokens") is not None:
            params = (train.stats.get("params") if train is not None else None) or 0
            predicted = ev.stats.get("score") is not None
            add("evaluate", cost.eval_flops(params, ev.stats["prompt_tokens"], ev.stats["answer_tokens"],
                                            ev.stats.get("samples", 0), cfg.evaluation.max_new_tokens, predicted,
                                            ev.stats.get("choice_options", 0) if predicted else 0))
    return out


def projected_cost(cfg: RunConfig, results: Sequence[Any] | None = None, stage_results: Sequence[Any] = (),
                   assumptions: Assumptions = Assumptions()) -> dict[str, Any]:
    """For the selection document: the projected FLOPs of the run and of grid search and the projected saving,
    beside the FLOPs measured from this run's stage statistics (`results`: its CandidateResults,
    `stage_results`: its data stages) and the saving they give against the projected grid search."""
    est, train, resolved, cands, recipe = _estimate(cfg, assumptions)
    out: dict[str, Any] = {
        "projected_flops": est["damoc"]["total_flops"], "projected_grid_flops": est["grid_search"]["total_flops"],
        "projected_saving": est["saving"], "projected_stage_flops": est["damoc"]["flops"],
        "projected_gpu_hours": est["damoc"]["gpu_hours"], "projected_grid_gpu_hours": est["grid_search"]["gpu_hours"],
        "gpu_tflops": assumptions.gpu_tflops, "assumptions": {k: v for k, v in est["assumptions"].items()
                                                              if k != "notes"}}
    if results is not None:
        calibration = {c.name: resolved.pruning.calibration_samples * c.train_tokens for c in cands}
        measured = measured_flops(resolved, results, stage_results,
                                  train_words=round(len(train) * recipe.train_words_per_row),
                                  scorer_params=recipe.scorer_params, calibration_tokens=calibration)
        total = sum(measured.values())
        out.update({"measured_flops": total, "measured_stage_flops": measured,
                    "measured_saving": est["grid_search"]["total_flops"] / total if total else None,
                    "projection_error": (est["damoc"]["total_flops"] - total) / total if total else None})
    return out


def format_table(est: dict[str, Any]) -> str:
    """The estimate as a human-readable table."""
    def e(x: float) -> str:
        return f"{x:.3g}"

    lines = [f"{'candidate':<24} {'params':>12} {'layers':>6} {'tok/row':>8} {'DaMoC FLOPs':>12} {'GS FLOPs':>12}"]
    for name, c in est["candidates"].items():
        run = est["damoc"]["per_candidate"][name]
        grid = est["grid_search"]["per_candidate"][name]
        run_f = sum(run.get(k, 0.0) for k in ("prune", "train", "evaluate"))
        grid_f = sum(grid.get(k, 0.0) for k in ("prune", "train", "evaluate"))
        lines.append(f"{name:<24} {c['params']:>12,} {c['layers']:>6} {c['train_tokens_per_row']:>8.1f} "
                     f"{e(run_f):>12} {e(grid_f):>12}")
    lines.append("")
    lines.append(f"{'':<12} {'rows':>8} {'FLOPs':>10} {'GPU-h':>9} {'wall h':>9}   stages")
    for key, label in (("damoc", "DaMoC"), ("grid_search", "grid search")):
        p = est[key]
        stages = ", ".join(f"{k} {e(v)}" for k, v in p["flops"].items())
        lines.append(f"{label:<12} {p['train_rows']:>8} {e(p['total_flops']):>10} {p['gpu_hours']:>9.3g} "
                     f"{p['wall_hours']:>9.3g}   {stages}")
    a = est["assumptions"]
    lines.append("")
    lines.append(f"saving: {est['saving']:.1f}x FLOPs end to end, {est['saving_train']:.1f}x training, "
                 f"{est['saving_wall']:.1f}x wall time" if est["saving"] else "saving: —")
    lines.append(f"assumed: {a['gpu_tflops']:g} TFLOP/s sustained per GPU; kept tokens {a['compression_kept']:.2f} "
                 f"(gate pass {a['gate_pass']:.2f}); layers pruned {a['prune_share']:.2f}; filter ratio "
                 f"{est['recipe']['filter_ratio']:g}; {a['sample_rows']} rows tokenized per candidate. "
                 + a["notes"])
    return "\n".join(lines)


def selection_projection(cfg: RunConfig, results: Sequence[Any], stage_results: Sequence[Any]) -> dict[str, Any]:
    """:func:`projected_cost` for the rank step: never fails the ranking (an estimate that cannot be made,
    e.g. a candidate whose config.json is only on s3://, is reported with its reason instead)."""
    refs = [cfg.data.train, cfg.data.eval] + [c.path for c in cfg.candidates]
    if any(r.startswith(("zoo://", "demo://")) for r in refs):  # resolving them could build the zoo here
        return {"error": "unresolved zoo:// or demo:// references: run `damoc estimate CONFIG` instead"}
    try:
        return projected_cost(cfg, results, stage_results)
    except Exception as err:  # noqa: BLE001 — a cost estimate must not fail a finished run
        return {"error": f"{type(err).__name__}: {str(err)[:300]}"}
