"""The compiled pipeline: committed, fresh, loadable by kfp, with fan-out/fan-in and GPU settings."""
import yaml

from pipelines.compile import COMPILED_DIR, COMPILED_NAME, compile_pipeline


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_is_not_stale(tmp_path):
    fresh = compile_pipeline(tmp_path)
    committed = COMPILED_DIR / COMPILED_NAME
    assert committed.is_file(), "run `make compile` and commit pipelines/compiled/"
    assert fresh.read_text() == committed.read_text(), "pipelines/compiled is stale: run `make compile`"


def test_loads_back_with_kfp_loader():
    from kfp import components

    comp = components.load_component_from_file(str(COMPILED_DIR / COMPILED_NAME))
    inputs = comp.component_spec.inputs
    assert {"candidates", "data_train", "data_eval", "mode", "filter_ratio"} <= set(inputs)
    assert inputs["filter_ratio"].default == 0.2


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
