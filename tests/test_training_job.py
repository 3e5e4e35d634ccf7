"""PyTorchJob builder (schema-validated offline) and the wait/delete logic against fake Kubernetes APIs.

The API responses below are written in the shape the Kubeflow Training Operator v1.9 and the kubelet produce
(condition types/reasons/messages, container state fields); no cluster is reachable from the test machine.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest

from damoc.cluster import training_job as tj
from crd_schemas import crd_path, strict

CRD_FILE = "kubeflow.org_pytorchjobs.v1.9.4.yaml"  # Training Operator v1.9.4, the last v1 release
#: Kubernetes version the pod template is validated against (kubernetes-validate bundles 1.25-1.37); the
#: Training Operator v1.9 line supports clusters of this generation.
K8S_VERSION = "1.31.0"
NS = "ml-team"


@pytest.fixture(scope="module")
def crd_validator():
    import jsonschema
    import yaml

    crd = yaml.safe_load(crd_path(CRD_FILE).read_text())
    assert crd["spec"]["names"]["kind"] == "PyTorchJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == tj.VERSION]
    assert version["served"] and version["storage"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _job(**overrides):
    kwargs = dict(image="registry.example.com/damoc/train:0.1.0",
                  command=["torchrun", "-m", "damoc.cli", "finetune"], args=["--candidate", "qwen2.5-7b"],
                  namespace=NS, workers=1, gpus=8, cpu="32", memory="256Gi", shm_size="32Gi",
                  secret_name="damoc-s3", secret_env={"AWS_ACCESS_KEY_ID": "accesskey",
                                                      "AWS_SECRET_ACCESS_KEY": "secretkey",
                                                      "HF_TOKEN": "hf-token"},
                  env={"DAMOC_RUN_ID": "run-42", "HF_HUB_OFFLINE": "1"}, service_account="damoc-runner",
                  tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                  node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, active_deadline_s=86400)
    kwargs.update(overrides)
    return tj.pytorch_job("run-2026-11-29T22:00:00Z", "Qwen/Qwen2.5-7B-Instruct", **kwargs)


# ------------------------------------------------------------------------------------------------ the object

def test_job_validates_against_the_pinned_crd_schema(crd_validator):
    for job in (_job(), _job(workers=0, gpus=0, cpu="2", memory="8Gi", secret_name=None, secret_env=None)):
        errors = sorted(crd_validator.iter_errors(job), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
        assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"


def test_strict_schema_catches_unknown_fields(crd_validator):
    job = _job()
    job["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicyy"] = "Never"
    assert list(crd_validator.iter_errors(job))
    job = _job()
    job["spec"]["runPolicy"]["cleanupPolicy"] = "All"
    assert list(crd_validator.iter_errors(job))


@pytest.mark.parametrize("replica", ["Master", "Worker"])
def test_pod_template_validates_with_kubernetes_validatestrict(replica):
    import kubernetes_validate

    job = _job()
    template = job["spec"]["pytorchReplicaSpecs"][replica]["template"]
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": f"{job['metadata']['name']}-{replica.lower()}", "namespace": NS},
                    "template": template}
    kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
    broken = copy.deepcopy(pod_template)
    broken["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_replicas_resources_shm_and_security():
    job = _job()
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "8" and tj.world_size(job) == 16
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 0,
                                        "activeDeadlineSeconds": 86400, "ttlSecondsAfterFinished": 3600}
    for spec in specs.values():
        pod = spec["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        (c,) = pod["containers"]
        assert c["name"] == "pytorch"  # the operator injects MASTER_ADDR etc. into this container only
        assert c["resources"] == {"requests": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
                                  "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}}
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        psc, csc = pod["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"} == csc["seccompProfile"]
        assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}
        assert pod["serviceAccountName"] == "damoc-runner"
        env = {e["name"]: e for e in c["env"]}
        for name, key in (("AWS_ACCESS_KEY_ID", "accesskey"), ("AWS_SECRET_ACCESS_KEY", "secretkey"),
                          ("HF_TOKEN", "hf-token")):
            assert "value" not in env[name]
            assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "damoc-s3", "key": key, "optional": False}}
        assert env["DAMOC_RUN_ID"] == {"name": "DAMOC_RUN_ID", "value": "run-42"}
        labels = spec["template"]["metadata"]["labels"]
        assert labels[tj.RUN_ID_LABEL] == tj.label_value("run-2026-11-29T22:00:00Z")
        assert labels[tj.CANDIDATE_LABEL] == tj.label_value("Qwen/Qwen2.5-7B-Instruct")
    assert job["metadata"]["annotations"][tj.CANDIDATE_LABEL] == "Qwen/Qwen2.5-7B-Instruct"
    single = _job(workers=0, gpus=0, cpu="2", memory="8Gi", cpu_limit="4", memory_limit="12Gi")
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"} and tj.world_size(single) == 1
    res = single["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "12Gi"}}


def test_names_are_unique_dns_labels():
    dns1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    label_re = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    cases = [("run-1", "Qwen/Qwen2.5-7B"), ("run-1", "qwen-qwen2-5-7b"), ("run-2", "Qwen/Qwen2.5-7B"),
             ("R" * 200, "m" * 200), ("---", "9"), ("run 1", "ÜberModel 7B"), ("2026/11/29", "_x_")]
    names = [tj.job_name(r, c) for r, c in cases]
    assert len(set(names)) == len(names)
    for (run_id, cand), name in zip(cases, names):
        assert dns1035.match(name) and len(name) <= tj.MAX_JOB_NAME <= 63, name
        # The operator's Service for the highest worker index must still be a valid DNS-1035 label.
        assert len(f"{name}-worker-9999") <= 63
        assert tj.job_name(run_id, cand) == name  # deterministic: resubmission finds the same job
        assert re.search(r"-[0-9a-f]{8}$", name)
        for value in (tj.label_value(run_id), tj.label_value(cand)):
            assert len(value) <= 63 and label_re.match(value), value
    assert tj.label_value("Qwen/Qwen2.5-7B") != tj.label_value("Qwen_Qwen2.5-7B")


@pytest.mark.parametrize("bad, match", [
    (dict(env={"HF_TOKEN": "hf_abc"}), "secret_env"),
    (dict(env={"AWS_SECRET_ACCESS_KEY": "x"}), "secret_env"),
    (dict(secret_name=None), "secret_name"),
    (dict(memory="lots"), "memory"),
    (dict(memory_limit="1Gi"), "below the request"),
    (dict(gpus=-1), "gpus"),
    (dict(command=[]), "command"),
    (dict(restart_policy="Sometimes"), "restart_policy"),
    (dict(namespace="Bad_NS"), "namespace"),
    (dict(run_as_user=0), "non-root"),
])
def test_builder_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        _job(**bad)


# ------------------------------------------------------------------------------------------------ fakes

NAME = tj.job_name("run-42", "qwen2.5-7b")


def _cond(kind, status="True", reason=None, message=None):
    return {"type": kind, "status": status, "reason": reason or f"PyTorchJob{kind}",
            "message": message or f"PyTorchJob {NS}/{NAME} is {kind.lower()}.",
            "lastTransitionTime": "2026-11-29T22:01:00Z", "lastUpdateTime": "2026-11-29T22:01:00Z"}


def _job_response(*conditions, master=None):
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "123456", "uid": "6d0c-…"},
            "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}}},
            "status": {"conditions": list(conditions), "replicaStatuses": {"Master": master or {"active": 1}},
                       "startTime": "2026-11-29T22:00:05Z"}}


CREATED = _job_response(_cond("Created", message=f"PyTorchJob {NAME} is created."), master={})
RUNNING = _job_response(_cond("Created"), _cond("Running", message=f"PyTorchJob {NS}/{NAME} is running."))
SUCCEEDED = _job_response(
    _cond("Created"), _cond("Running", status="False"),
    _cond("Succeeded", message=f"PyTorchJob {NS}/{NAME} successfully completed."), master={"succeeded": 1})
FAILED = _job_response(
    _cond("Created"), _cond("Running", status="False"),
    _cond("Failed", message=f"PyTorchJob {NS}/{NAME} has failed because 1 Master replica(s) failed."),
    master={"failed": 1})


def _pod(replica="master", index=0, phase="Running", state=None, last_state=None, restarts=0):
    return {"metadata": {"name": f"{NAME}-{replica}-{index}", "namespace": NS,
                         "labels": {tj.JOB_NAME_LABEL: NAME, tj.REPLICA_TYPE_LABEL: replica,
                                    "training.kubeflow.org/replica-index": str(index),
                                    "training.kubeflow.org/operator-name": "pytorchjob-controller"}},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "pytorch", "image": "registry.example.com/damoc/train:0.1.0", "imageID": "",
                "ready": phase == "Running",
                "restartCount": restarts, "started": phase == "Running",
                "state": state or {"running": {"startedAt": "2026-11-29T22:00:10Z"}},
                "lastState": last_state or {}}]}}


RUNNING_POD = _pod()
CRASHLOOP_POD = _pod(
    state={"waiting": {"reason": "CrashLoopBackOff",
                       "message": f"back-off 2m40s restarting failed container=pytorch pod={NAME}-master-0_{NS}"}},
    last_state={"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-29T22:04:00Z",
                               "finishedAt": "2026-11-29T22:04:09Z"}}, restarts=4)
OOM_POD = _pod(phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                     "startedAt": "2026-11-29T22:00:10Z",
                                                     "finishedAt": "2026-11-29T22:03:31Z"}})
ERROR_POD = _pod(phase="Failed", state={"terminated": {"exitCode": 1, "reason": "Error"}})
WORKER_ERROR_POD = _pod(replica="worker", phase="Failed", state={"terminated": {"exitCode": 1, "reason": "Error"}})

TRACEBACK = ("Traceback (most recent call last):\n  File \"/app/damoc/training/finetune.py\", line 120\n"
             "ValueError: no training samples\n")


class FakeCustomObjectsApi:
    """Returns the recorded job responses one per call (the last one repeats); records every call."""

    def __init__(self, *responses):
        self.responses, self.calls = list(responses), []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural, name))
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        return copy.deepcopy(item)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, field_validation=None):
        assert field_validation == "Strict"  # an older CRD must refuse unknown fields, not prune them
        self.calls.append(("create", group, version, namespace, plural, body["metadata"]["name"]))
        return copy.deepcopy(body)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete", group, version, namespace, plural, name, kwargs))
        if self.responses and isinstance(self.responses[0], Exception):
            raise self.responses[0]
        return {"kind": "Status", "status": "Success"}


class FakeCoreV1Api:
    def __init__(self, pods, logs=None):
        self.pods, self.logs, self.calls = pods, logs or {}, []

    def list_namespaced_pod(self, namespace, label_selector=None):
        self.calls.append(("list", namespace, label_selector))
        pods = self.pods.pop(0) if self.pods and isinstance(self.pods[0], list) else self.pods
        return {"kind": "PodList", "apiVersion": "v1", "items": copy.deepcopy(pods)}

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None, previous=False):
        self.calls.append(("log", name, container, tail_lines, previous))
        return self.logs.get((name, previous), "")


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def _wait(api, core=None, timeout_s=600, poll_s=10, **kw):
    clock = FakeClock()
    try:
        return tj.wait_for_job(api, NAME, NS, timeout_s, poll_s, core_api=core, sleep=clock.sleep, clock=clock,
                               **kw), clock
    finally:
        _wait.clock = clock


# ------------------------------------------------------------------------------------------------ wait

def test_wait_returns_on_success():
    api = FakeCustomObjectsApi(CREATED, RUNNING, RUNNING, SUCCEEDED)
    core = FakeCoreV1Api([RUNNING_POD])
    job, clock = _wait(api, core)
    assert tj._condition(job, "Succeeded")
    assert clock.sleeps == [10, 10, 10]
    assert api.calls[0] == ("get", "kubeflow.org", "v1", NS, "pytorchjobs", NAME)
    assert core.calls[0] == ("list", NS, f"training.kubeflow.org/job-name={NAME}")


def test_wait_raises_on_failed_condition_with_the_failing_pods_log():
    api = FakeCustomObjectsApi(RUNNING, FAILED)
    # The master failed; the worker is listed first but the master's log is the one that explains it.
    core = FakeCoreV1Api([WORKER_ERROR_POD, ERROR_POD], logs={(f"{NAME}-master-0", False): TRACEBACK})
    with pytest.raises(tj.TrainingJobError) as err:
        _wait(api, core)
    e = err.value
    assert e.reason == "PyTorchJobFailed" and e.pod == f"{NAME}-master-0"
    assert "1 Master replica(s) failed" in str(e) and "ValueError: no training samples" in str(e)
    assert e.logs == TRACEBACK
    assert ("log", f"{NAME}-master-0", "pytorch", 200, False) in core.calls


def test_wait_without_core_api_still_reports_the_condition():
    with pytest.raises(tj.TrainingJobError, match="has failed because 1 Master"):
        _wait(FakeCustomObjectsApi(FAILED))


def test_failed_job_whose_pods_are_gone_or_unlistable():
    with pytest.raises(tj.TrainingJobError) as err:
        _wait(FakeCustomObjectsApi(FAILED), FakeCoreV1Api([]))
    assert err.value.pod is None and err.value.reason == "PyTorchJobFailed"

    class Broken(FakeCoreV1Api):
        def list_namespaced_pod(self, namespace, label_selector=None):
            raise OSError("connection reset by peer")

    with pytest.raises(tj.TrainingJobError, match="has failed because"):
        _wait(FakeCustomObjectsApi(FAILED), Broken([]))


def test_wait_fails_early_on_crash_loop_with_the_crashed_containers_log():
    api = FakeCustomObjectsApi(RUNNING)  # the operator still reports Running while the pod crash-loops
    core = FakeCoreV1Api([[RUNNING_POD], [CRASHLOOP_POD]],
                         logs={(f"{NAME}-master-0", True): TRACEBACK, (f"{NAME}-master-0", False): ""})
    with pytest.raises(tj.TrainingJobError) as err:
        _wait(api, core, max_restarts=3)
    e = err.value
    assert e.reason == "CrashLoopBackOff" and "after 4 restart(s)" in str(e) and e.logs == TRACEBACK
    assert ("log", f"{NAME}-master-0", "pytorch", 200, True) in core.calls  # the previous (crashed) instance
    assert _wait.clock.now == 10  # detected on the second poll, not at the timeout


def test_crash_loop_below_the_restart_budget_keeps_waiting():
    api = FakeCustomObjectsApi(RUNNING, RUNNING, SUCCEEDED)
    core = FakeCoreV1Api([[CRASHLOOP_POD], [RUNNING_POD]])
    job, _ = _wait(api, core, max_restarts=5)
    assert tj._condition(job, "Succeeded")


def test_wait_fails_early_on_oom_kill():
    api = FakeCustomObjectsApi(RUNNING)
    core = FakeCoreV1Api([OOM_POD], logs={(f"{NAME}-master-0", False): "step 120/300 loss 1.93\n"})
    with pytest.raises(tj.TrainingJobError) as err:
        _wait(api, core)
    assert err.value.reason == "OOMKilled" and "memory limit" in str(err.value) and "exit code 137" in str(err.value)
    assert "step 120/300" in err.value.logs


def test_oom_in_the_previous_run_of_a_restarted_container_is_reported():
    pod = _pod(restarts=1, last_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    with pytest.raises(tj.TrainingJobError, match="OOMKilled"):
        _wait(FakeCustomObjectsApi(RUNNING), FakeCoreV1Api([pod]))


def test_image_pull_error_fails_early():
    pod = _pod(phase="Pending", state={"waiting": {"reason": "ImagePullBackOff",
                                                   "message": "Back-off pulling image \"registry/x:nope\""}})
    with pytest.raises(tj.TrainingJobError, match="ImagePullBackOff"):
        _wait(FakeCustomObjectsApi(CREATED), FakeCoreV1Api([pod]))


def test_wait_times_out():
    api = FakeCustomObjectsApi(CREATED, RUNNING)
    with pytest.raises(tj.TrainingJobTimeout) as err:
        _wait(api, FakeCoreV1Api([RUNNING_POD]), timeout_s=35, poll_s=10)
    assert isinstance(err.value, TimeoutError)
    assert "Running=True" in str(err.value) and _wait.clock.sleeps == [10, 10, 10, 5]
    assert len(api.calls) == 5  # one last look at the deadline


def test_transient_api_errors_are_retried_and_404_is_a_failure():
    from kubernetes.client.exceptions import ApiException

    api = FakeCustomObjectsApi(ApiException(status=503, reason="Service Unavailable"), RUNNING, SUCCEEDED)
    job, _ = _wait(api)
    assert tj._condition(job, "Succeeded")
    with pytest.raises(tj.TrainingJobError) as err:
        _wait(FakeCustomObjectsApi(RUNNING, ApiException(status=404, reason="Not Found")))
    assert err.value.reason == "NotFound"


def test_kubernetes_client_model_objects_are_understood():
    """The real CoreV1Api returns V1PodList models, not dicts: they go through the client's serialiser."""
    import json

    from kubernetes.client import ApiClient

    class _Resp:
        data = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": [OOM_POD]})

    pod_list = ApiClient().deserialize(_Resp(), "V1PodList")

    class ModelCore(FakeCoreV1Api):
        def list_namespaced_pod(self, namespace, label_selector=None):
            return pod_list

    with pytest.raises(tj.TrainingJobError, match="OOMKilled"):
        _wait(FakeCustomObjectsApi(RUNNING), ModelCore([]))


def test_submit_and_delete():
    from kubernetes.client.exceptions import ApiException

    job = _job()
    api = FakeCustomObjectsApi(RUNNING)
    created = tj.submit_job(api, job)
    assert created["metadata"]["name"] == job["metadata"]["name"]
    assert api.calls[-1] == ("create", "kubeflow.org", "v1", NS, "pytorchjobs", job["metadata"]["name"])
    assert tj.delete_job(api, NAME, NS) is True
    assert api.calls[-1] == ("delete", "kubeflow.org", "v1", NS, "pytorchjobs", NAME,
                             {"propagation_policy": "Foreground"})
    gone = FakeCustomObjectsApi(ApiException(status=404, reason="Not Found"))
    assert tj.delete_job(gone, NAME, NS) is False
    with pytest.raises(ApiException):
        tj.delete_job(gone, NAME, NS, missing_ok=False)
    forbidden = FakeCustomObjectsApi(ApiException(status=403, reason="Forbidden"))
    with pytest.raises(ApiException):
        tj.delete_job(forbidden, NAME, NS)
