"""The `damoc` command: run a selection, compile the pipeline, build the demo zoo and data."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

EPILOG = ("Docs: README.md (Run configuration, Outputs), docs/reliability.md. Exit codes: 0 ok, 1 run failed, "
          "2 bad input, 130 interrupted. --debug (anywhere on the line) shows tracebacks.")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class UsageError(ValueError):
    """A bad command-line argument that argparse cannot check itself (e.g. --out names a file)."""


def strip_ansi(text: str) -> str:
    """Drop terminal colour codes (kfp.local colours its messages) so errors read cleanly in files and CI logs."""
    return _ANSI.sub("", text)


def _out_dir(path: str, flag: str = "--out") -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {path}: is an existing file; {flag} takes a directory")
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    out = _out_dir(args.out)
    cfg = load_config(args.config, overrides)
    _check_relative_paths(cfg, Path(args.config), overrides)
    if args.dry_run:  # nothing is built or downloaded: zoo:// and demo:// are resolved by a real run
        print(cfg.model_dump_json(indent=2))
        return 0
    cfg = resolve_builtins(_absolute_overrides(cfg, overrides))
    _preflight_data(cfg)
    from damoc.workflow.preflight import pruning_warnings

    for line in pruning_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    from damoc.workflow.cached_steps import reused_stages
    from damoc.workflow.stage_cache import resume_env
    from damoc_pipelines.local_runner import run_local

    print(f"DaMoC: running '{cfg.mode}' on {len(cfg.candidates)} candidate(s) locally via kfp.local -> {out}")
    with resume_env(not args.no_resume):  # finished stages with identical inputs are reused (stage cache)
        selection = run_local(cfg, out)
    _print_ranking(selection)
    reused, total = reused_stages(selection)
    if reused:
        print(f"  resumed: {len(reused)} of {total} stages reused from the stage cache ({', '.join(reused)}); "
              "--no-resume reruns them")
    print(f"\nselection: {out / 'selection.json'}\nreport:    {out / 'report.md'}")
    if selection.get("selected") is None:  # a run with no winner is not a success (the report says why)
        _error(f"no candidate could be ranked: every one failed (reasons in {out / 'report.md'})")
        return 1
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from damoc.workflow.stage_cache import cache_root, clear

    print(f"removed {clear()} stage cache entries from {cache_root()}")
    return 0


def _check_relative_paths(cfg, config_path: Path, overrides: dict[str, Any]) -> None:
    """Relative paths in a config file mean "next to the config" (README). The loader resolves those that exist
    there; one still relative here was not found there, and must not silently become a same-named file in the
    current directory. Paths given with --set are relative to the current directory, as on any command line."""
    from damoc.config import ConfigError
    from damoc.data.io import DataError

    base = config_path.resolve().parent

    def from_file(value: str | None, key: str) -> bool:
        return bool(value) and key not in overrides and "://" not in value and not Path(value).is_absolute()

    for key, value in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        # the loader made file-relative data paths absolute (next to the config) whether they exist or not
        if key in overrides or "://" in value or Path(value).exists():
            continue
        if Path(value).resolve().is_relative_to(base):
            raise DataError(f"{key}: {Path(value).relative_to(base)}: file not found next to the config ({value}); "
                            "relative paths resolve against the config file's directory, not the current directory")
        raise DataError(f"{key}: {value}: file not found")
    models = [(f"candidates[{i}].{k}", getattr(c, k)) for i, c in enumerate(cfg.candidates)
              for k in ("path", "base_path")]
    models.append(("compression.scorer_model", cfg.compression.scorer_model))
    for key, value in models:
        if not from_file(value, key):
            continue
        # A hub id (org/name) is also relative-looking; only refuse what is clearly meant as a local path.
        if value.startswith(("./", "../")) or Path(value).exists():
            raise ConfigError(f"{key}: {value}: not found next to the config ({base / value}); relative paths "
                              "resolve against the config file's directory (a same-named folder in the current "
                              "directory is not used); give an absolute path or one relative to the config")


def _absolute_overrides(cfg, overrides: dict[str, Any]):
    """Data paths given with --set are relative to the current directory: make them absolute for the tasks."""
    update = {key: str(Path(getattr(cfg.data, key)).resolve()) for key in ("train", "eval")
              if f"data.{key}" in overrides and "://" not in getattr(cfg.data, key)}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)}) if update else cfg


def _preflight_data(cfg) -> None:
    """Before any task starts: every row the run will read, of both files (local or s3://), in one streaming
    pass each; every bad row is reported (up to 20) with its file, row and field."""
    from damoc.data.io import DataError, validate_data
    from damoc.evaluation.tasks import TASKS
    from damoc.storage import StorageError

    fields = cfg.data.fields.model_dump()
    choice = TASKS.get(cfg.data.task).kind == "choice"
    problems: list[str] = []
    for uri, limit, require_options in ((cfg.data.train, cfg.data.max_train_samples, False),
                                        (cfg.data.eval, cfg.data.max_eval_samples, choice)):
        try:
            validate_data(uri, fields, limit=limit, require_options=require_options)
        except (DataError, StorageError) as err:  # both files are reported in one go
            problems.append(str(err))
    if problems:
        raise DataError("\n".join(problems))


def cmd_validate(args: argparse.Namespace) -> int:
    from damoc.config import load_config

    from damoc.workflow.preflight import pruning_warnings

    cfg = load_config(args.config)
    print(f"{args.config}: valid ({cfg.mode}, {len(cfg.candidates)} candidates, task {cfg.data.task})")
    for line in pruning_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from damoc_pipelines.compile import compile_pipeline

    # Per-task resources are fixed in the compiled YAML: the schema's defaults, or the given run config's.
    resources = None
    if args.config:
        from damoc.config import load_config

        resources = load_config(args.config).resources
    print(compile_pipeline(_out_dir(args.out), resources=resources))
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

    paths = write_demo(args.task, _out_dir(args.out), n_train=args.train, n_eval=args.eval, seed=args.seed)
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
    print(json.dumps(result, indent=2))  # also without a common candidate: it lists the missing and failed ones
    if not result["candidates"]:
        raise ConfigError(f"{args.cheap} and {args.reference} rank no candidate in common (status ok in both): "
                          "nothing to compare (missing/failed lists above)")
    return 0


def cmd_config_table(args: argparse.Namespace) -> int:
    from damoc.config_doc import config_table

    print(config_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="damoc", epilog=EPILOG,
                                description="Pick the open LLM to fine-tune on your domain data (DaMoC).")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also DAMOC_DEBUG=1); "
                   "accepted anywhere on the command line")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a selection locally (kfp.local) and print the ranking", epilog=EPILOG)
    run.add_argument("config", help="run configuration YAML (see examples/)")
    run.add_argument("--out", required=True, help="output directory: selection.json, report.md, pipeline_root/")
    run.add_argument("--mode", choices=["damoc", "grid_search"], help="override the config's mode")
    run.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a config key, e.g. --set filter.ratio=0.1 or --set filter.options.graphcut.lambda=0.3 "
                     "(repeatable; keys: `damoc config table`)")
    run.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, run nothing")
    run.add_argument("--no-resume", "--fresh", action="store_true",
                     help="rerun every stage: do not reuse finished stages with identical inputs from the stage "
                     "cache ($DAMOC_HOME/stage-cache; docs/reliability.md, Resuming)")
    run.set_defaults(func=cmd_run)

    cache = sub.add_parser("cache", help="the stage cache that lets a rerun resume finished stages")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cache_sub.add_parser("clear", help="delete every stored stage output").set_defaults(func=cmd_cache_clear)

    val = sub.add_parser("validate", help="validate a run configuration and exit")
    val.add_argument("config")
    val.set_defaults(func=cmd_validate)

    comp = sub.add_parser("compile", help="compile the KFP pipeline to YAML")
    comp.add_argument("--out", default="pipelines/compiled", help="directory for damoc_pipeline.yaml")
    comp.add_argument("--config", help="run configuration whose `resources` section sets each task's CPU/memory "
                      "requests, limits and accelerators (default: the schema's defaults)")
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
    demo.add_argument("--train", type=_positive_int, default=3000, help="training rows (default 3000)")
    demo.add_argument("--eval", type=_positive_int, default=300, help="evaluation rows (default 300)")
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


def _error(text: str) -> None:
    print(f"error: {strip_ansi(text)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 the run failed, 2 bad input (one `error:` line, or one per bad row), 130 interrupted.
    No traceback unless --debug (or DAMOC_DEBUG=1)."""
    _default_threads()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DAMOC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    from damoc.config import ConfigError
    from damoc.data.io import DataError
    from damoc.storage import StorageError

    try:
        return args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM during a run (local_runner.RunInterrupted)
        if debug:
            raise
        signum = getattr(err, "signum", 2)
        what = "Ctrl-C" if signum == 2 else f"signal {err}"
        _error(f"interrupted ({what}): stopped, task processes included; the output directory still holds the "
               "last completed run's results")
        return 128 + signum
    except (ConfigError, DataError, StorageError, UsageError) as err:
        if debug:
            raise
        _error(str(err))
        return 2
    except OSError as err:  # e.g. an output directory that cannot be written
        if debug:
            raise
        _error(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}")
        return 2
    except RuntimeError as err:  # kfp.local reports a failed task this way; its log is printed above
        if debug:
            raise
        _error(f"run failed: {err}\n(earlier results in the output directory were left as they were; "
               "add --debug for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
