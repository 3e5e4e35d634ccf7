"""damoc upload / submit / schedule / status against a fake KFP v2beta1 REST API.

The fake runs on 127.0.0.1 in a thread and records what the real `kfp.Client` sends (the generated
kfp_server_api code does the HTTP), so these tests pin the wire contract: paths, query strings, bodies,
the multipart upload, and the bearer token in the Authorization header — and that the token never shows
up in anything printed.
"""
from __future__ import annotations

import argparse
import json
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

kfp = pytest.importorskip("kfp")

from damoc import cli_cluster  # noqa: E402
from damoc.cluster import kfp_client as k  # noqa: E402

TOKEN = "s3cr3t-t0ken-value-0123456789"
API = "/apis/v2beta1"
PACKAGE = Path(__file__).resolve().parents[1] / "pipelines" / "compiled" / "damoc_pipeline.yaml"
NOW = "2026-11-29T12:00:00Z"
# Opaque pipeline arguments (the config schema is owned elsewhere): mixed JSON types on purpose.
ARGS = {"mode": "damoc", "ratio": 0.2, "steps": 3, "enabled": True, "items": [{"name": "a", "path": "s3://b/a"}]}


class FakeKfp:
    """State of a tiny KFP: pipelines, versions, experiments, runs, recurring runs; every request logged."""

    def __init__(self):
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.fail_next: tuple[int, str] | None = None

    @staticmethod
    def _matches(item: dict, query: dict) -> bool:
        raw = query.get("filter", [""])[0]
        if not raw:
            return True
        for pred in json.loads(raw)["predicates"]:
            assert pred["operation"] in ("EQUALS", 1)  # kfp itself sends the enum number
            if item.get(pred["key"]) != pred["stringValue"]:
                return False
        return True

    def handle(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple[int, dict]:
        if self.fail_next:
            status, message = self.fail_next
            self.fail_next = None
            return status, {"error": message, "message": message, "code": 7}
        parts = path.removeprefix(API).strip("/").split("/")
        if parts == ["healthz"]:
            return 200, {"multi_user": False}
        if parts == ["pipelines"] and method == "GET":
            items = [p for p in self.pipelines.values() if self._matches(p, query)]
            return 200, {"pipelines": items, "total_size": len(items)}
        if parts == ["pipelines"] and method == "POST":
            data = json.loads(body)
            pid = str(uuid.uuid4())
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": data["display_name"],
                                   "namespace": data.get("namespace", ""), "created_at": NOW}
            self.versions[pid] = []
            return 200, self.pipelines[pid]
        if parts == ["pipelines", "upload_version"] and method == "POST":
            pid = query["pipelineid"][0]
            msg = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body)
            (filepart,) = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition")
                           == "uploadfile"]
            vid = str(uuid.uuid4())
            version = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": query["name"][0],
                       "created_at": NOW, "_file": filepart.get_content()}
            self.versions[pid].insert(0, version)  # newest first, as sort_by=created_at desc asks
            return 200, {k_: v for k_, v in version.items() if not k_.startswith("_")}
        if len(parts) == 4 and parts[0] == "pipelines" and parts[2] == "versions" and method == "GET":
            import yaml

            (version,) = [v for v in self.versions.get(parts[1], []) if v["pipeline_version_id"] == parts[3]]
            docs = list(yaml.safe_load_all(version["_file"]))
            spec = {"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0]
            return 200, {**{k_: v for k_, v in version.items() if not k_.startswith("_")}, "pipeline_spec": spec}
        if len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions" and method == "GET":
            items = [{k_: v for k_, v in x.items() if not k_.startswith("_")}
                     for x in self.versions.get(parts[1], []) if self._matches(x, query)]
            size = int(query.get("page_size", ["10"])[0])
            return 200, {"pipeline_versions": items[:size], "total_size": len(items)}
        if parts == ["experiments"] and method == "GET":
            items = [e for e in self.experiments.values() if self._matches(e, query)]
            return 200, {"experiments": items, "total_size": len(items)}
        if parts == ["experiments"] and method == "POST":
            data = json.loads(body)
            eid = str(uuid.uuid4())
            self.experiments[eid] = {"experiment_id": eid, "display_name": data["display_name"],
                                     "namespace": data.get("namespace") or "", "created_at": NOW}
            return 200, self.experiments[eid]
        if parts == ["runs"] and method == "POST":
            data = json.loads(body)
            rid = str(uuid.uuid4())
            self.runs[rid] = {**data, "run_id": rid, "state": "PENDING", "created_at": NOW}
            return 200, self.runs[rid]
        if len(parts) == 2 and parts[0] == "runs" and method == "GET":
            if parts[1] not in self.runs:
                return 404, {"error": f"run {parts[1]} not found", "message": f"run {parts[1]} not found"}
            return 200, self.runs[parts[1]]
        if parts == ["recurringruns"] and method == "GET":
            items = [r for r in self.recurring.values() if self._matches(r, query)
                     and r["experiment_id"] == query.get("experiment_id", [r["experiment_id"]])[0]]
            return 200, {"recurringRuns": items, "total_size": len(items)}
        if parts == ["recurringruns"] and method == "POST":
            data = json.loads(body)
            rid = str(uuid.uuid4())
            self.recurring[rid] = {**data, "recurring_run_id": rid, "created_at": NOW, "status": "ENABLED"}
            return 200, self.recurring[rid]
        if len(parts) == 2 and parts[0] == "recurringruns" and method == "DELETE":
            self.recurring.pop(parts[1])
            return 200, {}
        return 404, {"error": f"no route {method} {path}", "message": "not found"}


@pytest.fixture()
def fake_kfp(monkeypatch, tmp_path):
    state = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = parse_qs(url.query)
            state.requests.append({"method": self.command, "path": url.path, "query": query, "body": body,
                                   "auth": self.headers.get("Authorization"),
                                   "content_type": self.headers.get("Content-Type", "")})
            status, payload = state.handle(self.command, url.path, query, body, self.headers)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # kfp.Client keeps a context file under ~/.config/kfp; never touch the real home.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in (k.ENV_TOKEN_FILE, k.ENV_PACKAGE, "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(k.ENV_HOST, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv(k.ENV_NAMESPACE, "team-a")
    monkeypatch.setenv(k.ENV_TOKEN, TOKEN)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture()
def opaque_config(monkeypatch, tmp_path):
    """The CLI reads configs through damoc.config; stand in for it so these tests do not depend on keys."""
    import damoc.config as config

    path = tmp_path / "run.yaml"
    path.write_text("anything: true\n")
    seen = []
    monkeypatch.setattr(config, "load_config", lambda p: seen.append(str(p)) or {"cfg": str(p)})
    import damoc.config_params as config_params

    monkeypatch.setattr(config_params, "to_pipeline_arguments", lambda cfg: dict(ARGS))
    return path


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="damoc")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_cluster.add_cluster_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _calls(state: FakeKfp, method: str, suffix: str) -> list[dict]:
    return [r for r in state.requests if r["method"] == method and r["path"] == API + suffix]


