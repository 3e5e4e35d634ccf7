"""Talk to a Kubeflow Pipelines (v2beta1) API: upload the compiled pipeline, submit and schedule runs.

Connection settings come from the environment only, never from arguments that could be logged:

- ``DAMOC_KFP_HOST``        API endpoint, e.g. ``http://ml-pipeline.kubeflow:8888`` (in cluster) or
                            ``https://kubeflow.example.com/pipeline`` (through the Kubeflow gateway).
- ``DAMOC_KFP_NAMESPACE``   profile namespace in multi-user Kubeflow (optional in single-user KFP).
- ``DAMOC_KFP_TOKEN``       bearer token, or
- ``DAMOC_KFP_TOKEN_FILE``  a file holding it, re-read on every request (a projected ServiceAccount token
                            with audience ``pipelines.kubeflow.org`` rotates under a running pod).

The token is handed to ``kfp.Client`` and is never printed: every error leaving this module is a
``KfpError`` with one line, scrubbed of the token.

Pipeline arguments are whatever ``damoc.config.to_pipeline_arguments(cfg)`` returns; this module treats
them as an opaque mapping of parameter name to JSON value.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

ENV_HOST = "DAMOC_KFP_HOST"
ENV_NAMESPACE = "DAMOC_KFP_NAMESPACE"
ENV_TOKEN = "DAMOC_KFP_TOKEN"
ENV_TOKEN_FILE = "DAMOC_KFP_TOKEN_FILE"
ENV_PACKAGE = "DAMOC_PIPELINE_PACKAGE"

DEFAULT_PIPELINE_NAME = "damoc-selection"
DEFAULT_EXPERIMENT = "damoc"
PACKAGE_FILE = "damoc_pipeline.yaml"
_PAGE = 100


class KfpError(RuntimeError):
    """A KFP operation that failed; the message is one line and never contains the token."""


@dataclass(frozen=True)
class UploadResult:
    pipeline_id: str
    pipeline_version_id: str
    version_name: str
    created_pipeline: bool
    created_version: bool


@dataclass(frozen=True)
class ScheduleResult:
    recurring_run_id: str
    action: str  # "created" | "updated" | "unchanged"
    cron: str
    pipeline_version_id: str


# ----------------------------------------------------------------------------- connection

def _secret_values() -> list[str]:
    values = [os.environ.get(ENV_TOKEN, "").strip()]
    path = os.environ.get(ENV_TOKEN_FILE, "").strip()
    if path:
        try:
            values.append(Path(path).read_text().strip())
        except OSError:
            pass
    return [v for v in values if len(v) >= 4]


def _scrub(text: str) -> str:
    for secret in _secret_values():
        text = text.replace(secret, "***")
    return " ".join(text.split())


def make_client():
    """A ``kfp.Client`` for the endpoint described by the DAMOC_KFP_* environment variables."""
    host = os.environ.get(ENV_HOST, "").strip()
    if not host:
        raise KfpError(f"{ENV_HOST} is not set; export the KFP API endpoint, e.g. "
                       f"{ENV_HOST}=http://ml-pipeline.kubeflow:8888")
    if not host.startswith(("http://", "https://")):
        from damoc.storage import redact_uri  # never echo a user:password@ in it

        raise KfpError(f"{ENV_HOST}={redact_uri(host)!r}: must start with http:// or https://")
    if "@" in host.split("://", 1)[1].split("/", 1)[0]:
        raise KfpError(f"{ENV_HOST} must not contain credentials; use {ENV_TOKEN} or {ENV_TOKEN_FILE}")
    token = os.environ.get(ENV_TOKEN, "").strip()
    token_file = os.environ.get(ENV_TOKEN_FILE, "").strip()
    if token and token_file:
        raise KfpError(f"set only one of {ENV_TOKEN} and {ENV_TOKEN_FILE}")
    namespace = os.environ.get(ENV_NAMESPACE, "").strip()

    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    kwargs: dict[str, Any] = {"host": host.rstrip("/")}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
    elif token_file:
        path = Path(token_file)
        if not path.is_file():
            raise KfpError(f"{ENV_TOKEN_FILE} points to {token_file!r}, which is not a readable file")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
            client = kfp.Client(**kwargs)
    except Exception as err:  # noqa: BLE001 - healthz retries, bad config: report one line
        raise KfpError(f"cannot connect to KFP at {host}: {_describe(err)}") from None
    return client


def _describe(err: BaseException) -> str:
    """One scrubbed line for an ApiException, a connection error or anything else."""
    status = getattr(err, "status", None)
    if status is not None and hasattr(err, "body"):
        detail = ""
        try:
            body = json.loads(err.body or "{}")
            detail = body.get("message") or body.get("error") or ""
        except (TypeError, ValueError):
            detail = str(err.body or "")[:200]
        hint = {401: " (token missing or expired)", 403: " (the token's identity lacks KFP permissions "
                "in this namespace)", 404: " (wrong endpoint path?)"}.get(status, "")
        return _scrub(f"HTTP {status} {getattr(err, 'reason', '') or ''}{hint}: {detail}".rstrip(": "))
    text = str(err) or type(err).__name__
    if "Max retries exceeded" in text or "Connection refused" in text or "NewConnectionError" in text:
        return _scrub("connection refused or host unreachable")
    return _scrub(f"{type(err).__name__}: {text}")[:300]


def _call(action: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KfpError:
        raise
    except Exception as err:  # noqa: BLE001 - generated client raises many types
        raise KfpError(f"{action} failed: {_describe(err)}") from None


def _namespace(client) -> str | None:
    ns = client.get_user_namespace() if hasattr(client, "get_user_namespace") else ""
    return ns or None


def _eq_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


# ----------------------------------------------------------------------------- pipelines

def default_package_path() -> Path:
    """$DAMOC_PIPELINE_PACKAGE, else ./pipelines/compiled/, else the installed `pipelines` package's."""
    env = os.environ.get(ENV_PACKAGE, "").strip()
    if env:
        return Path(env)
    local = Path("pipelines") / "compiled" / PACKAGE_FILE
    if local.is_file():
        return local
    spec = importlib.util.find_spec("pipelines")
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "compiled" / PACKAGE_FILE
            if candidate.is_file():
                return candidate
    return local


