"""Offline checks of the cluster side: helm/damoc, manifests/ (kustomize base), docker/.

Every Kubernetes object is validated against the schemas bundled with `kubernetes-validate` (strict:
unknown fields fail) for a pinned old and the newest bundled Kubernetes version, and the Kubeflow custom
objects against the CRDs in shared/schemas — all without an API server. RBAC must stay namespaced and
minimal (exact verb sets), every pod hardened, the chart linted and the kustomize base equivalent to the
chart's default render. The image dependency lists are checked against what the code imports.
"""
from __future__ import annotations

import ast
import copy
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
CHART = REPO / "helm" / "damoc"
DOCKER = REPO / "docker"
PRODUCTION = CHART / "examples" / "values-production.yaml"
PACKAGE = REPO / "pipelines" / "compiled" / "damoc_pipeline.yaml"
# The pinned CRDs ship as test data (tests/data/crds); DAMOC_SHARED points at another copy.
SCHEMAS = (Path(os.environ["DAMOC_SHARED"]) / "schemas" / "crds" if os.environ.get("DAMOC_SHARED")
           else Path(__file__).parent / "data" / "crds")

# Pinned: the oldest Kubernetes we support (Chart.yaml kubeVersion >=1.25; 1.30 is the usual floor
# today) and the newest kubernetes-validate 1.37.0 bundles.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
NS = "team-a"

# Exactly what damoc/cluster/ calls (test_launcher_role_matches_the_code checks it), per cluster launcher.
JOB_KINDS = {"trainjob": ("trainer.kubeflow.org", "trainjobs"), "pytorchjob": ("kubeflow.org", "pytorchjobs")}
POD_RULES = {("", "pods"): {"list"}, ("", "pods/log"): {"get"}}


def launcher_rules(launchers=tuple(JOB_KINDS)) -> dict[tuple[str, str], set[str]]:
    return {**{JOB_KINDS[name]: {"create", "get", "delete"} for name in launchers}, **POD_RULES}


LAUNCHER_RULES = launcher_rules()
# Kubernetes client method -> the verb it needs on a job kind (custom objects: every launcher's kind) or the
# (apiGroup, resource, verb) of a core call.
_CUSTOM_CALLS = {
    "create_namespaced_custom_object": "create",
    "get_namespaced_custom_object": "get",
    "delete_namespaced_custom_object": "delete",
    "list_namespaced_custom_object": "list",
    "patch_namespaced_custom_object": "patch",
}
_CORE_CALLS = {
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
}
REGISTRAR_RULES = {("pipelines.kubeflow.org", "pipelines"): {"create", "get", "list"}}
SCHEDULER_RULES = {
    ("pipelines.kubeflow.org", "experiments"): {"create", "get", "list"},
    ("pipelines.kubeflow.org", "jobs"): {"create", "get", "list", "delete"},
}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition",
                 "PersistentVolume", "StorageClass", "PriorityClass", "MutatingWebhookConfiguration",
                 "ValidatingWebhookConfiguration"}
CRD_FILES = {
    # TrainingRuntime has the same spec type as ClusterTrainingRuntime (Trainer v2.2.1).
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"): "trainer.kubeflow.org_clustertrainingruntimes.v2.2.1.yaml",
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"):
        "trainer.kubeflow.org_clustertrainingruntimes.v2.2.1.yaml",
    ("pipelines.kubeflow.org/v2beta1", "Pipeline"): "pipelines.kubeflow.org_pipelines.kfp-2.17.0.yaml",
    ("pipelines.kubeflow.org/v2beta1", "PipelineVersion"): "pipelines.kubeflow.org_pipelineversions.kfp-2.17.0.yaml",
}

SCHEDULE = {"enabled": True, "cron": "0 3 * * 1", "name": "weekly", "experiment": "nightly",
            "runConfig": {"mode": "damoc", "data": {"train": "s3://b/train.jsonl", "eval": "s3://b/eval.jsonl"},
                          "candidates": [{"name": "a", "path": "s3://b/models/a"}]}}
REWRITER_PVC = {"enabled": True, "model": {"source": "pvc", "pvc": {"claimName": "llm", "subPath": "qwen"}},
                "apiKey": {"existingSecret": "rw-key"}}


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _production() -> dict:
    return yaml.safe_load(PRODUCTION.read_text())