def _assert_token_only_in_headers(state: FakeKfp, out: str) -> None:
    assert TOKEN not in out
    assert state.requests
    for r in state.requests:
        assert r["auth"] == f"Bearer {TOKEN}", (r["method"], r["path"], r["auth"])
        assert TOKEN.encode() not in r["body"]
        assert TOKEN not in json.dumps(r["query"])


# ----------------------------------------------------------------------------- upload

def test_upload_creates_pipeline_then_is_idempotent(fake_kfp, capsys):
    assert _cli(["upload", "--package", str(PACKAGE)]) == 0
    out = capsys.readouterr()
    version = k.package_version_name(PACKAGE)
    assert "uploaded new version" in out.out and version in out.out

    (create,) = _calls(fake_kfp, "POST", "/pipelines")
    assert json.loads(create["body"]) == {"display_name": "damoc-selection", "namespace": "team-a"}
    (upload,) = _calls(fake_kfp, "POST", "/pipelines/upload_version")
    assert upload["content_type"].startswith("multipart/form-data; boundary=")
    (pid,) = fake_kfp.pipelines
    assert upload["query"] == {"name": [version], "pipelineid": [pid]}
    assert fake_kfp.versions[pid][0]["_file"] == PACKAGE.read_bytes()
    lookup = _calls(fake_kfp, "GET", "/pipelines")[0]
    assert lookup["query"]["namespace"] == ["team-a"]
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0] == {
        "operation": "EQUALS", "key": "display_name", "stringValue": "damoc-selection"}

    # Same package again: nothing new. A named version: exactly one more.
    assert _cli(["upload", "--package", str(PACKAGE)]) == 0
    assert "already present" in capsys.readouterr().out
    assert len(_calls(fake_kfp, "POST", "/pipelines/upload_version")) == 1
    assert _cli(["upload", "--package", str(PACKAGE), "--name", "damoc-selection", "--version", "0.2.0"]) == 0
    assert [v["display_name"] for v in fake_kfp.versions[pid]] == ["0.2.0", version]
    assert len(_calls(fake_kfp, "POST", "/pipelines")) == 1
    _assert_token_only_in_headers(fake_kfp, capsys.readouterr().out + out.out + out.err)


