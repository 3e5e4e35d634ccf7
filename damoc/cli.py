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

EPILOG = ("Docs: README.md (CLI, Run configuration, Outputs), docs/reliability.md. Exit codes: 0 ok, "
          "1 run failed, 2 bad input, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). --debug (anywhere on "
          "the line) shows tracebacks.")
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


class BadOverride(Exception):
    """An unparsable --set value; not a ValueError, so argparse lets it through to main's one-line error."""


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. filter.ratio=0.1), got '{text}'")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:  # '[', '@0.1', a !!python/... tag (safe_load refuses to build it)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BadOverride(f"--set {key.strip()}={value}: not a valid value ({problem}); quote text, e.g. "
                          f"--set '{key.strip()}=\"{value}\"'") from None


def _print_ranking(selection: dict[str, Any]) -> None:
    """The final table: the ranking signal, its interval, ties, flags, seconds (damoc.console)."""
    from damoc.console import print_ranking

    print_ranking(selection)


def cmd_run(args: argparse.Namespace) -> int:
    from damoc.demo.builtin import resolve_builtins
    from damoc.config import load_config

    overrides = dict(args.set or [])
    if args.mode:
        overrides["mode"] = args.mode
    out = _out_dir(args.out)
    cfg = load_config(args.config, overrides)
    # the same checks as `damoc validate`, before anything runs
    _preflight(cfg, Path(args.config), overrides, local_run=not args.dry_run)
    if args.dry_run:  # nothing is built or downloaded: zoo:// and demo:// are resolved by a real run
        print(cfg.model_dump_json(indent=2))
        return 0
    demo = [key for key in ("train", "eval") if getattr(cfg.data, key).startswith("demo://")]
    cfg = resolve_builtins(_absolute_overrides(cfg, overrides))
    if demo:  # demo data exists only now: the same streaming check of the generated files
        _preflight_data(cfg, only={getattr(cfg.data, key) for key in demo})
    from damoc.workflow.cached_steps import reused_stages
    from damoc.workflow.stage_cache import resume_env
    from damoc_pipelines.local_runner import run_local

    from damoc_pipelines.local_runner import RunFailed

    from damoc import console

    console.info(f"DaMoC: running '{cfg.mode}' on {len(cfg.candidates)} candidate(s) locally via kfp.local -> {out}",
                 event="run_start", mode=cfg.mode, candidates=len(cfg.candidates), out=str(out))
    failed: RunFailed | None = None
    with resume_env(not args.no_resume):  # finished stages with identical inputs are reused (stage cache)
        try:
            selection = run_local(cfg, out)
        except RunFailed as err:  # ranked nothing: not published, the last good run stays current
            failed, selection = err, err.selection
    _print_ranking(selection)
    for warning in selection.get("warnings") or []:  # compression fallback, degenerate winner, thin data
        console.info(f"warning: {warning}", event="warning", text=warning)
    reused, total = reused_stages(selection)
    if reused:
        console.info(f"  resumed: {len(reused)} of {total} stages reused from the stage cache ({', '.join(reused)}); "
                     "--no-resume reruns them", event="resumed", reused=reused, total=total)
    if failed is not None:
        _error(str(failed))
        return 1
    console.info(f"report: {out / 'report.html'} (also report.md; data: selection.json; log: run.log)",
                 event="report", html=str(out / "report.html"))
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