VALUE_CASES = {
    "defaults": {},
    "production": _production(),
    "kubernetes-native+schedule": {"registration": {"mode": "kubernetes"}, "schedule": SCHEDULE},
    "kfp-store-single-user-token": {
        "objectStore": {"type": "kfp", "createBucket": True}, "kfp": {"multiUser": False, "tokenSecret": "kfp-token"},
        "schedule": SCHEDULE, "rewriter": REWRITER_PVC,
        "image": {"repository": "r.example/damoc", "tag": "1.0", "digest": "sha256:" + "a" * 64},
    },
    "minimal": {"serviceAccount": {"create": False, "name": "default-editor"}, "registration": {"enabled": False},
                "objectStore": {"createBucket": False, "endpoint": "https://s3.example.com"}},
    "trainer-v2-only": {"rbac": {"launchers": ["trainjob"]}, "trainer": {"runtime": {"create": True, "maxRestarts": 2}},
                        "rewriter": REWRITER_PVC, "imagePullSecrets": [{"name": "regcred"}]},
}


# ------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def helm():
    return pytest.importorskip("helm_python")


@lru_cache(maxsize=None)
def _render_cached(values_json: str, namespace: str) -> tuple[tuple[str, str], ...]:
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(json.loads(values_json), name="damoc", namespace=namespace)
    return tuple(sorted(rendered.items()))


def _render(values: dict | None = None, namespace: str = NS) -> list[dict]:
    rendered = _render_cached(json.dumps(values or {}, sort_keys=True), namespace)
    return [o for path, text in rendered if path.endswith((".yaml", ".yml")) for o in _docs(text)]


def _notes(values: dict | None = None) -> str:
    rendered = dict(_render_cached(json.dumps(values or {}, sort_keys=True), NS))
    return rendered["damoc/templates/NOTES.txt"]


