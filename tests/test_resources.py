"""Per-task resources (issue 12 item 5, issue 9 item 7): the config's `resources` section is fixed into the
compiled pipeline at compile time (`damoc compile [--config run.yaml]`), per task, and is never a pipeline
parameter."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from damoc.cli import main
from damoc.config import ConfigError, ResourcesConfig, parse_config
from damoc.config_params import from_pipeline_arguments, to_pipeline_arguments

# config task name -> the compiled executor of its component
EXECUTORS = {"validate_config": "exec-validate-config", "prepare": "exec-prepare-data",
             "filter": "exec-filter-data", "compress": "exec-compress-data", "prune": "exec-prune-model",
             "train": "exec-finetune-model", "evaluate": "exec-evaluate-model", "rank": "exec-rank-candidates"}
MINIMAL = {"data": {"train": "/d/train.jsonl", "eval": "/d/eval.jsonl"}, "candidates": [{"name": "a", "path": "/m/a"}]}


def _compiled(out_dir: Path) -> tuple[dict, dict]:
    """(deploymentSpec executors, kubernetes platform executors) of the compiled YAML."""
    pipeline, platform = list(yaml.safe_load_all((out_dir / "damoc_pipeline.yaml").read_text()))
    return (pipeline["deploymentSpec"]["executors"],
            platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])


def _compile(tmp_path: Path, resources: dict | None = None) -> tuple[dict, dict, dict]:
    args = ["compile", "--out", str(tmp_path / "out")]
    if resources is not None:
        cfg = tmp_path / "run.yaml"
        cfg.write_text(yaml.safe_dump({**MINIMAL, "resources": resources}))
        args += ["--config", str(cfg)]
    assert main(args) == 0
    pipeline, platform = _compiled(tmp_path / "out")
    return pipeline, platform, yaml.safe_load((tmp_path / "out" / "damoc_pipeline.yaml").read_text().split("---")[0])


def _requested(executors: dict, name: str) -> dict:
    res = executors[EXECUTORS[name]]["container"]["resources"]
    acc = res.get("accelerator") or {}
    return {"cpu_request": res["resourceCpuRequest"], "cpu_limit": res["resourceCpuLimit"],
            "memory_request": res["resourceMemoryRequest"], "memory_limit": res["resourceMemoryLimit"],
            "accelerators": int(acc.get("resourceCount", 0)), "accelerator_type": acc.get("resourceType")}


def _tolerations(platform: dict, name: str) -> list[dict]:
    return platform[EXECUTORS[name]].get("tolerations", [])


def test_every_task_gets_the_default_requests_and_limits(tmp_path):
    executors, platform, spec = _compile(tmp_path)
    expected = {  # hand-written: a change of the defaults must be deliberate
        "validate_config": ("100m", "500m", "256Mi", "1Gi", 0), "prepare": ("1", "2", "2Gi", "4Gi", 0),
        "filter": ("2", "4", "8Gi", "16Gi", 0), "compress": ("2", "4", "8Gi", "16Gi", 0),
        "prune": ("4", "8", "32Gi", "64Gi", 0), "train": ("4", "8", "32Gi", "64Gi", 1),
        "evaluate": ("4", "8", "32Gi", "64Gi", 1), "rank": ("1", "2", "2Gi", "4Gi", 0)}
    # no task left out; fingerprint-data (a HEAD request per data file) is sized like validate-config
    assert set(EXECUTORS.values()) | {"exec-fingerprint-data"} == set(executors)
    assert (executors["exec-fingerprint-data"]["container"]["resources"]
            == executors["exec-validate-config"]["container"]["resources"])
    for task, (cpu_req, cpu_lim, mem_req, mem_lim, acc) in expected.items():
        got = _requested(executors, task)
        assert got == {"cpu_request": cpu_req, "cpu_limit": cpu_lim, "memory_request": mem_req,
                       "memory_limit": mem_lim, "accelerators": acc,
                       "accelerator_type": "nvidia.com/gpu" if acc else None}, task
        gpu_toleration = [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
        assert _tolerations(platform, task) == (gpu_toleration if acc else []), task
        # the object store's retry settings travel in the S3 Secret beside the endpoint (each key optional)
        secrets = platform[EXECUTORS[task]]["secretAsEnv"]
        keys = {m["secretKey"] for secret in secrets for m in secret["keyToEnv"]}
        assert {"DAMOC_S3_ENDPOINT", "DAMOC_S3_RETRIES", "DAMOC_S3_TIMEOUT_S"} <= keys, task
        # KFP's own store Secret (mlpipeline-minio-artifact) names its keys accesskey/secretkey: mapped to the
        # MinIO variables damoc.storage falls back to
        kfp_store = {m["secretKey"]: m["envVar"] for secret in secrets for m in secret["keyToEnv"]
                     if m["secretKey"] in ("accesskey", "secretkey")}
        assert kfp_store == {"accesskey": "MINIO_ACCESS_KEY", "secretkey": "MINIO_SECRET_KEY"}, task
        assert all(secret["optional"] is True for secret in secrets), task
        # API keys of LLM endpoints only where an endpoint is called: the alpagasus judge and the rewriter
        assert ("DAMOC_REWRITER_API_KEY" in keys) == (task in ("filter", "compress")), task
    # compile time, not a parameter: the pipeline's inputs are the config sections without `resources`
    assert "resources" not in spec["root"]["inputDefinitions"]["parameters"]


def test_a_config_with_other_values_compiles_to_them(tmp_path):
    executors, platform, _ = _compile(tmp_path, {
        "accelerator_type": "amd.com/gpu",
        "prune": {"memory_request": "96Gi", "memory_limit": "128Gi", "accelerators": 1},
        "train": {"accelerators": 4, "cpu_limit": "16"},
        "rank": {"cpu_request": "250m", "cpu_limit": "500m"}})
    assert _requested(executors, "prune") == {"cpu_request": "4", "cpu_limit": "8", "memory_request": "96Gi",
                                              "memory_limit": "128Gi", "accelerators": 1,
                                              "accelerator_type": "amd.com/gpu"}
    # a partial override keeps the task's other defaults (train keeps 4 CPUs requested, 32Gi/64Gi)
    assert _requested(executors, "train") == {"cpu_request": "4", "cpu_limit": "16", "memory_request": "32Gi",
                                              "memory_limit": "64Gi", "accelerators": 4,
                                              "accelerator_type": "amd.com/gpu"}
    assert _requested(executors, "rank")["cpu_request"] == "250m"
    assert _requested(executors, "filter")["memory_limit"] == "16Gi"  # untouched tasks keep the defaults
    for task in ("prune", "train", "evaluate"):
        assert _tolerations(platform, task) == [{"effect": "NoSchedule", "key": "amd.com/gpu", "operator": "Exists"}]
    assert _tolerations(platform, "compress") == []


@pytest.mark.parametrize("resources,message", [
    ({"train": {"cpu_request": "16"}}, "resources.train: cpu_limit 8 is below cpu_request 16"),
    ({"prune": {"memory_limit": "1.5Gi"}}, "resources.prune.memory_limit: '1.5Gi' is not a positive Kubernetes "
                                           "memory quantity"),
    ({"filter": {"cpu_limit": "0"}}, "resources.filter.cpu_limit: '0' is not a positive Kubernetes cpu quantity"),
    ({"evaluate": {"accelerators": -1}}, "resources.evaluate.accelerators: Input should be greater than or equal to 0"),
    ({"trian": {}}, "resources.trian: unknown key"),
])
def test_bad_resources_are_config_errors_naming_the_key(tmp_path, capsys, resources, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_config({**MINIMAL, "resources": resources})
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**MINIMAL, "resources": resources}))
    assert main(["compile", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "damoc_pipeline.yaml").exists()


def test_resources_never_travel_as_pipeline_arguments():
    cfg = parse_config({**MINIMAL, "resources": {"train": {"accelerators": 2}}})
    args = to_pipeline_arguments(cfg)
    assert "resources" not in args and {"data", "filter", "candidates", "mode"} <= set(args)
    assert from_pipeline_arguments(args).resources == ResourcesConfig()  # inside the pipeline: not needed