def _preflight(cfg, config_path: Path, overrides: dict[str, Any], local_run: bool = False) -> list[str]:
    """One preflight for `validate`, `run --dry-run` and `run` (before any task or zoo build): relative paths,
    zoo:// / demo:// names and local checkpoints (milliseconds, reported at once); then every checkpoint's
    metadata (AutoConfig, s3 stat; no weights) and the data files' streaming check, reported together.
    Raises ConfigError / DataError (exit 2); prints and returns the notes (what could not be checked here),
    prints the pruning warnings.
    s3:// data without S3 credentials here is a note (a cluster config checked on a workstation), except for
    a local run (local_run), which reads it itself."""
    from damoc.config import ConfigError
    from damoc.data.io import DataError
    from damoc.workflow.preflight import check_checkpoints, check_references, pruning_warnings

    _check_relative_paths(cfg, config_path, overrides)
    problems = check_references(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    report = check_checkpoints(cfg)
    skip = set() if local_run else _s3_data_without_credentials(cfg)
    try:
        _preflight_data(cfg, skip=skip)  # demo:// data is generated by the run and checked then
    except DataError as err:
        if not report.problems:
            raise
        report.problems.append(str(err))
    if report.problems:
        raise ConfigError("\n".join(report.problems))
    data_keys = [f"data.{key}" for key in ("train", "eval") if getattr(cfg.data, key) in skip]
    notes = report.all_notes(data_keys)
    for note in notes:  # only once nothing is wrong: a failure prints just its errors
        print(f"note: {note}", file=sys.stderr)
    for line in pruning_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    return notes


def _s3_data_without_credentials(cfg) -> set[str]:
    from damoc import storage

    remote = {uri for uri in (cfg.data.train, cfg.data.eval) if storage.is_s3(uri)}
    if not remote:
        return set()
    try:
        storage.s3_settings_from_env()
    except storage.StorageError:
        return remote
    return set()


def _preflight_data(cfg, only: set[str] | None = None, skip: set[str] = frozenset()) -> None:
    """Before any task starts: every row the run will read, of both files (local or s3://), in one streaming
    pass each; every bad row is reported (up to 20) with its file, row and field. demo:// files are skipped
    until they are resolved; `only`: check just these files (those a demo:// reference resolved to)."""
    from damoc.data.io import DataError, validate_data
    from damoc.demo.builtin import DEMO_SCHEME
    from damoc.evaluation.tasks import TASKS
    from damoc.storage import StorageError

    fields = cfg.data.fields.model_dump()
    choice = TASKS.get(cfg.data.task).kind == "choice"
    problems: list[str] = []
    for uri, limit, require_options in ((cfg.data.train, cfg.data.max_train_samples, False),
                                        (cfg.data.eval, cfg.data.max_eval_samples, choice)):
        if uri.startswith(DEMO_SCHEME) or uri in skip or (only is not None and uri not in only):
            continue
        try:
            validate_data(uri, fields, limit=limit, require_options=require_options)
        except (DataError, StorageError) as err:  # both files are reported in one go
            problems.append(str(err))
    if problems:  # one line per problem (a missing S3 setup is said once, not per file)
        raise DataError("\n".join(dict.fromkeys(problems)))


def cmd_validate(args: argparse.Namespace) -> int:
    from damoc.config import load_config

    overrides = dict(args.set or [])
    cfg = load_config(args.config, overrides)
    notes = _preflight(cfg, Path(args.config), overrides)  # exactly what `damoc run` checks before it starts
    checked = "some references not checked here (note above)" if notes else "data, checkpoints and names checked"
    print(f"{args.config}: valid ({cfg.mode}, {len(cfg.candidates)} candidates, task {cfg.data.task}; {checked})")
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


def _read_selection(path: str) -> dict[str, Any]:
    from damoc.config import ConfigError
    from damoc.selection.agreement import SelectionFormatError, check_selection

    def no_constant(name: str) -> None:  # json accepts NaN/Infinity by default; a selection.json never has them
        raise ValueError(f"{name} is not valid JSON")

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=no_constant)
    except RecursionError:
        raise ConfigError(f"{path}: cannot read a selection.json: nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: cannot read a selection.json: {err}") from None
    try:
        check_selection(doc)
    except SelectionFormatError as err:
        raise ConfigError(f"{path}: {err}") from None
    return doc


