"""The compiled pipeline: committed, fresh, loadable by kfp, with fan-out/fan-in and GPU settings."""
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
    # fan-in: the rank task collects the loop's evaluation outputs
    rank_in = root_tasks["rank-candidates"]["inputs"]["parameters"]["results"]
    assert rank_in["taskOutputParameter"]["producerTask"] == loop_name
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
    outputs = spec["components"]["comp-evaluate-model"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"result"}  # named outputs, not the anonymous "Output"
    assert set(spec["components"]["comp-validate-config"]["outputDefinitions"]["parameters"]) == {"started_at"}


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
