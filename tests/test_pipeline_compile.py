"""The compiled pipeline: committed, fresh, loadable by kfp, with fan-out/fan-in and GPU settings."""
import pytest
import yaml

from damoc_pipelines.compile import COMPILED_DIR, COMPILED_NAME, compile_pipeline


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_is_not_stale(tmp_path):
    fresh = compile_pipeline(tmp_path)
    committed = COMPILED_DIR / COMPILED_NAME
    assert committed.is_file(), "run `make compile` and commit pipelines/compiled/"
    # Compared as YAML: kfp's header comments print struct defaults in an unstable key order.
    assert _docs(fresh) == _docs(committed), "pipelines/compiled is stale: run `make compile`"


def test_loads_back_with_kfp_loader():
    from kfp import components

    comp = components.load_component_from_file(str(COMPILED_DIR / COMPILED_NAME))
    inputs = comp.component_spec.inputs
    assert {"candidates", "data", "mode", "filter", "output_uri"} <= set(inputs)
    assert inputs["filter"].default["ratio"] == 0.2


def test_compiled_defaults_and_descriptions_come_from_the_schema():
    from damoc.config_params import parameter_descriptions, pipeline_defaults

    spec, _ = _docs(COMPILED_DIR / COMPILED_NAME)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(pipeline_defaults()) | {"candidates"}
    for name, default in pipeline_defaults().items():
        assert params[name]["defaultValue"] == default, f"default of {name} differs from the config schema"
    for name, param in params.items():
        assert param.get("description"), f"pipeline parameter {name} has no description"
        assert " ".join(parameter_descriptions()[name].split()) == param["description"], name
    assert params["filter"]["parameterType"] == "STRUCT" and params["candidates"]["parameterType"] == "LIST"
    assert "ratio (float, default 0.2)" in params["filter"]["description"]


def test_fan_out_fan_in_and_accelerators():
    spec, platform = _docs(COMPILED_DIR / COMPILED_NAME)
    root_tasks = spec["root"]["dag"]["tasks"]
    [(loop_name, loop)] = [(n, t) for n, t in root_tasks.items() if "parameterIterator" in t]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--candidates"
    loop_dag = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {"prune-model", "finetune-model", "evaluate-model"} <= set(loop_dag)
    # fan-in: the rank task collects the loop's evaluation result artifacts (never a parameter: 128 KiB limit)
    rank_in = root_tasks["rank-candidates"]["inputs"]["artifacts"]["results"]
    assert rank_in["taskOutputArtifact"]["producerTask"] == loop_name
    assert spec["components"]["comp-rank-candidates"]["inputDefinitions"]["artifacts"]["results"]["isArtifactList"]
    train_exec = spec["deploymentSpec"]["executors"]["exec-finetune-model"]["container"]
    accel = train_exec["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == "1"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tolerations = k8s["exec-finetune-model"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    for name, executor in k8s.items():
        assert executor["securityContext"]["runAsNonRoot"] is True, name
        assert executor["secretAsEnv"][0]["optional"] is True, name
    assert "AWS_SECRET_ACCESS_KEY" not in spec["root"]["inputDefinitions"]["parameters"]
    # per-candidate results are artifacts; the candidate tasks output no parameters at all
    for name in ("comp-prune-model", "comp-finetune-model", "comp-evaluate-model", "comp-validate-config"):
        assert "parameters" not in spec["components"][name].get("outputDefinitions", {}), name
    assert "result" in spec["components"]["comp-evaluate-model"]["outputDefinitions"]["artifacts"]
    assert set(spec["components"]["comp-fingerprint-data"]["outputDefinitions"]["parameters"]) == {
        "fingerprint", "started_at"}


def test_metrics_and_html_artifacts_for_the_kfp_ui():
    spec, _ = _docs(COMPILED_DIR / COMPILED_NAME)
    comps = spec["components"]

    def artifacts(name):
        outs = comps[name].get("outputDefinitions", {}).get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in outs.items()}

    for name in ("comp-prepare-data", "comp-filter-data", "comp-compress-data", "comp-prune-model",
                 "comp-finetune-model", "comp-evaluate-model", "comp-rank-candidates"):
        assert artifacts(name).get("metrics") == "system.Metrics", name
    rank = artifacts("comp-rank-candidates")
    assert rank["report"] == "system.Markdown" and rank["report_html"] == "system.HTML"
    # the pipeline's output is still the selected candidate
    assert set(spec["root"]["outputDefinitions"]["parameters"]) == {"Output"}


def _all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_component_input_and_output_is_described():
    spec, _ = _docs(COMPILED_DIR / COMPILED_NAME)
    count = 0
    for name, comp in spec["components"].items():
        if "executorLabel" not in comp:
            continue  # the loop's DAG
        for side in ("inputDefinitions", "outputDefinitions"):
            for kind in ("parameters", "artifacts"):
                for io_name, io in comp.get(side, {}).get(kind, {}).items():
                    count += 1
                    assert len(io.get("description", "")) > 10, f"{name} {side} {io_name} has no description"
    assert count >= 56


