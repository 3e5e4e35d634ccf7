"""Offline checks of the cluster side: manifests/ (kustomize base), helm/damoc, docker/Dockerfile.

Every Kubernetes object is validated against the schemas bundled with `kubernetes-validate` (strict:
unknown fields fail), without an API server. RBAC is checked to stay least-privilege, and the Helm
chart is linted and rendered with the Helm SDK (`helm-python-sdk`) when it is installed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
CHART = REPO / "helm" / "damoc"
DOCKERFILE = REPO / "docker" / "Dockerfile"

# Oldest supported (kubeVersion in Chart.yaml is >=1.25; 1.30 is a common floor today) and newest bundled.
K8S_VERSIONS = ["1.30.0", kv.latest_version()]
SECRET_TEMPLATE = "s3-credentials.example.yaml"
S3_SECRET = "s3-credentials"
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DAMOC_S3_ENDPOINT"}

# The complete permission set: (apiGroup, resource) -> verbs. Anything else is a regression.
ALLOWED_RULES = {
    ("kubeflow.org", "pytorchjobs"): {"create", "get", "list", "watch", "delete"},
    ("trainer.kubeflow.org", "trainjobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "services"): {"create", "get", "delete"},
    ("", "secrets"): {"get"},
}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition",
                 "PersistentVolume", "StorageClass", "PriorityClass"}


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def _manifest_objects() -> list[tuple[str, dict]]:
    return [(p.name, o) for p in _manifest_files() for o in _docs(p.read_text())]


def _kustomization() -> dict:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def _validate(obj: dict, version: str) -> None:
    """Raise with a readable message; a kind without a bundled schema is a failure, not a skip."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{where} invalid for Kubernetes {version} at {path or '<root>'}: {e.message}")
    except kv.SchemaNotFoundError as e:
        pytest.fail(f"{where}: {e.message}")


