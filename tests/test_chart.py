"""Chart conventions: every values property described, a generated README that is current, a strict lint with
every optional part on, and the `helm test` hook's check run for real against a local OpenAI-style server."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "damoc"
NS = "team-a"
ALL_ON = {"rewriter": {"enabled": True, "model": {"source": "pvc", "pvc": {"claimName": "llm"}},
                       "apiKey": {"existingSecret": "rw-key"}},
          "trainer": {"runtime": {"create": True, "maxRestarts": 1}}, "schedule": {
              "enabled": True, "cron": "0 3 * * 1",
              "runConfig": {"data": {"train": "s3://b/t.jsonl", "eval": "s3://b/e.jsonl"},
                            "candidates": [{"name": "a", "path": "s3://b/m"}]}}}


def _properties(node: dict, path: str = ""):
    for key, child in (node.get("properties") or {}).items():
        yield f"{path}{key}", child
        yield from _properties(child, f"{path}{key}.")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _properties(items, f"{path}[].")


def test_every_values_property_is_described():
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = dict(_properties(schema))
    assert len(props) > 120
    missing = [p for p, node in props.items() if len((node.get("description") or "").strip()) < 8]
    assert not missing, f"values.schema.json properties without a description: {missing}"


def test_values_yaml_keys_are_all_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        if not isinstance(value, dict) or not node.get("properties"):
            return
        for key, child in value.items():
            assert key in node["properties"], f"values.yaml key {path}{key} is not in values.schema.json"
            walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_chart_readme_is_generated_and_current():
    proc = subprocess.run([sys.executable, "helm/chart_readme.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    # One row per leaf property, each with its description; defaults from values.yaml.
    assert "| rbac.launchers | array | `[\"trainjob\", \"pytorchjob\"]` |" in text
    assert "| trainer.runtime.kind | string | `\"TrainingRuntime\"` |" in text
    leaves = [p for p, node in _properties(schema) if "[]" not in p
              and not (node.get("properties") and node.get("type", "object") == "object")]
    for key in leaves:
        assert f"| {key} |" in text, key
    sys.path.insert(0, str(REPO / "helm"))
    try:
        import chart_readme
    finally:
        sys.path.pop(0)
    changed = json.loads(json.dumps(schema))
    changed["properties"]["kfp"]["properties"]["host"]["description"] = "something else"
    assert "| kfp.host | string | `\"http://ml-pipeline.kubeflow:8888\"` | something else |" in "\n".join(
        f"| {k} | {t} | {d} | {desc} |" for k, t, d, desc in chart_readme.rows(
            changed, yaml.safe_load((CHART / "values.yaml").read_text())))


def test_chart_lints_strict_with_every_optional_part_on():
    helm = pytest.importorskip("helm_python")
    report = helm.lint(CHART, ALL_ON, strict=True, namespace=NS, kube_version="v1.30.0")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not bad, report


def test_production_example_trains_on_its_trainer_runtime():
    from damoc.config import parse_config

    values = yaml.safe_load((CHART / "examples" / "values-production.yaml").read_text())
    cfg = parse_config(values["schedule"]["runConfig"], "values-production.yaml schedule.runConfig")
    assert cfg.training.launcher == "trainjob"
    assert (cfg.training.trainjob.runtime, cfg.training.trainjob.runtime_kind) == (
        values["trainer"]["runtime"]["name"], values["trainer"]["runtime"]["kind"])
    assert values["rbac"]["launchers"] == ["trainjob"]


# ------------------------------------------------------------------------------------------------ helm test

def _test_pod(values: dict) -> dict:
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="damoc", namespace=NS)
    return yaml.safe_load(rendered["damoc/templates/tests/rewriter-test.yaml"])


def test_helm_test_hook_is_rendered_only_with_the_rewriter():
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({}, name="damoc", namespace=NS)
    assert not (rendered.get("damoc/templates/tests/rewriter-test.yaml") or "").strip()
    pod = _test_pod(ALL_ON)
    assert pod["kind"] == "Pod" and pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["pipelines.kubeflow.org/v2_component"] == "true"  # admitted by the policy
    (c,) = pod["spec"]["containers"]
    assert c["args"] == ["--url", f"http://damoc-rewriter.{NS}.svc:8000/v1", "--model", "rewriter"]
    assert c["env"] == [{"name": "DAMOC_REWRITER_API_KEY",
                         "valueFrom": {"secretKeyRef": {"name": "rw-key", "key": "api-key"}}}]
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False


class _FakeVllm:
    """/v1/models and /v1/completions as vLLM's OpenAI server answers them, with --api-key enforcement."""

    def __init__(self, key="k3y", model="rewriter", choices=True, enforce=True):
        self.key, self.model, self.choices, self.enforce, self.seen = key, model, choices, enforce, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self):
                ok = self.headers.get("Authorization") == f"Bearer {fake.key}"
                if not ok and fake.enforce:
                    self._send(401, {"error": "Unauthorized"})
                return ok or not fake.enforce

            def do_GET(self):
                fake.seen.append(("GET", self.path))
                if self._authorized():
                    self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.seen.append(("POST", self.path, body["model"]))
                if self._authorized():
                    self._send(200, {"object": "text_completion", "model": body["model"],
                                     "choices": [{"index": 0, "text": " OK", "finish_reason": "length"}]
                                     if fake.choices else []})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("case, expect", [
    ({}, "OK: rewriter"),
    ({"model": "other"}, "FAIL: GET"),
    ({"choices": False}, "FAIL: POST"),
    ({"enforce": False}, "without the API key was answered 200"),
    ({"key": "different"}, "FAIL: GET"),
])
def test_helm_test_script_checks_the_rewriter_for_real(case, expect):
    """The hook's container command, run here against a local server in place of the Service."""
    c = _test_pod(ALL_ON)["spec"]["containers"][0]
    server = _FakeVllm(**case)
    try:
        args = list(c["args"])
        args[args.index("--url") + 1] = server.url
        proc = subprocess.run([sys.executable, *c["command"][1:], *args], capture_output=True, text=True,
                              timeout=60, env={"DAMOC_REWRITER_API_KEY": "k3y", "PATH": "/usr/bin:/bin"})
    finally:
        server.close()
    assert expect in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == (0 if expect.startswith("OK") else 1)
    if not case:
        assert ("POST", "/v1/completions", "rewriter") in server.seen


def test_helm_test_script_reports_an_unreachable_service():
    c = _test_pod(ALL_ON)["spec"]["containers"][0]
    proc = subprocess.run([sys.executable, *c["command"][1:], "--url", "http://127.0.0.1:9/v1", "--model", "m",
                           "--timeout", "5"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "unreachable" in proc.stdout
