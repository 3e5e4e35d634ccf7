"""`damoc upload | submit | schedule | status`: drive a Kubeflow Pipelines installation.

Registered on the main parser by `add_cluster_commands(subparsers)`. The KFP endpoint and credentials
come from DAMOC_KFP_HOST, DAMOC_KFP_NAMESPACE and DAMOC_KFP_TOKEN / DAMOC_KFP_TOKEN_FILE (see
damoc/cluster/kfp_client.py); there is deliberately no --token option, so a token never lands in shell
history, process listings or CI logs. Exit codes: 0 ok, 2 bad input or a failed KFP call (one line on
stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ENV_HELP = ("Connection: DAMOC_KFP_HOST (e.g. http://ml-pipeline.kubeflow:8888), DAMOC_KFP_NAMESPACE "
            "(multi-user Kubeflow), DAMOC_KFP_TOKEN or DAMOC_KFP_TOKEN_FILE. Exit codes: 0 ok, 2 error.")
DEFAULT_SCHEDULE_NAME = "damoc-scheduled"


def _pipeline_arguments(config_path: str) -> dict[str, Any]:
    from damoc import config
    from damoc.config_params import to_pipeline_arguments

    cfg = config.load_config(config_path)
    return dict(to_pipeline_arguments(cfg))


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn every expected failure into one `error:` line on stderr and exit status 2."""
    def run(args: argparse.Namespace) -> int:
        from damoc.cluster.kfp_client import KfpError, _scrub

        try:
            return fn(args)
        except (KfpError, ValueError, OSError) as err:  # ConfigError is a ValueError
            print(f"error: {_scrub(str(err))}", file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def cmd_upload(args: argparse.Namespace) -> int:
    import tempfile

    from damoc.cluster import kfp_client as k
    from damoc.cluster.pipeline_images import rewrite_package

    package = Path(args.package) if args.package else k.default_package_path()
    if not package.is_file():
        raise k.KfpError(f"pipeline package not found: {package} (run `damoc compile` or pass --package)")
    with tempfile.TemporaryDirectory(prefix="damoc-upload-") as tmp:
        # Another image is another package: its content-derived version name differs, so it adds a version.
        package = rewrite_package(package, Path(tmp) / package.name, component=args.image_component,
                                  training=args.image_training)
        client = k.make_client()
        res = k.upload_pipeline(client, package, name=args.name, version=args.version)
    what = "uploaded new version" if res.created_version else "version already present:"
    print(f"pipeline {args.name!r}: {what} {res.version_name!r} "
          f"(pipeline_id={res.pipeline_id}, version_id={res.pipeline_version_id})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from damoc.cluster import kfp_client as k

    params = _pipeline_arguments(args.config)
    run_name = args.run_name or f"damoc-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    client = k.make_client()
    run_id = k.submit_run(client, params, experiment=args.experiment, run_name=run_name,
                          pipeline_name=args.pipeline, version=args.pipeline_version,
                          package_path=args.package, service_account=args.service_account,
                          enable_caching=False if args.no_cache else None)
    print(f"submitted run {run_name!r}: run_id={run_id}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from damoc.cluster import kfp_client as k

    params = _pipeline_arguments(args.config)
    k.normalize_cron(args.cron)  # a bad expression fails before any connection
    client = k.make_client()
    res = k.schedule_run(client, params, args.cron, name=args.name, experiment=args.experiment,
                         pipeline_name=args.pipeline, version=args.pipeline_version,
                         max_concurrency=args.max_concurrency, service_account=args.service_account,
                         enabled=not args.disabled, enable_caching=False if args.no_cache else None)
    print(f"recurring run {args.name!r} {res.action}: id={res.recurring_run_id} cron='{res.cron}' "
          f"version_id={res.pipeline_version_id}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from damoc.cluster import kfp_client as k

    status = k.run_status(k.make_client(), args.run_id)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{status['run_id']}  {status['state']}  {status['name']}"
              + (f"  error: {status['error']}" if status["error"] else ""))
    return 0


def _pipeline_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default="damoc-selection", metavar="NAME",
                   help="registered pipeline name (default %(default)s)")
    p.add_argument("--pipeline-version", metavar="VERSION", help="pipeline version name (default: the newest)")


def _cache_switch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true",
                   help="run every task afresh. By default KFP's cache serves a task only for identical inputs, "
                   "and the data-reading tasks are keyed on the data's content (ETag/hash), so a rewritten "
                   "data file is read again")


def add_cluster_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register upload, submit, schedule and status on an existing `add_subparsers()` object."""
    up = subparsers.add_parser(
        "upload", help="register the compiled pipeline in KFP (idempotent)", epilog=ENV_HELP,
        description="Create the pipeline if absent and add a version; a version of that name is left alone.")
    up.add_argument("--name", default="damoc-selection", help="pipeline name (default %(default)s)")
    up.add_argument("--version", help="version name (default sha-<hash of the package>: an unchanged "
                                      "package adds nothing)")
    up.add_argument("--package", help="compiled pipeline YAML (default $DAMOC_PIPELINE_PACKAGE or "
                                      "pipelines/compiled/damoc_pipeline.yaml)")
    up.add_argument("--image-component", metavar="IMAGE",
                    help="image of the CPU tasks (validation, data stages, pruning, ranking) instead of the "
                    "package's (e.g. a registry mirror of ghcr.io/damoc-project/damoc)")
    up.add_argument("--image-training", metavar="IMAGE",
                    help="image of the GPU tasks (fine-tune, evaluate) instead of the package's (the CUDA "
                    "training image, docker/Dockerfile.train)")
    up.set_defaults(func=_guarded(cmd_upload))

    sub = subparsers.add_parser("submit", help="start one KFP run from a run configuration", epilog=ENV_HELP)
    sub.add_argument("config", help="run configuration YAML (data and models must be reachable from the "
                                    "cluster, e.g. s3://)")
    sub.add_argument("--experiment", default="damoc", help="KFP experiment, created if absent (default %(default)s)")
    sub.add_argument("--run-name", help="display name (default damoc-<config>-<timestamp>)")
    _pipeline_ref(sub)
    sub.add_argument("--package", help="send this compiled YAML inline instead of a registered version")
    sub.add_argument("--service-account", default=os.environ.get("DAMOC_SERVICE_ACCOUNT") or None,
                     help="Kubernetes ServiceAccount for the run's pods: the Helm chart's runner account "
                     "(serviceAccount.name) has exactly the RBAC the pipeline needs (default: "
                     "$DAMOC_SERVICE_ACCOUNT, else the namespace's KFP default)")
    _cache_switch(sub)
    sub.set_defaults(func=_guarded(cmd_submit))

    sch = subparsers.add_parser(
        "schedule", help="create or update a recurring KFP run (idempotent)", epilog=ENV_HELP,
        description="The recurring run is keyed by --name in --experiment: an identical one is left alone, "
                    "a different one is replaced.")
    sch.add_argument("config", help="run configuration YAML")
    sch.add_argument("--cron", required=True, metavar="EXPR",
                     help="5-field cron (min hour day month weekday) or KFP's 6-field form, seconds first")
    sch.add_argument("--name", default=DEFAULT_SCHEDULE_NAME, help="recurring run name (default %(default)s)")
    sch.add_argument("--experiment", default="damoc", help="KFP experiment (default %(default)s)")
    _pipeline_ref(sch)
    sch.add_argument("--max-concurrency", type=int, default=1, help="runs allowed at once (default 1)")
    sch.add_argument("--service-account", default=os.environ.get("DAMOC_SERVICE_ACCOUNT") or None,
                     help="Kubernetes ServiceAccount for the runs' pods: the Helm chart's runner account "
                     "(serviceAccount.name) has exactly the RBAC the pipeline needs (default: "
                     "$DAMOC_SERVICE_ACCOUNT, else the namespace's KFP default)")
    sch.add_argument("--disabled", action="store_true", help="create it paused")
    _cache_switch(sch)
    sch.set_defaults(func=_guarded(cmd_schedule))

    st = subparsers.add_parser("status", help="state of a KFP run", epilog=ENV_HELP)
    st.add_argument("run_id")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(func=_guarded(cmd_status))


def main(argv: list[str] | None = None) -> int:
    """`python -m damoc.cli_cluster ...`: the same commands without the rest of the CLI (hook Jobs use it)."""
    parser = argparse.ArgumentParser(prog="damoc", description="DaMoC on Kubeflow Pipelines", epilog=ENV_HELP)
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