def _validate(obj: dict, version: str) -> None:
    """Built-in kinds against kubernetes-validate (strict), Kubeflow kinds against shared/schemas."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_FILES:
        _validate_crd(obj, CRD_FILES[key])
        return
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{where} invalid for Kubernetes {version} at {path or '<root>'}: {e.message}")
    except kv.SchemaNotFoundError as e:
        pytest.fail(f"{where}: {e.message}")


@lru_cache(maxsize=None)
def _crd_schema(file: str) -> dict:
    if not (SCHEMAS / file).is_file():
        pytest.skip(f"CRD schema {file} not available under {SCHEMAS}")
    (crd,) = _docs((SCHEMAS / file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    return version["schema"]["openAPIV3Schema"]


def _validate_crd(obj: dict, file: str) -> None:
    import jsonschema

    schema = copy.deepcopy(_crd_schema(file))

    def strict(node):  # structural schemas prune unknown fields; treat them as errors here
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for v in node.values():
                strict(v)
    strict(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
        f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors)


def _pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            out.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((f"Pod/{o['metadata']['name']}", o["spec"]))
    return out


def _assert_pods_hardened(objects: list[dict]) -> None:
    for where, spec in _pod_specs(objects):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert psc["runAsUser"] >= 1000, where
        assert spec.get("automountServiceAccountToken") is False, f"{where} mounts a Kubernetes API token"
        for c in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), name
            # repository:tag[@sha256:...], never :latest or untagged.
            assert re.fullmatch(r"[\w./-]+(:\d+)?[\w./-]*:[\w.-]+(@sha256:[0-9a-f]{64})?", c["image"]), c["image"]
            assert not c["image"].split("@")[0].endswith(":latest"), name
            # A read-only root needs somewhere to write: /tmp is always an emptyDir.
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, name
            for env in c.get("env", []):
                assert not (re.search(r"KEY|TOKEN|SECRET|PASSWORD", env["name"]) and "value" in env
                            and env["name"] not in {"DAMOC_KFP_TOKEN_FILE"}), f"{name}: literal {env['name']}"


def _rules(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in x for x in rule[field]), f"wildcard in {rule}"
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


def _assert_rbac(objects: list[dict], values: dict) -> None:
    kinds = {o["kind"] for o in objects}
    assert not kinds & CLUSTER_KINDS, f"cluster-scoped objects: {kinds & CLUSTER_KINDS}"
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    assert _rules(roles["damoc"]) == launcher_rules(values.get("rbac", {}).get("launchers", tuple(JOB_KINDS)))
    registrar = roles.get("damoc-registrar")
    schedule = values.get("schedule", {}).get("enabled", False)
    api_mode = values.get("registration", {}).get("enabled", True) and \
        values.get("registration", {}).get("mode", "api") == "api"
    multi_user = values.get("kfp", {}).get("multiUser", True)
    if multi_user and (api_mode or schedule):
        expected = {**REGISTRAR_RULES, **(SCHEDULER_RULES if schedule else {})}
        if not api_mode:  # Kubernetes-native registration: the hook only reads the pipeline
            expected[("pipelines.kubeflow.org", "pipelines")] = {"get", "list"}
        assert registrar is not None and _rules(registrar) == expected
    else:
        assert registrar is None
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] in roles
        # A ServiceAccount subject without a namespace binds nothing.
        assert all(s.get("namespace") for s in rb["subjects"] if s["kind"] == "ServiceAccount"), rb


def _by(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


# ------------------------------------------------------------------ helm/damoc: render and validate

def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (meta["apiVersion"], meta["name"]) == ("v2", "damoc")
    assert (CHART / "values.schema.json").is_file() and (CHART / "templates" / "NOTES.txt").is_file()
    # The chart packages the compiled pipeline through a link (helm follows it), so it can never go stale.
    link = CHART / "files" / "damoc_pipeline.yaml"
    assert link.is_symlink() and link.resolve() == PACKAGE.resolve()


def test_kustomize_base_holds_a_current_copy_of_the_pipeline():
    """kustomize refuses files outside the base without --load-restrictor: a real file, refreshed by make compile."""
    copy_ = MANIFESTS / "damoc_pipeline.yaml"
    assert not copy_.is_symlink() and copy_.is_file()
    assert copy_.read_bytes() == PACKAGE.read_bytes(), \
        "manifests/damoc_pipeline.yaml differs from pipelines/compiled/damoc_pipeline.yaml: run `make compile`"
    make = subprocess.run(["make", "-n", "compile"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert make.returncode == 0, make.stderr
    assert "cp pipelines/compiled/damoc_pipeline.yaml manifests/damoc_pipeline.yaml" in make.stdout
    for path in MANIFESTS.rglob("*"):  # nothing in the base may point outside it
        assert not path.is_symlink(), f"{path} is a link; kustomize needs --load-restrictor for it"


@pytest.mark.parametrize("values_file", [None, PRODUCTION])
def test_chart_lints_strict(helm, values_file):
    values = yaml.safe_load(values_file.read_text()) if values_file else {}
    report = helm.lint(CHART, values, strict=True, namespace=NS, kube_version="v1.30.0")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not bad, report


@pytest.mark.parametrize("case", VALUE_CASES)
def test_chart_renders_valid_hardened_least_privilege(helm, case):
    values = VALUE_CASES[case]
    objects = _render(values)
    assert objects
    for version in K8S_VERSIONS:
        for obj in objects:
            _validate(obj, version)
    for obj in objects:
        assert obj["metadata"]["namespace"] == NS
    assert not any(o["kind"] == "Secret" for o in objects), "the chart must never create a Secret"
    _assert_rbac(objects, values)
    _assert_pods_hardened(objects)


def test_values_schema_rejects_bad_values(helm):
    for bad in ({"objectStore": {"type": "gcs"}}, {"image": {"repository": "x", "digest": "abc"}},
                {"registration": {"mode": "crd"}}, {"schedule": {"cron": "daily"}}, {"unknownKey": 1},
                {"podSecurityContext": {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}}}):
        with pytest.raises(Exception, match="schema"):
            _render(bad)


def test_required_values_fail_with_a_clear_message(helm):
    cases = [({"rewriter": {"enabled": True, "model": {"pvc": {"claimName": "x"}}}}, "apiKey.existingSecret"),
             ({"rewriter": {"enabled": True, "apiKey": {"existingSecret": "k"}}}, "pvc.claimName"),
             ({"rewriter": {"enabled": True, "apiKey": {"existingSecret": "k"}, "model": {"source": "s3"}}}, "s3Uri"),
             ({"schedule": {"enabled": True, "cron": "0 1 * * *"}}, "runConfig")]
    for values, needle in cases:
        with pytest.raises(Exception, match=re.escape(needle)):
            _render(values)


# ------------------------------------------------------------------ object store

def test_object_store_external_by_default_never_literal_credentials(helm):
    objects = _render()
    job = _by(objects, "Job", "damoc-bucket")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DAMOC_S3_ENDPOINT"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-credentials", "key": key}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    flat = json.dumps(values["objectStore"]).lower()
    assert "accesskey\": \"" not in flat and "password" not in flat


def test_object_store_kfp_uses_the_pipeline_artifact_secret(helm):
    objects = _render(VALUE_CASES["kfp-store-single-user-token"])
    env = {e["name"]: e for e in _by(objects, "Job", "damoc-bucket")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact", "key": "secretkey"}
    assert env["DAMOC_S3_ENDPOINT"]["value"] == "http://minio-service.kubeflow:9000"
    cm = _by(objects, "ConfigMap", "damoc-defaults")["data"]
    assert cm["DAMOC_TRAINING_SECRET"] == "mlpipeline-minio-artifact"  # the training pods' S3 Secret
    assert cm["DAMOC_TRAINING_SECRET_KEYS"] == "accesskey,secretkey"  # ... and its key names
    assert _by(_render(), "ConfigMap", "damoc-defaults")["data"]["DAMOC_TRAINING_SECRET_KEYS"] == \
        "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY"
    assert not any(o["kind"] == "Job" and o["metadata"]["name"] == "damoc-bucket"
                   for o in _render({"objectStore": {"createBucket": False}}))


def test_bucket_hook_is_idempotent_against_an_s3_server(helm, tmp_path):
    """Run the hook's script twice against a local S3 server: created, then exists."""
    moto = pytest.importorskip("moto.server")
    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        container = _by(_render(), "Job", "damoc-bucket")["spec"]["template"]["spec"]["containers"][0]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "DAMOC_S3_ENDPOINT": f"http://{host}:{port}", "DAMOC_S3_BUCKET": "damoc", "HOME": str(tmp_path)}
        outputs = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, *container["command"][1:], *container["args"]], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=REPO)
            assert proc.returncode == 0, proc.stderr
            outputs.append(proc.stdout.strip())
        assert outputs == ["bucket damoc: created", "bucket damoc: exists"]
    finally:
        server.stop()