def test_gpu_tasks_run_the_training_image_and_the_rest_the_component_image():
    from damoc_components.images import DEFAULT_IMAGE, DEFAULT_TRAINING_IMAGE

    spec, _ = _docs(COMPILED_DIR / COMPILED_NAME)
    executors = spec["deploymentSpec"]["executors"]
    gpu = {n for n, e in executors.items() if e["container"].get("resources", {}).get("accelerator")}
    assert gpu == {"exec-finetune-model", "exec-evaluate-model"}
    for name, executor in executors.items():
        assert executor["container"]["image"] == (DEFAULT_TRAINING_IMAGE if name in gpu else DEFAULT_IMAGE), name


def test_set_images_rewrites_one_family_of_the_compiled_spec():
    from damoc.cluster.pipeline_images import images, set_images

    text = (COMPILED_DIR / COMPILED_NAME).read_text()
    new = set_images(text, training="registry.example.com/ml/damoc-train:9")
    got = images(new)
    assert got["exec-finetune-model"] == got["exec-evaluate-model"] == "registry.example.com/ml/damoc-train:9"
    assert got["exec-prune-model"] == images(text)["exec-prune-model"]
    both = images(set_images(text, component="mirror/damoc:1", training="mirror/train:1"))
    assert set(both.values()) == {"mirror/damoc:1", "mirror/train:1"}
    assert both["exec-rank-candidates"] == "mirror/damoc:1"
    assert set_images(text) == text
    with pytest.raises(ValueError, match="--image-training"):
        set_images(text, training="has space")
    # the rewritten package still loads and keeps its platform part (secrets, tolerations)
    docs = list(yaml.safe_load_all(new))
    assert len(docs) == 2 and "exec-finetune-model" in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_compile_time_image_settings(tmp_path, monkeypatch):
    import subprocess
    import sys

    from damoc.cluster.pipeline_images import images

    got = images(compile_pipeline(tmp_path / "a", training_image="mirror/train:2").read_text())
    assert got["exec-evaluate-model"] == "mirror/train:2" and got["exec-validate-config"].endswith("/damoc:0.1.0")
    # the environment of a fresh `damoc compile` process sets each family's image too
    monkeypatch.setenv("DAMOC_TRAINING_IMAGE", "env/train:3")
    monkeypatch.setenv("DAMOC_IMAGE", "env/damoc:3")
    subprocess.run([sys.executable, "-m", "damoc.cli", "compile", "--out", str(tmp_path / "b")], check=True,
                   capture_output=True)
    got = images((tmp_path / "b" / COMPILED_NAME).read_text())
    assert {got["exec-finetune-model"], got["exec-evaluate-model"]} == {"env/train:3"}
    assert got["exec-prune-model"] == got["exec-rank-candidates"] == "env/damoc:3"


def test_caching_keyed_on_the_data_and_retries_with_backoff():
    from damoc_pipelines.damoc_pipeline import RETRIED, UNCACHED

    spec, _ = _docs(COMPILED_DIR / COMPILED_NAME)
    tasks = _all_tasks(spec)
    for name, t in tasks.items():
        if "componentRef" not in t or name.startswith("for-loop"):
            continue
        cached = (t.get("cachingOptions") or {}).get("enableCache", False)
        assert cached == (name not in UNCACHED), name
        policy = t.get("retryPolicy")
        if name in RETRIED:
            assert policy["maxRetryCount"] == 3 and policy["backoffFactor"] == 2.0, name
            assert policy["backoffDuration"] == "60s" and policy["backoffMaxDuration"] == "1800s", name
        else:
            assert policy is None, name
    # prepare-data (the task that reads the user's files) is keyed on the uncached fingerprint's output
    fp = tasks["prepare-data"]["inputs"]["parameters"]["data_fingerprint"]["taskOutputParameter"]
    assert fp == {"outputParameterKey": "fingerprint", "producerTask": "fingerprint-data"}
    started = tasks["rank-candidates"]["inputs"]["parameters"]["started_at"]["taskOutputParameter"]
    assert started["producerTask"] == "fingerprint-data"
    assert {"prune-model", "finetune-model", "evaluate-model", "prepare-data", "rank-candidates"} <= set(RETRIED)


def test_config_map_settings_reach_the_tasks_that_read_them():
    from damoc.cluster.deploy_settings import CONFIG_MAP_NAME, CONFIG_MAP_SETTINGS

    _, platform = _docs(COMPILED_DIR / COMPILED_NAME)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    loaded = {}
    for name, executor in k8s.items():
        for cm in executor.get("configMapAsEnv", []):
            assert cm["configMapName"] == CONFIG_MAP_NAME and cm["optional"] is True
            for pair in cm["keyToEnv"]:
                loaded.setdefault(pair["configMapKey"], set()).add(name.removeprefix("exec-"))
    assert loaded == {k: set(s.tasks) for k, s in CONFIG_MAP_SETTINGS.items()}
    assert "finetune-model" in loaded["DAMOC_TRAINING_IMAGE"]
