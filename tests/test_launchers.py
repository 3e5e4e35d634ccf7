"""Training launchers: torchrun (real processes on CPU, gloo) and pytorchjob (fake Kubernetes APIs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from damoc.cluster.training_job import JOB_NAME_LABEL, TrainingJobError, world_size
from damoc.config import TrainingConfig
from damoc.data.records import read_samples
from damoc.data.schema import Sample
from damoc.training import launchers as L
from test_training_job import crd_validator  # noqa: F401  (fixture: the pinned PyTorchJob CRD schema)

SAMPLES = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
           for i, w in enumerate(["river", "market", "bridge", "fever", "town", "patient"] * 4)]


def test_launchers_are_registered_and_the_config_accepts_them():
    assert {"in_process", "torchrun", "pytorchjob"} <= set(L.LAUNCHERS.names())
    for name in ("torchrun", "pytorchjob"):
        assert TrainingConfig(launcher=name).launcher == name
    assert L.default_processes() >= 1
    cmd = L.torchrun_command(2, L.worker_args("m", "s.jsonl", "c.json", "out", "st.json", trust_remote_code=True))
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[6] == "damoc.training.worker" and cmd[-1] == "--trust-remote-code"


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes(tiny_pair, tmp_path):
    """~16 s on 2 cores: two processes (gloo), each a micro batch of 4 of the batch of 8."""
    from transformers import AutoModelForCausalLM

    settings = TrainingConfig(launcher="torchrun", processes=2, epochs=2, batch_size=8, max_length=64,
                              learning_rate=3e-3)
    out = tmp_path / "model"
    stats = L.LAUNCHERS.get("torchrun").train(tiny_pair[1], SAMPLES, out, settings)
    assert stats["launcher"] == "torchrun" and stats["processes"] == stats["world_size"] == 2
    assert stats["micro_batch_size"] == 4 and stats["effective_batch_size"] == 8 and stats["steps"] == 6
    assert stats["loss_is_finite"] and AutoModelForCausalLM.from_pretrained(out) is not None
    assert not (tmp_path / ".model.launch").exists() and not (tmp_path / ".model.trainer").exists()


def test_torchrun_failure_raises_with_the_log_tail(tmp_path):
    settings = TrainingConfig(launcher="torchrun", processes=1, max_steps=1)
    with pytest.raises(RuntimeError, match=r"exited with code [1-9][\s\S]*(does_not_exist|Error)"):
        L.LAUNCHERS.get("torchrun").train(tmp_path / "does_not_exist", SAMPLES[:2], tmp_path / "m", settings)
    assert not (tmp_path / ".m.launch").exists()


# ------------------------------------------------------------------------------------------------ pytorchjob

class FakeCustomApi:
    """Records create/delete; `get` plays the job: the first poll 'runs' the worker (writes its outputs)."""

    def __init__(self, outcome="Succeeded", on_get=None):
        self.outcome, self.on_get = outcome, on_get
        self.calls, self.created = [], None

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, field_validation=None):
        assert field_validation == "Strict"  # an older CRD must refuse unknown fields, not prune them
        self.calls.append(("create", namespace, body["metadata"]["name"]))
        self.created = json.loads(json.dumps(body))
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        if self.on_get:
            self.on_get(self.created)
        cond = {"type": self.outcome, "status": "True", "reason": f"PyTorchJob{self.outcome}",
                "message": f"PyTorchJob {name} is {self.outcome.lower()}."}
        return {**self.created, "status": {"conditions": [{"type": "Running", "status": "False"}, cond]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.calls.append(("delete", namespace, name))


class FakeCoreApi:
    def list_namespaced_pod(self, namespace, label_selector=None):
        name = label_selector.split("=", 1)[1]
        return {"items": [{"metadata": {"name": f"{name}-master-0", "labels": {JOB_NAME_LABEL: name}},
                           "status": {"phase": "Failed", "containerStatuses": [{
                               "name": "pytorch", "restartCount": 0,
                               "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}]}

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None, previous=False):
        return "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory\n"


def _arg(args, flag):
    return args[args.index(flag) + 1]


def _play_worker(job):
    """What the job's pods do, in miniature: read the staged inputs, write a model and stats."""
    args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert read_samples(_arg(args, "--samples")) == SAMPLES
    assert TrainingConfig.model_validate_json(Path(_arg(args, "--settings")).read_text()).nodes == 2
    assert (Path(_arg(args, "--model")) / "config.json").is_file()
    out = Path(_arg(args, "--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    Path(_arg(args, "--stats")).write_text(json.dumps({"steps": 7, "train_seconds": 1.5, "world_size": 16}))


@pytest.fixture
def cluster_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DAMOC_TRAINING_NAMESPACE", "ml-team")
    monkeypatch.setenv("DAMOC_TRAINING_IMAGE", "registry.example.com/damoc/train:1")
    monkeypatch.setenv("DAMOC_TRAINING_SECRET", "damoc-s3")
    monkeypatch.setenv("DAMOC_TRAINING_STAGING_URI", str(tmp_path / "staging"))
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", "http://minio-service.kubeflow:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    model = tmp_path / "in_model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    return model


def _settings(**kw):
    return TrainingConfig(launcher="pytorchjob", nodes=2, gpus_per_node=8, **kw)


def test_pytorchjob_submits_waits_copies_back_and_deletes(cluster_env, tmp_path, crd_validator):  # noqa: F811
    custom = FakeCustomApi(on_get=_play_worker)
    out = tmp_path / "out"
    stats = L.LAUNCHERS.get("pytorchjob").train(cluster_env, SAMPLES, out, _settings(), run_id="run-1",
                                                candidate="tiny-llama", clients=(custom, FakeCoreApi()),
                                                sleep=lambda s: None)
    job = custom.created
    name = job["metadata"]["name"]
    assert [c[0] for c in custom.calls] == ["create", "get", "delete"]
    assert all(c[1] == "ml-team" for c in custom.calls) and job["metadata"]["namespace"] == "ml-team"
    crd_validator.validate(job)
    assert world_size(job) == 16 and job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/damoc/train:1"
    assert container["command"] == ["torchrun", "-m", "damoc.training.worker"]
    assert _arg(container["args"], "--model").endswith(f"{name}/model")
    env = {e["name"]: e for e in container["env"]}
    assert env["DAMOC_S3_ENDPOINT"]["value"] == "http://minio-service.kubeflow:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "damoc-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert "must-not-leak" not in json.dumps(job)
    assert (out / "config.json").read_text() == "{}"
    assert stats["steps"] == 7 and stats["launcher"] == "pytorchjob" and stats["job"] == name
    assert stats["nodes"] == 2 and stats["gpus_per_node"] == 8 and stats["gpu_hours"] >= 0


def test_pytorchjob_processes_setting_sets_nproc_per_node(cluster_env):
    job = L.build_training_job(_settings(processes=4), "run-1", "c", "s3://bucket/stage")
    assert job["spec"]["nprocPerNode"] == "4" and world_size(job) == 8


def test_pytorchjob_failure_surfaces_the_pod_log_and_still_deletes(cluster_env, tmp_path):
    custom = FakeCustomApi(outcome="Failed")
    with pytest.raises(TrainingJobError, match="OutOfMemoryError") as err:
        L.LAUNCHERS.get("pytorchjob").train(cluster_env, SAMPLES, tmp_path / "out", _settings(), run_id="r",
                                            candidate="c", clients=(custom, FakeCoreApi()), sleep=lambda s: None)
    assert err.value.pod.endswith("-master-0")
    assert custom.calls[-1][0] == "delete" and not (tmp_path / "out").exists()


def test_pytorchjob_cancelled_while_waiting_deletes_the_job(cluster_env, tmp_path):
    custom = FakeCustomApi(outcome="Created")  # never finishes

    def cancel(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        L.LAUNCHERS.get("pytorchjob").train(cluster_env, SAMPLES, tmp_path / "out", _settings(), run_id="r",
                                            candidate="c", clients=(custom, None), sleep=cancel)
    assert [c[0] for c in custom.calls] == ["create", "get", "delete"]


def test_pytorchjob_needs_image_and_staging(cluster_env, monkeypatch, tmp_path):
    run = L.LAUNCHERS.get("pytorchjob").train
    monkeypatch.delenv("DAMOC_TRAINING_STAGING_URI")
    with pytest.raises(ValueError, match="staging"):
        run(cluster_env, SAMPLES, tmp_path / "o", _settings(), clients=(FakeCustomApi(), None))
    monkeypatch.delenv("DAMOC_TRAINING_IMAGE")
    with pytest.raises(ValueError, match="training image"):
        L.build_training_job(_settings(), "r", "c", "s3://b/p")
    assert L.build_training_job(_settings(image="img:2"), "r", "c", "s3://b/p")["spec"]["pytorchReplicaSpecs"][
        "Master"]["template"]["spec"]["containers"][0]["image"] == "img:2"


def test_training_pods_map_the_secret_key_names_the_deployment_publishes(monkeypatch):
    """KFP's own object store Secret names its keys accesskey/secretkey (the chart publishes them); the pods'
    AWS_* variables reference those keys, never copied values."""
    from damoc.training.launchers import secret_key_env

    monkeypatch.delenv("DAMOC_TRAINING_SECRET_KEYS", raising=False)
    assert secret_key_env() == {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
    monkeypatch.setenv("DAMOC_TRAINING_SECRET_KEYS", "accesskey, secretkey")
    assert secret_key_env() == {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
    monkeypatch.setenv("DAMOC_TRAINING_SECRET_KEYS", "accesskey")
    with pytest.raises(ValueError, match="two key names"):
        secret_key_env()