# ------------------------------------------------------------------ pipeline registration

def test_registration_hook_uploads_a_content_versioned_pipeline(helm):
    objects = _render()
    app = yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']
    images = f"ghcr.io/damoc-project/damoc:{app}\nghcr.io/damoc-project/damoc-train:{app}"
    # helm's sha256sum of the template's text: the package's text, then the two images
    content = PACKAGE.read_text() + "\n" + images
    digest = __import__("hashlib").sha256(content.encode()).hexdigest()[:10]
    version = f"{app}-{digest}"
    cm = _by(objects, "ConfigMap", "damoc-pipeline")
    assert cm["data"]["damoc_pipeline.yaml"].strip() == PACKAGE.read_text().strip()
    job = _by(objects, "Job", "damoc-register")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert int(ann["helm.sh/hook-weight"]) > int(_by(objects, "Job", "damoc-bucket")["metadata"]["annotations"]["helm.sh/hook-weight"])
    spec = job["spec"]["template"]["spec"]
    script = spec["containers"][0]["args"][0]
    assert "python -m damoc.cli_cluster upload --package /etc/damoc/pipeline/damoc_pipeline.yaml" in script
    assert f"--version '{version}'" in script and "schedule" not in script
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["DAMOC_KFP_HOST"]["value"] == "http://ml-pipeline.kubeflow:8888"
    assert env["DAMOC_KFP_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["DAMOC_KFP_TOKEN_FILE"]["value"] == "/var/run/secrets/kubeflow/pipelines/token"
    (token_volume,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    assert token_volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert spec["serviceAccountName"] == "damoc-registrar"
    assert _by(objects, "ServiceAccount", "damoc-registrar")["automountServiceAccountToken"] is False


def test_registration_hook_schedules_when_enabled(helm):
    objects = _render({"schedule": SCHEDULE})
    script = _by(objects, "Job", "damoc-register")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "python -m damoc.cli_cluster schedule /etc/damoc/run/run.yaml" in script
    assert "--cron '0 3 * * 1' --name 'weekly'" in script and "--experiment 'nightly'" in script
    assert "--pipeline 'damoc-selection' --pipeline-version '" in script
    # the chart's image values reach the pipeline's tasks: upload rewrites each task family's image
    assert "--image-component 'ghcr.io/damoc-project/damoc:" in script
    assert "--image-training 'ghcr.io/damoc-project/damoc-train:" in script
    other = _by(_render({"schedule": SCHEDULE, "trainImage": {"repository": "reg.local/train", "tag": "9"}}),
                "Job", "damoc-register")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--image-training 'reg.local/train:9'" in other
    version = re.compile(r"--pipeline-version '([^']+)'")
    assert version.search(other).group(1) != version.search(script).group(1)  # new images, new version
    run_cm = _by(objects, "ConfigMap", "damoc-run-config")
    assert yaml.safe_load(run_cm["data"]["run.yaml"]) == SCHEDULE["runConfig"]
    # The script is valid sh (no template residue).
    proc = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # Single-user KFP with a token Secret: no namespace, token from the Secret, no projected volume.
    objects = _render(VALUE_CASES["kfp-store-single-user-token"])
    c = _by(objects, "Job", "damoc-register")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert "DAMOC_KFP_NAMESPACE" not in env and "DAMOC_KFP_TOKEN_FILE" not in env
    assert env["DAMOC_KFP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kfp-token", "key": "token"}


def test_kubernetes_native_registration_objects(helm):
    objects = _render({"registration": {"mode": "kubernetes"}})
    assert not any(o["kind"] == "Job" and o["metadata"]["name"] == "damoc-register" for o in objects)
    pipeline = _by(objects, "Pipeline")
    version = _by(objects, "PipelineVersion")
    assert pipeline["metadata"]["name"] == version["spec"]["pipelineName"] == "damoc-selection"
    assert version["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    compiled = _docs(PACKAGE.read_text())
    assert version["spec"]["pipelineSpec"] == compiled[0]
    if len(compiled) > 1:
        assert version["spec"]["platformSpec"] == compiled[1]
    for obj in (pipeline, version):
        _validate(obj, K8S_VERSIONS[0])


# ------------------------------------------------------------------ vLLM rewriter

def test_rewriter_deployment(helm):
    objects = _render({"rewriter": REWRITER_PVC})
    dep = _by(objects, "Deployment", "damoc-rewriter")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert "--model=/models/rewriter" in c["args"] and "--served-model-name=rewriter" in c["args"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "rw-key", "key": "api-key"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in c["volumeMounts"]
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "llm", "readOnly": True}
    model_mount = next(m for m in c["volumeMounts"] if m["name"] == "model")
    assert model_mount["subPath"] == "qwen" and model_mount["readOnly"] is True
    # Probes: a real completion (exec), a startup budget of at least 10 minutes for slow loads.
    for probe in ("startupProbe", "readinessProbe"):
        cmd = c[probe]["exec"]["command"]
        assert cmd[:2] == ["python3", "/opt/damoc/bin/probe.py"] and "--model" in cmd
        timeout = float(cmd[cmd.index("--timeout") + 1])
        assert 0 < timeout < c[probe]["timeoutSeconds"]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600
    assert "/v1/completions" in (DOCKER / "rewriter" / "probe.py").read_text()
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert {t["key"] for t in spec["tolerations"]} == {"nvidia.com/gpu"}

    svc = _by(objects, "Service", "damoc-rewriter")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    np_ = _by(objects, "NetworkPolicy", "damoc-rewriter")
    assert np_["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert np_["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np_["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    cm = _by(objects, "ConfigMap", "damoc-defaults")["data"]
    assert cm["DAMOC_REWRITER_URL"] == f"http://damoc-rewriter.{NS}.svc:8000/v1"


def test_rewriter_model_from_s3_through_an_init_container(helm):
    objects = _render(_production())
    spec = _by(objects, "Deployment", "damoc-rewriter")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["command"] == ["python3", "/opt/damoc/bin/fetch_model.py"]
    assert init["args"] == ["s3://damoc-team-nlp/models/qwen2.5-14b-instruct", "/models/rewriter"]
    env = {e["name"]: e for e in init["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "mlpipeline-minio-artifact"
    assert {v["name"]: v for v in spec["volumes"]}["model"]["emptyDir"]["sizeLimit"] == "80Gi"
    assert "@sha256:" + "3" * 64 in spec["containers"][0]["image"]


def test_notes_give_next_steps(helm):
    notes = _notes()
    assert "kubectl -n team-a create secret generic s3-credentials" in notes
    assert "damoc submit" in notes and "docs/cluster.md" in notes
    assert "Recurring run" in _notes({"schedule": SCHEDULE})


# ------------------------------------------------------------------ manifests/ (kustomize base)

def _strip(o: dict) -> dict:
    o = copy.deepcopy(o)
    md_ = o["metadata"]
    md_.pop("namespace", None)
    md_["labels"] = {k: v for k, v in (md_.get("labels") or {}).items()
                     if k not in {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}}
    md_["annotations"] = {k: v for k, v in (md_.get("annotations") or {}).items() if not k.startswith("helm.sh/hook")}
    for s in o.get("subjects", []):
        s.pop("namespace", None)
    if o["kind"] == "Job" and o["metadata"]["name"] == "damoc-register":
        c = o["spec"]["template"]["spec"]["containers"][0]
        c["args"] = [re.sub(r" --version '[^']*'", "", c["args"][0])]  # kustomize: content-hash default
    return o


def _kustomize(target: Path) -> list[dict]:
    # No --load-restrictor: Argo CD and Flux build bases with kustomize's defaults.
    proc = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return _docs(proc.stdout)


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@needs_kubectl
def test_kustomize_base_equals_chart_defaults_and_validates(helm, tmp_path):
    base = _kustomize(MANIFESTS)
    chart = _render({}, namespace="damoc")
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, base)) == sorted(map(key, chart))
    chart_by = {key(o): _strip(o) for o in chart}
    for o in base:
        assert o["metadata"]["namespace"] == "damoc"
        assert _strip(o) == chart_by[key(o)], f"{key(o)} differs from the chart's default render"
    # An overlay that moves everything to another namespace.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NS,
         "resources": [os.path.relpath(MANIFESTS, overlay), os.path.relpath(MANIFESTS / "rewriter", overlay)]}))
    objects = _kustomize(overlay)
    assert not any(o["kind"] == "Secret" for o in objects)
    for obj in objects:
        assert obj["metadata"]["namespace"] == NS
        for version in K8S_VERSIONS:
            _validate(obj, version)
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        assert all(s["namespace"] == NS for s in rb["subjects"])  # an SA subject without it binds nothing
    _assert_rbac(objects, {})
    _assert_pods_hardened(objects)


@needs_kubectl
def test_kustomize_rewriter_equals_chart(helm):
    values = {"rewriter": {"enabled": True, "model": {"source": "pvc", "pvc": {"claimName": "damoc-rewriter-model"}},
                           "apiKey": {"existingSecret": "damoc-rewriter-api-key"}}}
    chart = [_strip(o) for o in _render(values, namespace="damoc") if "rewriter" in o["metadata"]["name"]
             and o["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"]  # helm test: chart only
    base = [_strip(o) for o in _kustomize(MANIFESTS / "rewriter")]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(base, key=key) == sorted(chart, key=key)


def test_secret_template_is_not_applied_and_has_only_empty_placeholders():
    k = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "s3-credentials.example.yaml" not in k["resources"]
    (secret,) = _docs((MANIFESTS / "s3-credentials.example.yaml").read_text())
    assert secret["kind"] == "Secret" and "data" not in secret
    assert all(v == "" for v in secret["stringData"].values())


# ------------------------------------------------------------------ docker/

IMAGES = {
    # image: (Dockerfile, modules it runs, its Python dependency list)
    "component": ("Dockerfile", [p for p in ("damoc", "components", "pipelines", "damoc_components",
                                             "damoc_pipelines") if (REPO / p).is_dir()], "pyproject"),
    "train": ("Dockerfile.train", ["damoc.training", "damoc.storage", "components.candidate"], "requirements-train.txt"),
    "rewriter": ("Dockerfile.rewriter", ["damoc.storage", "docker/rewriter/fetch_model.py",
                                         "docker/rewriter/probe.py"], "requirements-rewriter.txt"),
}
# Provided by the rewriter's base image (vllm/vllm-openai), not by our list.
VLLM_BASE_PROVIDES = {"vllm", "torch", "transformers", "urllib3", "numpy", "requests"}
FIRST_PARTY = {"damoc", "components", "pipelines", "damoc_components", "damoc_pipelines"}


def _module_file(name: str) -> Path | None:
    p = REPO.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path, module: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _closure(entries: list[str]) -> tuple[set[str], set[str]]:
    """(first-party modules reached, third-party top-level imports) from the entry modules/scripts."""
    todo, seen, third = [], set(), set()
    for e in entries:
        if e.endswith(".py"):
            for imp in _imports(REPO / e, "__main__"):
                if imp.split(".")[0] in FIRST_PARTY:
                    todo.append(imp)
                else:
                    third.add(imp.split(".")[0])
        elif (REPO.joinpath(*e.split("."))).is_dir():  # a package: every module in it
            for f in REPO.joinpath(*e.split(".")).rglob("*.py"):
                todo.append(".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
        else:
            todo.append(e)
    while todo:
        mod = todo.pop()
        f = _module_file(mod)
        if f is None or mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for imp in _imports(f, mod):
            top = imp.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(imp)
            else:
                third.add(top)
    return seen, third - set(sys.stdlib_module_names) - {"__future__"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines: list[str]) -> dict[str, str]:
    out = {}
    for ln in lines:
        ln = ln.split("#")[0].strip()
        if ln:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", ln)
            assert m, f"not an exact pin: {ln!r}"
            out[_canon(m.group(1))] = m.group(3)
    return out


def _declared(source: str) -> dict[str, str]:
    if source == "pyproject":
        return _requirement_names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    return _requirement_names((DOCKER / source).read_text().splitlines())


def _with_dependencies(dists: set[str]) -> set[str]:
    """The distributions pip installs for `dists` (their requirement closure, from installed metadata)."""
    out, todo = set(), list(dists)
    while todo:
        d = todo.pop()
        if d in out:
            continue
        out.add(d)
        try:
            reqs = md.requires(d) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(_canon(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]))
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_image_dependency_list_covers_what_its_code_imports(image):
    dockerfile, entries, source = IMAGES[image]
    modules, third = _closure(entries)
    declared = _declared(source)
    installed = _with_dependencies(set(declared))
    dist_of = md.packages_distributions()
    provided = VLLM_BASE_PROVIDES if image == "rewriter" else set()
    missing = []
    for top in sorted(third - provided):
        dists = {_canon(d) for d in dist_of.get(top, [top])}
        if not dists & installed:
            missing.append(f"{top} (distribution {'/'.join(sorted(dists))})")
    assert not missing, f"{image} image ({source}) lacks: {', '.join(missing)}"
    # Pins agree with pyproject.toml, so every image runs the same versions.
    project = _declared("pyproject")
    for name, pin in declared.items():
        if name in project:
            assert pin == project[name], f"{source}: {name}=={pin} but pyproject pins {project[name]}"
    text = (DOCKER / dockerfile).read_text()
    if image != "rewriter":  # every first-party package it runs is copied into the image
        for top in sorted({m.split(".")[0] for m in modules}):
            assert re.search(rf"^COPY {top}/ ", text, re.M), f"{dockerfile} runs {top} but does not COPY {top}/"
    if image == "rewriter":  # only the damoc modules it copies may be imported
        copied = {".".join(Path(p).with_suffix("").parts) for p in re.findall(r"(damoc/[\w/]+\.py)", text)}
        copied = {m.removesuffix(".__init__") for m in copied}
        assert modules <= copied, f"rewriter image imports {sorted(modules - copied)} but does not COPY them"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.train", "Dockerfile.rewriter"])
def test_dockerfile_invariants(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # Every base image comes from an ARG with an exact tag (digest-capable), never :latest or untagged.
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for ref in re.findall(r"^FROM (\S+)", text, re.M):
        if ref in {"uv", "build"}:
            continue
        image = args[ref.strip("${}")] if ref.startswith("$") else ref
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{dockerfile}: unpinned base {image}"
    # Runs as the numeric non-root user; nothing secret or offline-forcing baked into ENV.
    assert [ln for ln in lines if ln.startswith("USER")][-1] == "USER ${UID}:${UID}"
    assert "ARG UID=1000" in lines
    env = " ".join(ln for ln in lines if not ln.startswith(("RUN", "&&", "COPY")))
    for forbidden in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "TOKEN=", "VLLM_API_KEY"):
        assert forbidden not in env, forbidden
    assert not any("--extra-index-url" in ln for ln in lines)
    # The build context is an allowlist.
    ignore = [ln.strip() for ln in (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*"
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            path = path.rstrip("*")
            assert f"!{path}" in ignore or any(path.startswith(i[1:]) for i in ignore if i.startswith("!")), \
                f"{dockerfile}: COPY {path} is excluded by its .dockerignore"


def test_images_share_the_uid_the_chart_runs_as():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 1000


def test_make_images_builds_and_pushes_all_three():
    proc = subprocess.run(["make", "-n", "images", "REGISTRY=r.example/ml", "TAG=9.9"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for name, dockerfile in (("damoc", "Dockerfile"), ("damoc-train", "Dockerfile.train"),
                             ("damoc-rewriter", "Dockerfile.rewriter")):
        assert f"-f docker/{dockerfile}" in proc.stdout
        assert f"-t r.example/ml/{name}:9.9" in proc.stdout
        assert f"push r.example/ml/{name}:9.9" in proc.stdout


def test_launcher_role_matches_the_code():
    """Least privilege (issue 12): the Role grants exactly the Kubernetes calls the cluster code makes, on the job
    kinds of exactly the launchers there are (each cluster module's GROUP/PLURAL)."""
    import importlib

    code = "\n".join(p.read_text() for p in (REPO / "damoc" / "cluster").glob("*.py"))
    called = set(re.findall(r"api\.(\w+)\(", code))  # api. and core_api.
    known = set(_CUSTOM_CALLS) | set(_CORE_CALLS)
    unknown = {c for c in called if c not in known and ("namespaced" in c or c.startswith(("create", "patch")))}
    assert not unknown, f"add {unknown} to _CUSTOM_CALLS/_CORE_CALLS and the Role"
    kinds = {name: importlib.import_module(module) for name, module in (
        ("trainjob", "damoc.cluster.trainjob"), ("pytorchjob", "damoc.cluster.training_job"))}
    assert {n: (m.GROUP, m.PLURAL) for n, m in kinds.items()} == JOB_KINDS
    from damoc.training.launchers import LAUNCHERS

    assert set(JOB_KINDS) <= set(LAUNCHERS.names())
    needed: dict[tuple[str, str], set[str]] = {}
    for call in called & set(_CUSTOM_CALLS):
        for group_resource in JOB_KINDS.values():
            needed.setdefault(group_resource, set()).add(_CUSTOM_CALLS[call])
    for call in called & set(_CORE_CALLS):
        group, resource, verb = _CORE_CALLS[call]
        needed.setdefault((group, resource), set()).add(verb)
    assert needed == LAUNCHER_RULES
    role = yaml.safe_load((MANIFESTS / "role.yaml").read_text())
    assert _rules(role) == LAUNCHER_RULES
    # Turning a launcher off drops exactly its rule.
    objects = _render({"rbac": {"launchers": ["trainjob"]}})
    assert _rules(_by(objects, "Role", "damoc")) == launcher_rules(["trainjob"])


def test_trainer_runtime_is_values_gated_and_matches_the_cluster_copy(helm):
    assert not any("TrainingRuntime" in o["kind"] for o in _render())
    (rt,) = [o for o in _render({"trainer": {"runtime": {"create": True}}}) if o["kind"] == "TrainingRuntime"]
    assert rt["metadata"] == {**rt["metadata"], "name": "damoc-torch", "namespace": NS}
    _validate_crd(rt, CRD_FILES[("trainer.kubeflow.org/v1alpha1", "TrainingRuntime")])
    (rjob,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert rt["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}} and rjob["name"] == "node"
    (c,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "node" and c["image"] == "ghcr.io/damoc-project/damoc-train:0.1.0"
    assert "failurePolicy" not in rt["spec"]["template"]["spec"]
    (cluster,) = [o for o in _render({"trainer": {"runtime": {"create": True, "kind": "ClusterTrainingRuntime",
                                                              "maxRestarts": 3}}}) if "TrainingRuntime" in o["kind"]]
    assert "namespace" not in cluster["metadata"] and cluster["spec"]["template"]["spec"]["failurePolicy"] == {
        "maxRestarts": 3}
    _validate_crd(cluster, CRD_FILES[("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime")])
    (shipped,) = _docs((MANIFESTS / "trainer-runtime" / "clustertrainingruntime.yaml").read_text())
    (rendered,) = [o for o in _render({"trainer": {"runtime": {"create": True, "kind": "ClusterTrainingRuntime"}}})
                   if o["kind"] == "ClusterTrainingRuntime"]
    assert _strip(shipped) == _strip(rendered), "manifests/trainer-runtime differs from the chart's render"
    if shutil.which("kubectl"):  # the cluster admin's command builds it as is
        assert _kustomize(MANIFESTS / "trainer-runtime") == [shipped]