def package_version_name(package_path: str | Path, prefix: str = "sha") -> str:
    """A version name derived from the package content: the same file never makes a second version."""
    digest = hashlib.sha256(Path(package_path).read_bytes()).hexdigest()
    return f"{prefix}-{digest[:12]}"


def find_pipeline_id(client, name: str) -> str | None:
    result = _call("listing pipelines", client.list_pipelines, page_size=_PAGE,
                   filter=_eq_filter("display_name", name), namespace=_namespace(client))
    matches = [p for p in (result.pipelines or []) if p.display_name == name]
    if len(matches) > 1:
        raise KfpError(f"{len(matches)} pipelines are named {name!r}; delete the duplicates or use --name")
    return matches[0].pipeline_id if matches else None


def find_version(client, pipeline_id: str, version_name: str | None = None):
    """The version called `version_name`, or the newest one when it is None; None if there is none."""
    if version_name:
        result = _call("listing pipeline versions", client.list_pipeline_versions, pipeline_id=pipeline_id,
                       page_size=_PAGE, filter=_eq_filter("display_name", version_name))
        matches = [v for v in (result.pipeline_versions or []) if v.display_name == version_name]
        return matches[0] if matches else None
    result = _call("listing pipeline versions", client.list_pipeline_versions, pipeline_id=pipeline_id,
                   page_size=1, sort_by="created_at desc")
    versions = result.pipeline_versions or []
    return versions[0] if versions else None


def upload_pipeline(client, package_path: str | Path, name: str = DEFAULT_PIPELINE_NAME,
                    version: str | None = None, description: str | None = None) -> UploadResult:
    """Upload the compiled pipeline as version `version` of pipeline `name`; idempotent.

    The pipeline is created (without versions) when absent; a version of that name that already exists
    is left alone. `version` defaults to a name derived from the package content, so re-running with an
    unchanged file changes nothing and a changed file adds exactly one version.
    """
    package = Path(package_path)
    if not package.is_file():
        raise KfpError(f"pipeline package not found: {package} (compile it with `damoc compile` or pass "
                       f"--package)")
    version = version or package_version_name(package)
    pipeline_id = find_pipeline_id(client, name)
    created_pipeline = False
    if pipeline_id is None:
        from kfp_server_api import V2beta1Pipeline

        body = V2beta1Pipeline(display_name=name, description=description, namespace=_namespace(client))
        pipeline = _call(f"creating pipeline {name!r}", client.pipelines.pipeline_service_create_pipeline,
                         pipeline=body)
        pipeline_id, created_pipeline = pipeline.pipeline_id, True
    existing = None if created_pipeline else find_version(client, pipeline_id, version)
    if existing is not None:
        return UploadResult(pipeline_id, existing.pipeline_version_id, version, False, False)
    uploaded = _call(f"uploading version {version!r} of {name!r}", client.upload_pipeline_version,
                     str(package), pipeline_version_name=version, pipeline_id=pipeline_id,
                     description=description)
    return UploadResult(pipeline_id, uploaded.pipeline_version_id, version, created_pipeline, True)


