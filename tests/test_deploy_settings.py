"""The damoc-defaults ConfigMap and the code agree: every key has a reader, every DAMOC_* variable a source.

The key list lives in damoc/cluster/deploy_settings.py; the chart's ConfigMap (rendered) and the kustomize
base must publish exactly those keys, the module named as each key's reader must read it from the
environment, and every DAMOC_* variable named anywhere in the package, the components or the pipeline must be
a ConfigMap key, a Secret key the pipeline mounts, or one of the variables below that are deliberately not
deployment settings (each with the reason). A new variable fails here until it is placed.
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

from damoc.cluster.deploy_settings import CONFIG_MAP_NAME, CONFIG_MAP_SETTINGS
from damoc_pipelines.damoc_pipeline import API_KEY_SECRET_KEYS, S3_SECRET_KEYS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("damoc", "components", "pipelines")
NAME = re.compile(r"DAMOC_[A-Z0-9_]+")

# Variables that are not cluster deployment settings: where they come from instead.
NOT_DEPLOYMENT = {
    "DAMOC_HOME": "local cache root (a task uses its default)",
    "DAMOC_RESUME": "set by `damoc run` for kfp.local task processes (the stage cache)",
    "DAMOC_STAGE_CACHE_DIR": "local stage-cache location",
    "DAMOC_CODE_VERSION": "set by the local runner for its task processes",
    "DAMOC_DEBUG": "CLI switch",
    "DAMOC_VERBOSE": "CLI console switch",
    "DAMOC_LOG_FORMAT": "console/log format switch of the process",
    "DAMOC_PLUGINS": "plugin modules baked into the image, never configuration",
    "DAMOC_KFP_HOST": "client side: `damoc upload/submit/schedule`",
    "DAMOC_KFP_NAMESPACE": "client side (the registration hook sets it from its own pod)",
    "DAMOC_KFP_TOKEN": "client side (a Secret in the registration hook)",
    "DAMOC_KFP_TOKEN_FILE": "client side (a projected token in the registration hook)",
    "DAMOC_PIPELINE_PACKAGE": "client side: which compiled package `damoc upload` sends",
    "DAMOC_SERVICE_ACCOUNT": "client side: default of `damoc submit/schedule --service-account`",
    "DAMOC_IMAGE": "compile time: the component image (damoc_components.images)",
    "DAMOC_S3_SECURE": "optional override next to DAMOC_S3_ENDPOINT (the endpoint's scheme decides by default)",
    "DAMOC_RUN_ID": "optional: a launcher job's name prefix (a fresh id by default)",
    "DAMOC_TRAINING_NAMESPACE": "optional: the task pod's own namespace is the right default everywhere",
    "DAMOC_TRAINING_CPU": "launcher tunable with a default (8)",
    "DAMOC_TRAINING_MEMORY": "launcher tunable with a default (64Gi)",
    "DAMOC_TRAINING_SHM": "launcher tunable with a default (16Gi)",
    "DAMOC_TRAINING_TIMEOUT_S": "launcher tunable with a default (24 h)",
}


def _named_variables() -> dict[str, set[str]]:
    """Every string constant that is exactly a DAMOC_* name, with the files naming it."""
    found: dict[str, set[str]] = {}
    for root in SOURCES:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
                    found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))
    return found


def _reads_environment(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv") for n in ast.walk(tree))


def _chart_config_map() -> dict[str, str]:
    helm_python = pytest.importorskip("helm_python")
    with helm_python.Chart.load(ROOT / "helm" / "damoc") as chart:
        rendered = chart.render({}, name="damoc", namespace="damoc")
    for path, text in rendered.items():
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == CONFIG_MAP_NAME:
                return doc["data"]
    raise AssertionError(f"the chart renders no ConfigMap {CONFIG_MAP_NAME}")


def test_kustomize_config_map_publishes_exactly_the_settings():
    doc = yaml.safe_load((ROOT / "manifests" / "configmap-defaults.yaml").read_text())
    assert doc["metadata"]["name"] == CONFIG_MAP_NAME
    assert set(doc["data"]) == set(CONFIG_MAP_SETTINGS)


def test_chart_config_map_publishes_exactly_the_settings():
    data = _chart_config_map()
    assert set(data) == set(CONFIG_MAP_SETTINGS)
    assert data["DAMOC_TRAINING_IMAGE"] == "ghcr.io/damoc-project/damoc-train:0.1.0"


def test_every_key_is_read_by_its_reader():
    for key, setting in CONFIG_MAP_SETTINGS.items():
        path = ROOT / setting.reader
        tree = ast.parse(path.read_text(encoding="utf-8"))
        literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert key in literals and _reads_environment(tree), f"{key}: {setting.reader} does not read it"
        assert setting.tasks, f"{key} is loaded into no task"


def test_every_damoc_variable_has_a_source():
    secrets = set(S3_SECRET_KEYS) | set(API_KEY_SECRET_KEYS)
    unplaced = {name: sorted(files) for name, files in _named_variables().items()
                if name not in CONFIG_MAP_SETTINGS and name not in secrets and name not in NOT_DEPLOYMENT}
    assert not unplaced, (
        f"DAMOC_* variables with no source: {unplaced}. A deployment setting read in a task: add it to "
        "damoc/cluster/deploy_settings.py and the chart's configmap.yaml (+ manifests/configmap-defaults.yaml); "
        "anything else: to NOT_DEPLOYMENT here, with the reason")
    stale = sorted(set(NOT_DEPLOYMENT) - set(_named_variables()))
    assert not stale, f"NOT_DEPLOYMENT lists variables no code names any more: {stale}"


def test_the_old_mismatch_is_gone():
    """The chart used to publish DAMOC_TRAIN_IMAGE while the launcher read DAMOC_TRAINING_IMAGE."""
    assert "DAMOC_TRAIN_IMAGE" not in _named_variables()
    assert "DAMOC_TRAIN_IMAGE" not in (ROOT / "helm" / "damoc" / "templates" / "configmap.yaml").read_text()