def test_upload_with_token_file_rereads_it(fake_kfp, monkeypatch, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv(k.ENV_TOKEN)
    monkeypatch.setenv(k.ENV_TOKEN_FILE, str(token_file))
    client = k.make_client()
    k.upload_pipeline(client, PACKAGE, "p1", "v1")
    assert {r["auth"] for r in fake_kfp.requests} == {f"Bearer {TOKEN}"}
    token_file.write_text("rotated-token-abcdef")  # kubelet rotates projected tokens in place
    k.upload_pipeline(client, PACKAGE, "p1", "v2")
    assert fake_kfp.requests[-1]["auth"] == "Bearer rotated-token-abcdef"
    assert TOKEN not in capsys.readouterr().out


# ----------------------------------------------------------------------------- submit / status

def test_submit_uses_the_newest_registered_version_and_status_reads_it(fake_kfp, opaque_config, capsys):
    client = k.make_client()
    k.upload_pipeline(client, PACKAGE, version="v1")
    newest = k.upload_pipeline(client, PACKAGE, version="v2")
    capsys.readouterr()

    assert _cli(["submit", str(opaque_config), "--experiment", "exp-a", "--run-name", "nightly-1"]) == 0
    out = capsys.readouterr().out
    (exp_create,) = _calls(fake_kfp, "POST", "/experiments")
    assert json.loads(exp_create["body"]) == {"display_name": "exp-a", "namespace": "team-a"}
    (run_req,) = _calls(fake_kfp, "POST", "/runs")
    body = json.loads(run_req["body"])
    (eid,) = fake_kfp.experiments
    assert body["experiment_id"] == eid and body["display_name"] == "nightly-1"
    assert body["pipeline_version_reference"] == {"pipeline_id": newest.pipeline_id,
                                                  "pipeline_version_id": newest.pipeline_version_id}
    assert body["runtime_config"] == {"parameters": ARGS}
    assert "pipeline_spec" not in body
    (run_id,) = fake_kfp.runs
    assert f"run_id={run_id}" in out

    # The experiment is reused, not duplicated.
    assert _cli(["submit", str(opaque_config), "--experiment", "exp-a"]) == 0
    assert len(_calls(fake_kfp, "POST", "/experiments")) == 1

    assert _cli(["status", run_id]) == 0
    status_out = capsys.readouterr().out
    assert run_id in status_out and "PENDING" in status_out and "nightly-1" in status_out
    assert _calls(fake_kfp, "GET", f"/runs/{run_id}")
    _assert_token_only_in_headers(fake_kfp, out + status_out)


def test_submit_inline_package_needs_no_upload(fake_kfp, opaque_config, capsys):
    assert _cli(["submit", str(opaque_config), "--package", str(PACKAGE), "--run-name", "adhoc"]) == 0
    (run_req,) = _calls(fake_kfp, "POST", "/runs")
    body = json.loads(run_req["body"])
    # kfp sends the package's two documents: the pipeline spec and the kfp-kubernetes platform spec.
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "damoc-selection"
    assert "pipeline_version_reference" not in body
    assert not _calls(fake_kfp, "POST", "/pipelines/upload_version")


def test_submit_runs_as_the_runner_service_account_from_the_environment(fake_kfp, opaque_config, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("DAMOC_SERVICE_ACCOUNT", "damoc-runner")  # the Helm chart's least-privilege account
    assert _cli(["submit", str(opaque_config), "--package", str(PACKAGE), "--run-name", "sa"]) == 0
    (run_req,) = _calls(fake_kfp, "POST", "/runs")
    assert json.loads(run_req["body"])["service_account"] == "damoc-runner"


# ----------------------------------------------------------------------------- schedule

def test_schedule_creates_then_leaves_alone_then_replaces(fake_kfp, opaque_config, capsys):
    k.upload_pipeline(k.make_client(), PACKAGE, version="v1")
    capsys.readouterr()
    assert _cli(["schedule", str(opaque_config), "--cron", "0 3 * * 1", "--name", "weekly"]) == 0
    out = capsys.readouterr().out
    assert "created" in out
    (create,) = _calls(fake_kfp, "POST", "/recurringruns")
    body = json.loads(create["body"])
    (eid,) = fake_kfp.experiments
    assert body["display_name"] == "weekly" and body["experiment_id"] == eid
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert body["mode"] == "ENABLE" and str(body["max_concurrency"]) == "1"
    assert body["no_catchup"] is True
    assert body["runtime_config"] == {"parameters": ARGS}
    (pid,) = fake_kfp.pipelines
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pid, "pipeline_version_id": fake_kfp.versions[pid][0]["pipeline_version_id"]}
    lookups = _calls(fake_kfp, "GET", "/recurringruns")
    assert lookups[0]["query"]["experiment_id"] == [eid]

    # Same request again: unchanged, nothing created or deleted.
    assert _cli(["schedule", str(opaque_config), "--cron", "0 0 3 * * 1", "--name", "weekly"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert len(_calls(fake_kfp, "POST", "/recurringruns")) == 1
    assert not [r for r in fake_kfp.requests if r["method"] == "DELETE"]

    # A new cron (or a new pipeline version) replaces it: create the new one, then delete the old one.
    (old_id,) = fake_kfp.recurring
    assert _cli(["schedule", str(opaque_config), "--cron", "30 4 * * *", "--name", "weekly"]) == 0
    assert "updated" in capsys.readouterr().out
    (new_id,) = fake_kfp.recurring
    assert new_id != old_id
    assert fake_kfp.recurring[new_id]["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * *"
    methods = [(r["method"], r["path"]) for r in fake_kfp.requests[-2:]]
    assert methods == [("POST", API + "/recurringruns"), ("DELETE", API + f"/recurringruns/{old_id}")]
    _assert_token_only_in_headers(fake_kfp, out)


# ----------------------------------------------------------------------------- images and caching

def _uploaded_images(state: FakeKfp) -> dict[str, str]:
    from damoc.cluster.pipeline_images import images

    (pid,) = state.pipelines
    return images(state.versions[pid][0]["_file"].decode())


def test_upload_with_images_rewrites_each_task_family(fake_kfp, capsys):
    assert _cli(["upload", "--package", str(PACKAGE)]) == 0
    default = _uploaded_images(fake_kfp)
    assert default["exec-finetune-model"] == "ghcr.io/damoc-project/damoc-train:0.1.0"
    assert _cli(["upload", "--package", str(PACKAGE), "--image-training", "mirror.example.com/damoc-train:7",
                 "--image-component", "mirror.example.com/damoc:7"]) == 0
    assert "uploaded new version" in capsys.readouterr().out  # other images, other content: a new version
    got = _uploaded_images(fake_kfp)
    assert got["exec-finetune-model"] == got["exec-evaluate-model"] == "mirror.example.com/damoc-train:7"
    assert {got[e] for e in got if e not in ("exec-finetune-model", "exec-evaluate-model")} == {
        "mirror.example.com/damoc:7"}
    assert PACKAGE.read_text().count("mirror.example.com") == 0  # the committed package is untouched
    (pid,) = fake_kfp.pipelines
    assert len(fake_kfp.versions[pid]) == 2


def _cache_flags(spec: dict) -> dict[str, bool]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {n: bool((t.get("cachingOptions") or {}).get("enableCache")) for n, t in tasks.items()
            if not n.startswith("for-loop")}


def test_submit_no_cache_sends_the_registered_version_with_caching_off(fake_kfp, opaque_config, capsys):
    client = k.make_client()
    registered = k.upload_pipeline(client, PACKAGE, version="v1")
    assert _cli(["submit", str(opaque_config), "--run-name", "cached"]) == 0
    assert _cli(["submit", str(opaque_config), "--run-name", "fresh", "--no-cache"]) == 0
    cached, fresh = (json.loads(r["body"]) for r in _calls(fake_kfp, "POST", "/runs"))
    assert cached["pipeline_version_reference"]["pipeline_version_id"] == registered.pipeline_version_id
    assert _calls(fake_kfp, "GET", f"/pipelines/{registered.pipeline_id}/versions/{registered.pipeline_version_id}")
    flags = _cache_flags(fresh["pipeline_spec"]["pipeline_spec"])
    assert flags and not any(flags.values())
    # the registered version's own spec, platform part included (secrets, tolerations)
    assert fresh["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "damoc-selection"
    assert "kubernetes" in fresh["pipeline_spec"]["platform_spec"]["platforms"]
    # and without the switch the package's own settings hold: data-keyed caching, fingerprint never cached
    import yaml

    compiled = _cache_flags(next(yaml.safe_load_all(PACKAGE.read_text())))
    assert compiled["fingerprint-data"] is False and compiled["prepare-data"] is True
    # kfp.Client's own override would leave the ParallelFor's tasks cached: an inline package too is rewritten
    assert compiled["evaluate-model"] is True
    assert _cli(["submit", str(opaque_config), "--package", str(PACKAGE), "--no-cache"]) == 0
    inline = json.loads(_calls(fake_kfp, "POST", "/runs")[-1]["body"])["pipeline_spec"]["pipeline_spec"]
    assert set(_cache_flags(inline)) == set(compiled) and not any(_cache_flags(inline).values())


def test_schedule_no_cache_is_idempotent_and_a_switch_replaces_it(fake_kfp, opaque_config, capsys):
    registered = k.upload_pipeline(k.make_client(), PACKAGE, version="v1")
    argv = ["schedule", str(opaque_config), "--cron", "0 3 * * 1", "--name", "weekly"]
    assert _cli(argv + ["--no-cache"]) == 0
    (body,) = (json.loads(r["body"]) for r in _calls(fake_kfp, "POST", "/recurringruns"))
    assert not any(_cache_flags(body["pipeline_spec"]["pipeline_spec"]).values())
    assert body["description"] == f"damoc: pipeline_version_id={registered.pipeline_version_id}, caching off"
    capsys.readouterr()
    assert _cli(argv + ["--no-cache"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert _cli(argv) == 0  # caching back on: replaced by a schedule of the registered version
    assert "updated" in capsys.readouterr().out
    (rr,) = fake_kfp.recurring.values()
    assert rr["pipeline_version_reference"]["pipeline_version_id"] == registered.pipeline_version_id


# ----------------------------------------------------------------------------- errors

def test_errors_exit_2_with_one_line_and_no_token(fake_kfp, opaque_config, monkeypatch, capsys):
    # Pipeline not registered yet.
    assert _cli(["submit", str(opaque_config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "damoc upload" in err

    # Server-side failure that echoes the token back (as a misbehaving proxy might).
    fake_kfp.fail_next = (403, f"user with token {TOKEN} is not allowed")
    assert _cli(["status", "some-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "403" in err and TOKEN not in err

    assert _cli(["status", "missing-run"]) == 2
    assert "404" in capsys.readouterr().err

    assert _cli(["schedule", str(opaque_config), "--cron", "every day"]) == 2
    assert "5 fields" in capsys.readouterr().err

    monkeypatch.delenv(k.ENV_HOST)
    assert _cli(["status", "x"]) == 2
    assert "DAMOC_KFP_HOST" in capsys.readouterr().err

    monkeypatch.setenv(k.ENV_HOST, "http://127.0.0.1:9")  # discard port: nothing listens
    assert _cli(["status", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TOKEN not in err

    monkeypatch.setenv(k.ENV_HOST, "http://u:pw@kfp.example")
    assert _cli(["status", "x"]) == 2
    assert "credentials" in capsys.readouterr().err


def test_bad_config_exits_2(fake_kfp, tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert _cli(["submit", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not _calls(fake_kfp, "POST", "/runs")


def test_no_token_option_exists():
    parser = argparse.ArgumentParser(prog="damoc")
    cli_cluster.add_cluster_commands(parser.add_subparsers(dest="command"))
    for cmd in ("upload", "submit", "schedule", "status"):
        with pytest.raises(SystemExit):
            parser.parse_args([cmd, "x", "--token", TOKEN])