def _resolve_version(client, pipeline_name: str, version: str | None) -> tuple[str, str]:
    pipeline_id = find_pipeline_id(client, pipeline_name)
    if pipeline_id is None:
        raise KfpError(f"pipeline {pipeline_name!r} is not registered; run `damoc upload` first")
    found = find_version(client, pipeline_id, version)
    if found is None:
        which = f"version {version!r}" if version else "any version"
        raise KfpError(f"pipeline {pipeline_name!r} has no {which}; run `damoc upload` first")
    return pipeline_id, found.pipeline_version_id


def _experiment_id(client, experiment: str) -> str:
    exp = _call(f"creating experiment {experiment!r}", client.create_experiment, name=experiment,
                namespace=_namespace(client))
    return exp.experiment_id


# ----------------------------------------------------------------------------- runs

def _spec_docs(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A version's stored spec as package documents: KFP keeps {pipeline_spec, platform_spec} when the
    package had a platform part, else the pipeline spec alone."""
    if "pipeline_spec" in spec:
        docs = [dict(spec["pipeline_spec"])]
        if spec.get("platform_spec"):
            docs.append(dict(spec["platform_spec"]))
        return docs
    return [dict(spec)]


def _caching_off(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task's caching switched off, the ParallelFor's tasks included (kfp.Client's own override only
    reaches the root DAG's tasks, so the per-candidate tasks would stay cached)."""
    spec = docs[0]
    dags = [spec.get("root", {})] + list((spec.get("components") or {}).values())
    for dag in dags:
        for task in ((dag.get("dag") or {}).get("tasks") or {}).values():
            task["cachingOptions"] = {**(task.get("cachingOptions") or {}), "enableCache": False}
    return docs


@contextlib.contextmanager
def _uncached_package(docs: list[dict[str, Any]]) -> Iterator[str]:
    import yaml

    with tempfile.TemporaryDirectory(prefix="damoc-nocache-") as tmp:
        path = Path(tmp) / PACKAGE_FILE
        path.write_text(yaml.safe_dump_all(_caching_off(docs), sort_keys=False), encoding="utf-8")
        yield str(path)


@contextlib.contextmanager
def _version_package(client, pipeline_id: str, version_id: str) -> Iterator[str]:
    """A registered version's spec as a package file with caching off. KFP applies a submission-time caching
    switch only to a package sent inline (kfp.Client ignores enable_caching for a version reference), so
    caching off means sending the registered version's own spec inline."""
    version = _call(f"getting pipeline version {version_id}", client.get_pipeline_version,
                    pipeline_id=pipeline_id, pipeline_version_id=version_id)
    spec = getattr(version, "pipeline_spec", None)
    if not spec:
        raise KfpError(f"pipeline version {version_id} has no pipeline spec to run without cache")
    with _uncached_package(_spec_docs(spec)) as path:
        yield path


def _no_cache_note(version_id: str) -> str:
    return f"damoc: pipeline_version_id={version_id}, caching off"


def submit_run(client, pipeline_arguments: Mapping[str, Any], experiment: str = DEFAULT_EXPERIMENT,
               run_name: str | None = None, *, pipeline_name: str = DEFAULT_PIPELINE_NAME,
               version: str | None = None, package_path: str | Path | None = None,
               service_account: str | None = None, enable_caching: bool | None = None) -> str:
    """Start one run and return its id.

    By default the run uses a registered pipeline version (`version`, else the newest of
    `pipeline_name`), so the KFP UI links the run to it; with `package_path` the compiled spec is sent
    inline instead (nothing needs to be uploaded first). enable_caching: None keeps the package's per-task
    settings (data-keyed caching); False runs every task afresh (a registered version's spec is then sent
    inline, the only form KFP applies the switch to).
    """
    run_name = run_name or "damoc-run"
    experiment_id = _experiment_id(client, experiment)
    common = dict(experiment_id=experiment_id, job_name=run_name, params=dict(pipeline_arguments),
                  service_account=service_account, enable_caching=enable_caching)
    if package_path is not None:
        if enable_caching is False:
            import yaml

            docs = [d for d in yaml.safe_load_all(Path(package_path).read_text(encoding="utf-8")) if d]
            with _uncached_package(docs) as inline:
                run = _call(f"creating run {run_name!r}", client.run_pipeline, pipeline_package_path=inline,
                            **common)
            return run.run_id
        run = _call(f"creating run {run_name!r}", client.run_pipeline, pipeline_package_path=str(package_path),
                    **common)
        return run.run_id
    pipeline_id, version_id = _resolve_version(client, pipeline_name, version)
    if enable_caching is False:
        with _version_package(client, pipeline_id, version_id) as inline:
            run = _call(f"creating run {run_name!r}", client.run_pipeline, pipeline_package_path=inline, **common)
        return run.run_id
    run = _call(f"creating run {run_name!r}", client.run_pipeline, pipeline_id=pipeline_id, version_id=version_id,
                **common)
    return run.run_id


def normalize_cron(expr: str) -> str:
    """KFP (robfig/cron) wants 6 fields, seconds first; accept the usual 5-field form too."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise KfpError(f"cron expression {expr!r} must have 5 fields (min hour day month weekday) or 6 "
                       "(with seconds first), e.g. '0 3 * * 1'")
    return " ".join(fields)


def _canonical(params: Mapping[str, Any] | None) -> str:
    """Parameters as KFP returns them (protobuf Values: every number a float) for comparison."""
    def norm(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, Mapping):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return str(v)
    return json.dumps(norm(dict(params or {})), sort_keys=True)


def _noted_version(description: str | None) -> str | None:
    """The registered version a caching-off recurring run was made from (it carries the spec inline)."""
    text = description or ""
    prefix, suffix = "damoc: pipeline_version_id=", ", caching off"
    return text[len(prefix):-len(suffix)] if text.startswith(prefix) and text.endswith(suffix) else None


def _find_recurring_run(client, experiment_id: str, name: str):
    result = _call("listing recurring runs", client.list_recurring_runs, experiment_id=experiment_id,
                   page_size=_PAGE, filter=_eq_filter("display_name", name))
    matches = [r for r in (result.recurring_runs or []) if r.display_name == name]
    return matches


def schedule_run(client, pipeline_arguments: Mapping[str, Any], cron: str, *, name: str = "damoc-scheduled",
                 experiment: str = DEFAULT_EXPERIMENT, pipeline_name: str = DEFAULT_PIPELINE_NAME,
                 version: str | None = None, max_concurrency: int = 1, no_catchup: bool = True,
                 service_account: str | None = None, enabled: bool = True,
                 enable_caching: bool | None = None) -> ScheduleResult:
    """Create or update the recurring run `name` in `experiment`; idempotent.

    KFP has no update call for recurring runs, so a changed schedule (cron, pipeline version, arguments,
    concurrency, enabled) is replaced: the new one is created first, then the old one deleted, so a
    failure never leaves the experiment without a schedule. An identical one is left alone.
    enable_caching: None keeps the package's per-task settings (data-keyed caching), False turns caching off.
    """
    cron6 = normalize_cron(cron)
    experiment_id = _experiment_id(client, experiment)
    pipeline_id, version_id = _resolve_version(client, pipeline_name, version)
    wanted = {"cron": cron6, "version": version_id, "params": _canonical(pipeline_arguments),
              "max_concurrency": int(max_concurrency), "enabled": bool(enabled),
              "no_cache": enable_caching is False}
    no_cache = enable_caching is False
    existing = _find_recurring_run(client, experiment_id, name)
    for rr in existing:
        have = {
            "cron": getattr(getattr(rr.trigger, "cron_schedule", None), "cron", None),
            "version": getattr(rr.pipeline_version_reference, "pipeline_version_id", None)
            or _noted_version(getattr(rr, "description", None)),
            "params": _canonical(getattr(rr.runtime_config, "parameters", None)),
            "max_concurrency": int(rr.max_concurrency or 0),
            "enabled": str(rr.mode or "").upper() == "ENABLE",
            "no_cache": _noted_version(getattr(rr, "description", None)) is not None,
        }
        if have == wanted and len(existing) == 1:
            return ScheduleResult(rr.recurring_run_id, "unchanged", cron6, version_id)
    common = dict(experiment_id=experiment_id, job_name=name, cron_expression=cron6,
                  max_concurrency=max_concurrency, no_catchup=no_catchup, params=dict(pipeline_arguments),
                  enabled=enabled, service_account=service_account)
    if no_cache:
        with _version_package(client, pipeline_id, version_id) as inline:
            created = _call(f"creating recurring run {name!r}", client.create_recurring_run,
                            pipeline_package_path=inline, enable_caching=False,
                            description=_no_cache_note(version_id), **common)
    else:
        created = _call(f"creating recurring run {name!r}", client.create_recurring_run,
                        pipeline_id=pipeline_id, version_id=version_id, **common)
    for rr in existing:
        _call(f"deleting the previous recurring run {rr.recurring_run_id}", client.delete_recurring_run,
              recurring_run_id=rr.recurring_run_id)
    return ScheduleResult(created.recurring_run_id, "updated" if existing else "created", cron6, version_id)


def run_status(client, run_id: str) -> dict[str, Any]:
    """State of one run: {run_id, name, state, created_at, finished_at, error}."""
    run = _call(f"getting run {run_id}", client.get_run, run_id=run_id)
    error = getattr(run, "error", None)
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": str(run.state or "UNKNOWN"),
        "created_at": str(run.created_at) if run.created_at else None,
        "finished_at": str(run.finished_at) if getattr(run, "finished_at", None) else None,
        "error": _scrub(str(getattr(error, "message", "") or "")) or None,
    }
