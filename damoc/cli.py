"""The `damoc` command: run a selection, compile the pipeline, build the demo zoo and data."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

EPILOG = "Docs: README.md (Run configuration, Outputs). Exit codes: 0 ok, 1 run failed, 2 bad input."


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. filter.ratio=0.1), got '{text}'")
    return key.strip(), yaml.safe_load(value)


def _print_ranking(selection: dict[str, Any]) -> None:
    print(f"\nDaMoC ranking (mode={selection['mode']}, metric={selection['metric']}):")
    print(f"  {'rank':>4}  {'candidate':<24} {'score':>8}  {'train s':>8}  status")
    for row in selection["ranking"]:
        score = f"{row['score']:.4f}" if row["score"] is not None else "—"
        train_s = selection["cost"]["train_seconds"].get(row["candidate"], 0.0)
        rank = row["rank"] if row["rank"] is not None else "—"
        print(f"  {rank:>4}  {row['candidate']:<24} {score:>8}  {train_s:>8.1f}  {row['status']}"
              + (f" ({row['error'][:80]})" if row.get("error") else ""))
    print(f"  selected: {selection['selected']}   total: {selection['cost']['total_seconds']:.1f} s")


def cmd_run(args: argparse.Namespace) -> int:
    from damoc.demo.builtin import resolve_builtins
    from damoc.config import load_config

    overrides = dict(args.set or [])
    if args.mode:
        overrides["mode"] = args.mode
    cfg = resolve_builtins(load_config(args.config, overrides))
    if args.dry_run:
        print(cfg.model_dump_json(indent=2))
        return 0
    _preflight_data(cfg)
    from damoc_pipelines.local_runner import run_local

    out = Path(args.out)
    print(f"DaMoC: running '{cfg.mode}' on {len(cfg.candidates)} candidate(s) locally via kfp.local -> {out}")
    selection = run_local(cfg, out)
    _print_ranking(selection)
    print(f"\nselection: {out / 'selection.json'}\nreport:    {out / 'report.md'}")
    return 0


def _preflight_data(cfg) -> None:
    """Fail before any task starts when local data files lack the mapped columns (cheap: first rows)."""
    from damoc import storage
    from damoc.data.io import load_samples

    for uri in (cfg.data.train, cfg.data.eval):
        if not storage.is_s3(uri):
            load_samples(uri, cfg.data.fields.model_dump(), limit=5)


def cmd_validate(args: argparse.Namespace) -> int:
    from damoc.config import load_config

    cfg = load_config(args.config)
    print(f"{args.config}: valid ({cfg.mode}, {len(cfg.candidates)} candidates, task {cfg.data.task})")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from damoc_pipelines.compile import compile_pipeline

    print(compile_pipeline(args.out))
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from damoc.demo.zoo import DEFAULT_SUITE, build_zoo, default_zoo_dir, ensure_zoo, load_manifest

    out = Path(args.dir) if args.dir else default_zoo_dir(args.suite)
    zoo = build_zoo(out, suite=args.suite) if args.force else ensure_zoo(out, suite=args.suite)
    for c in load_manifest(zoo)["candidates"]:
        # zoo:// names the default suite's candidates; other suites' checkpoints are given by path
        ref = f"zoo://{c['name']:<16}" if args.suite == DEFAULT_SUITE else f"{c['name']:<22}"
        where = "" if args.suite == DEFAULT_SUITE else f" {zoo / c['path']}"
        print(f"  {ref} {c['model_type']:<9} layers={c['num_layers']} params={c['params']:,}{where}")
    print(f"zoo: {zoo}")
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from damoc.demo.data import write_demo

    paths = write_demo(args.task, Path(args.out), n_train=args.train, n_eval=args.eval, seed=args.seed)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from damoc.config import ConfigError
    from damoc.selection.agreement import compare_selections

    docs = []
    for path in (args.cheap, args.reference):
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read a selection.json: {err}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("ranking"), list):
            raise ConfigError(f"{path}: not a selection.json (no 'ranking' list)")
        docs.append(doc)
    result = compare_selections(*docs)
    if not result["candidates"]:
        raise ConfigError(f"{args.cheap} and {args.reference} rank no candidate in common (status ok in both): "
                          "nothing to compare")
    print(json.dumps(result, indent=2))
    return 0


def cmd_config_table(args: argparse.Namespace) -> int:
    from damoc.config_doc import config_table

    print(config_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="damoc", epilog=EPILOG,
                                description="Pick the open LLM to fine-tune on your domain data (DaMoC).")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a selection locally (kfp.local) and print the ranking", epilog=EPILOG)
    run.add_argument("config", help="run configuration YAML (see examples/)")
    run.add_argument("--out", required=True, help="output directory: selection.json, report.md, pipeline_root/")
    run.add_argument("--mode", choices=["damoc", "grid_search"], help="override the config's mode")
    run.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a config key, e.g. --set filter.ratio=0.1 or --set filter.options.graphcut.lambda=0.3 "
                     "(repeatable; keys: `damoc config table`)")
    run.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, run nothing")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="validate a run configuration and exit")
    val.add_argument("config")
    val.set_defaults(func=cmd_validate)

    comp = sub.add_parser("compile", help="compile the KFP pipeline to YAML")
    comp.add_argument("--out", default="pipelines/compiled", help="directory for damoc_pipeline.yaml")
    comp.set_defaults(func=cmd_compile)

    zoo = sub.add_parser("zoo", help="the built-in tiny model zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zb = zoo_sub.add_parser("build", help="build the zoo if absent (tiny base+chat checkpoints, CPU, minutes)")
    zb.add_argument("dir", nargs="?", help="target directory (default $DAMOC_HOME/zoo for the default suite, "
                    "$DAMOC_HOME/zoo-SUITE for the others)")
    zb.add_argument("--suite", choices=["default", "bench"], default="default",
                    help="default: the quickstart's 4 candidates; bench: those plus tiny-gpt2, tiny-phi (not "
                    "prunable) and tiny-gemma2, for the selection-fidelity benchmark (copies the default "
                    "candidates from a complete default zoo). Default: default")
    zb.add_argument("--force", action="store_true", help="rebuild even if a complete zoo exists")
    zb.set_defaults(func=cmd_zoo_build)

    data = sub.add_parser("data", help="demo data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    demo = data_sub.add_parser("demo", help="write a deterministic demo data set (train.jsonl, eval.jsonl)")
    from damoc.demo.data import TASKS as DEMO_TASKS

    demo.add_argument("--task", choices=list(DEMO_TASKS), default="qa_long")
    demo.add_argument("--out", required=True, help="output directory")
    demo.add_argument("--train", type=int, default=3000, help="training rows (default 3000)")
    demo.add_argument("--eval", type=int, default=300, help="evaluation rows (default 300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_data_demo)

    conf = sub.add_parser("config", help="the run configuration's keys, defaults and registered methods")
    conf_sub = conf.add_subparsers(dest="config_command", required=True)
    table = conf_sub.add_parser("table", help="print every config key with its default and meaning (Markdown)")
    table.set_defaults(func=cmd_config_table)

    from damoc.cli_cluster import add_cluster_commands

    add_cluster_commands(sub)  # upload, submit, schedule, status (kfp.Client; connection from the environment)

    cmp_ = sub.add_parser("compare", help="agreement of a DaMoC selection with a grid-search one")
    cmp_.add_argument("cheap", help="selection.json of the DaMoC run")
    cmp_.add_argument("reference", help="selection.json of the grid-search run")
    cmp_.set_defaults(func=cmd_compare)
    return p


def _default_threads() -> None:
    """One intra-op thread pool per concurrent task: kfp.local runs two loop iterations at a time, and
    oversubscribed OpenMP pools slow tiny-model steps by 50-100x on small VMs (measured: 0.045 s vs 3.4 s)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    _default_threads()
    args = build_parser().parse_args(argv)
    from damoc.config import ConfigError
    from damoc.data.io import DataError

    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # kfp.local reports a failed task this way; its log is printed above
        if os.environ.get("DAMOC_DEBUG"):
            raise
        print(f"error: run failed: {err}\n(earlier results in the output directory were left as they were; "
              "set DAMOC_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