def cmd_compare(args: argparse.Namespace) -> int:
    from damoc.config import ConfigError
    from damoc.selection.agreement import compare_selections, format_summary

    cheap, reference = _read_selection(args.cheap), _read_selection(args.reference)
    result = compare_selections(cheap, reference)
    for line in result["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    # also without a common candidate: it lists the missing and failed ones
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        names = (f"{cheap.get('mode') or 'cheap'} run", f"{reference.get('mode') or 'reference'} run")
        print(format_summary(result, *names))
    if not result["candidates"]:
        raise ConfigError(f"{args.cheap} and {args.reference} rank no candidate in common (status ok in both): "
                          "nothing to compare (missing/failed lists above)")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from damoc.config import load_config
    from damoc.estimate import Assumptions, estimate, format_table

    cfg = load_config(args.config, dict(args.set or []))
    _check_relative_paths(cfg, Path(args.config), dict(args.set or []))
    est = estimate(cfg, Assumptions(gpu_tflops=args.gpu_tflops, gate_pass=args.gate_pass,
                                    prune_share=args.prune_share, compression_kept=args.compression_kept,
                                    sample_rows=args.sample_rows))
    print(json.dumps(est, indent=2) if args.json else format_table(est))
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


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

    val = sub.add_parser("validate", help="check a run configuration as `damoc run` does before it starts (config, "
                         "data files, checkpoints' config and tokenizer, zoo names) and exit")
    val.add_argument("config", help="run configuration YAML")
    val.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a config key, as for `damoc run` (repeatable)")
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

    demo.add_argument("--task", choices=list(DEMO_TASKS), default="qa_long",
                      help="which demo data set (default qa_long; README, CLI, lists what each is)")
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

    from damoc.cost import DEFAULT_GPU_TFLOPS, PAPER_GATE_PASS

    est = sub.add_parser("estimate", help="projected FLOPs, GPU-hours and wall time of the run and of grid search, "
                         "before running (parameter counts from configs, no weights loaded)")
    est.add_argument("config", help="run configuration YAML")
    est.add_argument("--set", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a config key, as for `damoc run`")
    est.add_argument("--gpu-tflops", type=float, default=DEFAULT_GPU_TFLOPS,
                     help="sustained training throughput per GPU in TFLOP/s (default %(default)s: ~40%% of an "
                     "H100's 989 dense bf16 peak)")
    est.add_argument("--gate-pass", type=_fraction, default=PAPER_GATE_PASS, help="assumed share of compressed samples "
                     "passing the BERTScore gate; failures train on their original text (default 0.92, the paper's)")
    est.add_argument("--compression-kept", type=_fraction, help="expected kept fraction of the text tokens "
                     "(default: gate-pass x compression.rate + 1 - gate-pass)")
    est.add_argument("--prune-share", type=_fraction, help="share of layers pruned on candidates with a base_path "
                     "(default: pruning.target_fraction under rule=fraction, else the paper's 0.25)")
    est.add_argument("--sample-rows", type=_positive_int, default=200, help="rows tokenized per candidate")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.set_defaults(func=cmd_estimate)

    cmp_ = sub.add_parser("compare", help="agreement of a DaMoC selection with a grid-search one: top-1, tolerant "
                          "top-1, Kendall tau, Spearman rho, time saved")
    cmp_.add_argument("cheap", help="selection.json of the DaMoC run")
    cmp_.add_argument("reference", help="selection.json of the grid-search run (a warning if it is not one)")
    cmp_.add_argument("--json", action="store_true", help="print the full comparison as JSON (for scripts)")
    cmp_.set_defaults(func=cmd_compare)
    return p


def _default_threads() -> None:
    """One intra-op thread pool per concurrent task: kfp.local runs two loop iterations at a time, and
    oversubscribed OpenMP pools slow tiny-model steps by 50-100x on small VMs (measured: 0.045 s vs 3.4 s)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _error(text: str) -> None:
    from damoc.storage import redact_uri

    print(f"error: {redact_uri(strip_ansi(text))}", file=sys.stderr)  # never a password from a URI


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok; 1 the run failed (one line naming the task and its log); 2 bad input found before or
    while validating (one `error:` line, or one per bad row); 130 Ctrl-C, 143 SIGTERM.
    No traceback unless --debug (or DAMOC_DEBUG=1)."""
    _default_threads()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DAMOC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
    except BadOverride as err:
        if debug:
            raise
        _error(str(err))
        return 2
    from damoc.config import ConfigError
    from damoc.data.io import DataError
    from damoc.storage import StorageError
    from damoc_pipelines.local_runner import ForeignOutput, OutputLocked, TaskError

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
    except (ConfigError, DataError, StorageError, UsageError, OutputLocked, ForeignOutput) as err:
        if debug:
            raise
        _error(str(err))
        return 2
    except TaskError as err:  # an internal failure once the run started: never the bad-input code
        if debug:
            raise
        _error(f"run failed: {err}; earlier results in the output directory were left as they were")
        return 1
    except OSError as err:  # before the run started, e.g. an output directory that cannot be written
        if debug:
            raise
        _error(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}")
        return 2
    except Exception as err:  # noqa: BLE001 — kfp.local reports a failed task as RuntimeError; any other bug
        if debug:
            raise
        first = strip_ansi(str(err)).strip().splitlines()
        _error(f"run failed: {type(err).__name__}: {first[0] if first else ''} (earlier results in the output "
               "directory were left as they were; add --debug for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