def _assert_least_privilege(objects: list[dict]) -> None:
    kinds = {o["kind"] for o in objects}
    assert not kinds & CLUSTER_KINDS, f"cluster-scoped objects: {kinds & CLUSTER_KINDS}"
    roles = [o for o in objects if o["kind"] == "Role"]
    assert roles, "no Role found"
    for role in roles:
        for rule in role["rules"]:
            groups, resources, verbs = rule["apiGroups"], rule["resources"], rule["verbs"]
            for field in (groups, resources, verbs, rule.get("resourceNames", [])):
                assert "*" not in field and not any("*" in x for x in field), f"wildcard in {rule}"
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate", "patch", "update", "deletecollection"} & set(verbs)
            for g in groups:
                for r in resources:
                    assert (g, r) in ALLOWED_RULES, f"unexpected permission on {g or 'core'}/{r}"
                    assert set(verbs) <= ALLOWED_RULES[(g, r)], f"{g}/{r}: {verbs}"
                    if r == "secrets":
                        # Secrets only by name (resourceNames cannot restrict list/watch).
                        assert rule.get("resourceNames") == [S3_SECRET], rule
                        assert verbs == ["get"], rule
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        assert rb["roleRef"]["kind"] == "Role", "RoleBinding must not reference a ClusterRole"
        assert rb["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}


def _rule_set(role: dict) -> set[tuple]:
    return {(g, r, tuple(sorted(rule["verbs"])), tuple(rule.get("resourceNames", [])))
            for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


# ------------------------------------------------------------------ manifests/ (kustomize base)

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_object_validates(version):
    objects = _manifest_objects()
    assert {o["kind"] for _, o in objects} >= {"ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap"}
    for _, obj in objects:
        _validate(obj, version)


def test_kustomization_lists_everything_but_the_secret_template():
    k = _kustomization()
    assert k["kind"] == "Kustomization"
    listed = set(k["resources"])
    assert all((MANIFESTS / f).is_file() for f in listed)
    # Applying the base must never overwrite a real Secret with the empty template.
    assert SECRET_TEMPLATE not in listed
    assert listed == {p.name for p in _manifest_files()} - {SECRET_TEMPLATE}


def test_manifest_rbac_is_least_privilege():
    _assert_least_privilege([o for _, o in _manifest_objects()])
    rb = next(o for _, o in _manifest_objects() if o["kind"] == "RoleBinding")
    sa = next(o for _, o in _manifest_objects() if o["kind"] == "ServiceAccount")
    assert sa["metadata"]["name"] == "damoc-runner"
    assert [s["name"] for s in rb["subjects"]] == ["damoc-runner"]


def test_secret_template_has_only_empty_placeholders():
    (secret,) = _docs((MANIFESTS / SECRET_TEMPLATE).read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == S3_SECRET
    assert "data" not in secret
    assert set(secret["stringData"]) == S3_KEYS
    assert all(v == "" for v in secret["stringData"].values())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_build_validates(tmp_path):
    """What `kubectl apply -k` would send, including an overlay that moves it to another namespace."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         # kustomize rejects absolute paths; a relative one to another directory is fine.
         "namespace": "team-a", "resources": [os.path.relpath(MANIFESTS, overlay)]}))
    for target, ns in ((MANIFESTS, _kustomization()["namespace"]), (overlay, "team-a")):
        proc = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        objects = _docs(out)
        assert objects and not any(o["kind"] == "Secret" for o in objects)
        for obj in objects:
            _validate(obj, K8S_VERSIONS[0])
            assert obj["metadata"]["namespace"] == ns
        _assert_least_privilege(objects)
        rb = next(o for o in objects if o["kind"] == "RoleBinding")
        # A ServiceAccount subject without the right namespace binds nothing.
        assert all(s["namespace"] == ns for s in rb["subjects"])


# ------------------------------------------------------------------ helm/damoc

@pytest.fixture(scope="module")
def helm():
    return pytest.importorskip("helm_python")


def _render(helm, values: dict | None = None, namespace: str = "team-a") -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name="damoc", namespace=namespace)
    return [o for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml"))
            for o in _docs(text)]


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (meta["apiVersion"], meta["name"], meta["version"]) == ("v2", "damoc", "0.1.0")


def test_chart_lints_strict(helm):
    for values in ({}, {"s3": {"existingSecret": ""}, "serviceAccount": {"create": False}}):
        report = helm.lint(CHART, values, strict=True, namespace="team-a", kube_version="v1.30.0")
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not bad, report


VALUE_CASES = {
    "defaults": {},
    "no-s3-existing-sa": {"s3": {"existingSecret": ""}, "serviceAccount": {"create": False, "name": "default-editor"}},
    "extra-subject-gpu": {
        "rbac": {"extraSubjects": [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-a"}]},
        "gpu": {"nodeSelector": {"nvidia.com/gpu.present": "true"}, "tolerations": []},
        "image": {"repository": "registry.example/damoc", "tag": "0.1.0-cuda", "pullPolicy": "Always"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    },
}


@pytest.mark.parametrize("case", VALUE_CASES)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_chart_renders_valid_least_privilege_objects(helm, case, version):
    objects = _render(helm, VALUE_CASES[case])
    assert objects
    for obj in objects:
        _validate(obj, version)
        assert obj["metadata"]["namespace"] == "team-a"
    assert not any(o["kind"] == "Secret" for o in objects), "the chart must never create the S3 Secret"
    _assert_least_privilege(objects)


def test_chart_defaults_match_the_kustomize_base(helm):
    objects = {o["kind"]: o for o in _render(helm)}
    base = {o["kind"]: o for _, o in _manifest_objects()}
    assert _rule_set(objects["Role"]) == _rule_set(base["Role"])
    assert objects["ServiceAccount"]["metadata"]["name"] == base["ServiceAccount"]["metadata"]["name"]
    chart_cm, base_cm = objects["ConfigMap"]["data"], base["ConfigMap"]["data"]
    assert objects["ConfigMap"]["metadata"]["name"] == base["ConfigMap"]["metadata"]["name"] == "damoc-defaults"
    assert set(chart_cm) == set(base_cm)
    for key in chart_cm:  # JSON-valued keys compare as data, not text
        decode = json.loads if key.startswith(("DAMOC_GPU_NODE", "DAMOC_GPU_TOL", "DAMOC_POD")) else str
        assert decode(chart_cm[key]) == decode(base_cm[key]), key
    assert chart_cm["DAMOC_IMAGE"] == "ghcr.io/damoc-project/damoc:0.1.0"


def test_chart_values_reach_the_defaults_configmap(helm):
    objects = _render(helm, VALUE_CASES["extra-subject-gpu"])
    cm = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert cm["DAMOC_IMAGE"] == "registry.example/damoc:0.1.0-cuda"
    assert cm["DAMOC_IMAGE_PULL_POLICY"] == "Always"
    assert json.loads(cm["DAMOC_GPU_NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true"}
    assert json.loads(cm["DAMOC_GPU_TOLERATIONS"]) == []
    rb = next(o for o in objects if o["kind"] == "RoleBinding")
    assert [s["name"] for s in rb["subjects"]] == ["damoc-runner", "default-editor"]

    objects = _render(helm, VALUE_CASES["no-s3-existing-sa"])
    assert not any(o["kind"] == "ServiceAccount" for o in objects)
    role = next(o for o in objects if o["kind"] == "Role")
    assert not any("secrets" in r["resources"] for r in role["rules"])
    rb = next(o for o in objects if o["kind"] == "RoleBinding")
    assert rb["subjects"][0]["name"] == "default-editor"


def test_chart_pod_security_defaults_match_the_image():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    psc = values["podSecurityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["fsGroup"] == 1000
    assert "ARG UID=1000" in DOCKERFILE.read_text()


# ------------------------------------------------------------------ docker/

def test_dockerfile_invariants():
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0].startswith("ARG PYTHON_IMAGE=python:3.11-slim")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    # The torch pin is taken from pyproject.toml, so it must be exact there.
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in deps if d.startswith("torch")] == ["torch==2.13.0"]
    assert not any("--extra-index-url" in ln for ln in lines)
    # Runs as a numeric non-root user; nothing secret or offline-forcing baked into ENV.
    assert [ln for ln in lines if ln.startswith("USER")][-1] == "USER ${UID}:${UID}"
    env = " ".join(ln for ln in lines if not ln.startswith(("RUN", "&&", "COPY", "#")))
    for forbidden in ("HF_HUB_OFFLINE", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "TOKEN="):
        assert forbidden not in env, forbidden
    # The build context is an allowlist: everything is excluded first, then only the sources re-included.
    ignore = [ln.strip() for ln in (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*"
    assert {ln for ln in ignore if ln.startswith("!")} <= {"!pyproject.toml", "!README.md", "!damoc/",
                                                            "!components/", "!pipelines/"}
