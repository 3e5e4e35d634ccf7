"""Kubeflow Trainer v2 launcher: the TrainJob builder (validated offline against the pinned v2.2.1 CRD), the wait /
cancel / delete logic, and the launcher end to end against a fake Kubernetes API server.

The fake API server is a real HTTP server driven by the real ``kubernetes`` client (REST paths, verbs, JSON bodies,
404s are exercised); like the API server it rejects a TrainJob that its CRD's structural schema (strict: unknown
fields are errors) or CEL name rules refuse. Responses follow what Trainer's controller and the kubelet write
(condition types Complete / Failed / Suspended, JobSet pod labels, container states).
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from damoc.cluster import trainjob as tv2
from damoc.config import ConfigError, TrainingConfig, parse_config
from damoc.data.records import read_samples
from damoc.data.schema import Sample
from damoc.training import launchers as L
from crd_schemas import crd_path, strict

CRD_FILE = "trainer.kubeflow.org_trainjobs.v2.2.1.yaml"  # Kubeflow Trainer v2.2.1
NS = "ml-team"
SAMPLES = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
           for i, w in enumerate(["river", "market", "bridge", "fever"] * 3)]


class TrainJobSchema:
    """The pinned CRD's openAPI schema plus its CEL rules on metadata.name (the only ones on a create)."""

    def __init__(self):
        import jsonschema
        import yaml

        crd = yaml.safe_load(crd_path(CRD_FILE).read_text())
        assert crd["spec"]["names"]["kind"] == "TrainJob" and crd["spec"]["group"] == tv2.GROUP
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == tv2.VERSION]
        assert version["served"] and version["storage"]
        schema = version["schema"]["openAPIV3Schema"]
        rules = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
        assert any("metadata.name.matches" in r for r in rules) and any("size(self.metadata.name)" in r for r in rules)
        schema = strict(schema)
        schema["properties"]["metadata"] = {"type": "object"}
        jsonschema.Draft7Validator.check_schema(schema)
        self.validator = jsonschema.Draft7Validator(schema)

    def errors(self, obj) -> list[str]:
        out = [f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in self.validator.iter_errors(obj)]
        name = obj.get("metadata", {}).get("name", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            out.append(f"metadata.name {name!r}: must be an RFC 1035 label of <= 63 characters")
        return out

    def validate(self, obj) -> None:
        errors = self.errors(obj)
        assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def schema() -> TrainJobSchema:
    return TrainJobSchema()


def _job(**overrides):
    kwargs = dict(image="registry.example.com/damoc/train:0.1.0", command=tv2.torch_command(),
                  args=["--model", "s3://b/m"], namespace=NS, nodes=2, gpus_per_node=8, cpu="32", memory="256Gi",
                  shm_size="32Gi", secret_name="damoc-s3",
                  secret_env={"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"},
                  env={"DAMOC_S3_ENDPOINT": "http://minio:9000"}, service_account="damoc-runner",
                  tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                  node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, active_deadline_s=86400)
    kwargs.update(overrides)
    return tv2.train_job("run-2026-12-07T14:00:00Z", "Qwen/Qwen2.5-7B-Instruct", **kwargs)


# ------------------------------------------------------------------------------------------------ the object

def test_trainjob_validates_against_the_pinned_crd(schema):
    for job in (_job(), _job(ml_policy="mpi", runtime="deepspeed-distributed", command=tv2.mpi_command(["X"])),
                _job(nodes=1, gpus_per_node=0, cpu="2", memory="8Gi", secret_name=None, secret_env=None, env=None,
                     service_account=None, tolerations=None, node_selector=None, active_deadline_s=None,
                     runtime="damoc-torch", runtime_kind="TrainingRuntime")):
        schema.validate(job)
        assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"


def test_strict_schema_rejects_other_trainer_releases_fields(schema):
    job = _job()
    # Trainer 2.1 called the pod override podTemplateOverrides: a 2.2 API server prunes it, our check refuses.
    job["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    assert schema.errors(job)
    job = _job()
    job["spec"]["trainer"]["numProcPerNode"] = "auto"  # int in 2.2
    assert schema.errors(job)
    job = _job()
    job["metadata"]["name"] = "9-starts-with-a-digit"
    assert schema.errors(job)


def test_trainer_shape_resources_and_runtime_ref():
    job = _job()
    spec = job["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8 and tv2.world_size(job) == 16
    assert trainer["command"] == ["torchrun", "-m", "damoc.training.worker"]
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
                                           "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}}
    env = {e["name"]: e for e in trainer["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
        "name": "damoc-s3", "key": "secretkey", "optional": False}}}
    assert env["DAMOC_S3_ENDPOINT"]["value"] == "http://minio:9000"
    assert spec["activeDeadlineSeconds"] == 86400
    assert job["metadata"]["annotations"]["damoc.io/candidate"] == "Qwen/Qwen2.5-7B-Instruct"
    assert tv2.world_size(_job(procs_per_node=4)) == 8 and _job(gpus_per_node=0)["spec"]["trainer"][
        "numProcPerNode"] == 1


@pytest.mark.parametrize("policy, rjobs", [("torch", ["node"]), ("mpi", ["launcher", "node"])])
def test_runtime_patch_hardens_every_training_pod(policy, rjobs):
    job = _job(ml_policy=policy)
    (patch,) = job["spec"]["runtimePatches"]
    assert patch["manager"] == tv2.PATCH_MANAGER
    replicated = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [r["name"] for r in replicated] == rjobs
    for rjob in replicated:
        pod = rjob["template"]["spec"]["template"]
        assert pod["metadata"]["labels"]["damoc.io/run-id"] == tv2.jc.label_value("run-2026-12-07T14:00:00Z")
        spec = pod["spec"]
        assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                           "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
        assert spec["serviceAccountName"] == "damoc-runner"
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and "nvidia.com/gpu.product" in spec["nodeSelector"]
        assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}]
        (c,) = spec["containers"]
        assert c["name"] == "node" and c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_names_fit_jobset_pod_hostnames():
    names = [_job()["metadata"]["name"]] + [tv2.jc.job_name(r, c) for r, c in [
        ("R" * 200, "m" * 200), ("run 1", "ÜberModel 7B"), ("2026/12/07", "_x_")]]
    for name in names:
        # JobSet pod hostnames: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>, a DNS label.
        assert len(f"{name}-launcher-0-0") <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)


@pytest.mark.parametrize("bad, match", [
    (dict(runtime=""), "runtime"),
    (dict(runtime_kind="Runtime"), "runtime_kind"),
    (dict(ml_policy="jax"), "ml_policy"),
    (dict(nodes=0), "nodes"),
    (dict(gpus_per_node=-1), "gpus_per_node"),
    (dict(procs_per_node=0), "procs_per_node"),
    (dict(memory="lots"), "memory"),
    (dict(env={"HF_TOKEN": "hf_x"}), "secret_env"),
    (dict(namespace="Bad_NS"), "namespace"),
    (dict(run_as_user=0), "non-root"),
    (dict(active_deadline_s=0), "active_deadline_s"),
])
def test_builder_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        _job(**bad)


def test_mpi_launcher_script_maps_openmpi_ranks_to_torch_env(tmp_path):
    """Run the launcher command under sh with a stand-in mpirun that starts each slot as OpenMPI would."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("job-launcher-0-0.job slots=2\njob-node-0-0.job slots=2\n")
    fake = tmp_path / "mpirun"
    fake.write_text(f"""#!{sys.executable}
import os, subprocess, sys
a = sys.argv[1:]; forward = []; hosts = None
while a and a[0].startswith("-"):
    flag = a.pop(0)
    if flag == "-x": forward.append(a.pop(0))
    elif flag == "--hostfile": hosts = [l.split() for l in open(a.pop(0)) if l.strip()]
    else: a.pop(0)
slots = [(h[0], i) for h in hosts for i in range(int(h[1].split("=")[1]))]
for rank, (host, local) in enumerate(slots):
    env = {{"PATH": os.environ["PATH"], "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(len(slots)),
           "OMPI_COMM_WORLD_LOCAL_RANK": str(local), "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}}
    env.update({{k: os.environ[k] for k in forward if k in os.environ}})
    subprocess.run(a, env=env, check=True)
""")
    fake.chmod(0o755)
    command = tv2.mpi_command(["DAMOC_S3_ENDPOINT", "AWS_SECRET_ACCESS_KEY"], hostfile=str(hostfile),
                              mpirun=str(fake))
    program = [sys.executable, "-c", "import os, sys; print(sys.argv[1], *(os.environ.get(k, '-') for k in ("
               "'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'DAMOC_S3_ENDPOINT', "
               "'AWS_SECRET_ACCESS_KEY', 'UNFORWARDED')))", "--model"]
    env = {"PATH": os.environ["PATH"], "DAMOC_S3_ENDPOINT": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
           "UNFORWARDED": "x"}
    proc = subprocess.run([*command, *program], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert lines == [f"--model {r} 4 {r % 2} job-launcher-0-0.job 29500 http://minio:9000 s3cr3t -"
                     for r in range(4)]
    with pytest.raises(ValueError, match="variable name"):
        tv2.mpi_command(["BAD NAME"])


# ------------------------------------------------------------------------------------------------ wait

NAME = tv2.jc.job_name("run-42", "qwen2.5-7b")


def _cond(kind, status="True", reason=None, message=None):
    return {"type": kind, "status": status, "reason": reason or kind, "message": message or f"TrainJob is {kind}",
            "lastTransitionTime": "2026-12-07T14:01:00Z"}


def _response(*conditions, jobs=None):
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "99", "uid": "3f1e"},
            "spec": {"runtimeRef": {"name": "torch-distributed"}},
            "status": {"conditions": list(conditions),
                       "jobsStatus": jobs or [{"name": "node", "active": 2, "ready": 2, "failed": 0,
                                               "succeeded": 0, "suspended": 0}]}}


RUNNING = _response()
SUSPENDED = _response(_cond("Suspended", reason="Suspended", message="TrainJob is suspended"))
COMPLETE = _response(_cond("Suspended", status="False", reason="Resumed"),
                     _cond("Complete", reason="JobsCompleted", message="jobset completed successfully"))
FAILED = _response(_cond("Failed", reason="FailedJobs",
                         message="jobset failed due to one or more job failures"),
                   jobs=[{"name": "node", "active": 0, "ready": 0, "failed": 1, "succeeded": 0, "suspended": 0}])
DEADLINE = _response(_cond("Failed", reason="DeadlineExceeded", message="TrainJob exceeded its deadline"))


def _pod(rjob="node", job_index=0, pod_index=0, phase="Running", state=None, last_state=None, restarts=0):
    name = f"{NAME}-{rjob}-{job_index}-{pod_index}-x7k2p"
    return {"metadata": {"name": name, "namespace": NS, "labels": {
                tv2.JOBSET_NAME_LABEL: NAME, tv2.REPLICATED_JOB_LABEL: rjob, tv2.JOB_INDEX_LABEL: str(job_index),
                tv2.COMPLETION_INDEX_LABEL: str(pod_index), "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "node", "image": "registry.example.com/damoc/train:1", "imageID": "",
                "restartCount": restarts, "ready": phase == "Running",
                "state": state or {"running": {"startedAt": "2026-12-07T14:00:10Z"}}, "lastState": last_state or {}}]}}


ERR = {"terminated": {"exitCode": 1, "reason": "Error"}}
TRACEBACK = "Traceback (most recent call last):\nValueError: no training samples\n"


class FakeCustom:
    def __init__(self, *responses):
        self.responses, self.calls = list(responses), []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural, name))
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        return copy.deepcopy(item)


class FakeCore:
    def __init__(self, pods, logs=None):
        self.pods, self.logs, self.calls = pods, logs or {}, []

    def list_namespaced_pod(self, namespace, label_selector=None):
        self.calls.append(("list", namespace, label_selector))
        pods = self.pods.pop(0) if self.pods and isinstance(self.pods[0], list) else self.pods
        return {"items": copy.deepcopy(pods)}

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None, previous=False):
        self.calls.append(("log", name, container, previous))
        return self.logs.get(name, "")


def _wait(api, core=None, timeout_s=600, poll_s=10):
    clock = {"t": 0.0, "sleeps": []}

    def sleep(s):
        clock["sleeps"].append(s)
        clock["t"] += s

    return tv2.wait_for_job(api, NAME, NS, timeout_s, poll_s, core_api=core, sleep=sleep,
                            clock=lambda: clock["t"]), clock


def test_wait_until_complete_through_a_kueue_suspension():
    api = FakeCustom(SUSPENDED, SUSPENDED, RUNNING, COMPLETE)
    core = FakeCore([_pod()])
    job, clock = _wait(api, core)
    assert tv2.jc.condition(job, "Complete") and clock["sleeps"] == [10, 10, 10]
    assert api.calls[0] == ("get", "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", NAME)
    assert core.calls[0] == ("list", NS, f"jobset.sigs.k8s.io/jobset-name={NAME}")


def test_failed_trainjob_reports_rank_zeros_log():
    # A node pod of job index 1 is listed first; rank 0 (job 0, pod 0) failing is the cause.
    core = FakeCore([_pod(job_index=1, phase="Failed", state=ERR), _pod(phase="Failed", state=ERR)],
                    logs={f"{NAME}-node-0-0-x7k2p": TRACEBACK})
    with pytest.raises(tv2.TrainingJobError) as err:
        _wait(FakeCustom(RUNNING, FAILED), core)
    e = err.value
    assert e.reason == "FailedJobs" and e.pod == f"{NAME}-node-0-0-x7k2p" and e.logs == TRACEBACK
    assert "one or more job failures" in str(e) and ("log", e.pod, "node", False) in core.calls


def test_mpi_launcher_pod_is_the_primary_one():
    core = FakeCore([_pod(phase="Failed", state=ERR), _pod(rjob="launcher", phase="Failed", state=ERR)],
                    logs={f"{NAME}-launcher-0-0-x7k2p": "mpirun noticed that process rank 3 exited\n"})
    with pytest.raises(tv2.TrainingJobError) as err:
        _wait(FakeCustom(FAILED), core)
    assert err.value.pod.startswith(f"{NAME}-launcher-") and "rank 3" in err.value.logs


def test_deadline_and_early_pod_failures():
    with pytest.raises(tv2.TrainingJobError, match="DeadlineExceeded"):
        _wait(FakeCustom(DEADLINE))
    oom = _pod(phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    with pytest.raises(tv2.TrainingJobError, match="OOMKilled"):
        _wait(FakeCustom(RUNNING), FakeCore([oom]))
    pull = _pod(phase="Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}})
    with pytest.raises(tv2.TrainingJobError, match="ImagePullBackOff"):
        _wait(FakeCustom(RUNNING), FakeCore([pull]))


def test_wait_times_out_and_404_means_deleted():
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(tv2.TrainingJobTimeout, match="Suspended=True"):
        _wait(FakeCustom(SUSPENDED), timeout_s=25)
    with pytest.raises(tv2.TrainingJobError) as err:
        _wait(FakeCustom(RUNNING, ApiException(status=404, reason="Not Found")))
    assert err.value.reason == "NotFound"


# ------------------------------------------------------------------------------------------------ fake API server

class FakeApiServer:
    """A minimal kube-apiserver for TrainJobs and pods: create (schema-checked), get, delete, list pods, pod logs.

    ``play(job) -> status`` decides what each GET of the job shows (it may also act as the pods, e.g. write the
    worker's outputs); ``pods`` and ``logs`` answer the pod calls. Every request is recorded as (verb, path).
    """

    def __init__(self, schema: TrainJobSchema, play, pods=(), logs=None):
        self.schema, self.play, self.pods, self.logs = schema, play, list(pods), dict(logs or {})
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.queries: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code, reason, message):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                  "message": message, "code": code})

            def _route(self, verb):
                path, _, query = self.path.partition("?")
                server.requests.append((verb, path))
                server.queries.append(query)
                base = f"/apis/{tv2.GROUP}/{tv2.VERSION}/namespaces/{NS}/{tv2.PLURAL}"
                if path == base and verb == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    # The API server prunes unknown fields unless the client asks for strict validation.
                    strict = "fieldValidation=Strict" in self.path
                    errors = server.schema.errors(body) if strict else []
                    if errors:
                        return self._status(422, "Invalid", "; ".join(errors))
                    name = body["metadata"]["name"]
                    if name in server.jobs:
                        return self._status(409, "AlreadyExists", f"trainjobs {name} already exists")
                    server.jobs[name] = body
                    return self._send(201, body)
                if path.startswith(base + "/"):
                    name = path[len(base) + 1:]
                    if name not in server.jobs:
                        return self._status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
                    if verb == "GET":
                        job = copy.deepcopy(server.jobs[name])
                        job["status"] = server.play(job)
                        return self._send(200, job)
                    if verb == "DELETE":
                        del server.jobs[name]
                        return self._send(200, {"kind": "Status", "status": "Success"})
                if path == f"/api/v1/namespaces/{NS}/pods" and verb == "GET":
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": server.pods})
                m = re.fullmatch(rf"/api/v1/namespaces/{NS}/pods/([^/]+)/log", path)
                if m and verb == "GET":
                    data = server.logs.get(m.group(1), "").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                return self._status(404, "NotFound", path)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def clients(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        api = client.ApiClient(cfg)
        return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _arg(args, flag):
    return args[args.index(flag) + 1]


def _status(*conds):
    return {"conditions": [_cond(*c) if isinstance(c, tuple) else _cond(c) for c in conds]}


def _play_worker(job):
    """What the TrainJob's pods do, in miniature: read the staged inputs, write a model and stats."""
    args = job["spec"]["trainer"]["args"]
    assert read_samples(_arg(args, "--samples")) == SAMPLES
    staged = TrainingConfig.model_validate_json(Path(_arg(args, "--settings")).read_text())
    assert staged.trainjob.nodes == 2 and staged.checkpoint_uri and staged.save_steps == 5
    out = Path(_arg(args, "--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text('{"trained": true}')
    Path(_arg(args, "--stats")).write_text(json.dumps({"steps": 9, "world_size": 16}))
    return _status("Complete")


@pytest.fixture
def cluster_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DAMOC_TRAINING_NAMESPACE", NS)
    monkeypatch.setenv("DAMOC_TRAINING_IMAGE", "registry.example.com/damoc/train:1")
    monkeypatch.setenv("DAMOC_TRAINING_SECRET", "damoc-s3")
    monkeypatch.setenv("DAMOC_TRAINING_SERVICE_ACCOUNT", "damoc-runner")
    monkeypatch.setenv("DAMOC_TRAINING_STAGING_URI", str(tmp_path / "staging"))
    monkeypatch.setenv("DAMOC_GPU_TOLERATIONS", '[{"key": "nvidia.com/gpu", "operator": "Exists"}]')
    monkeypatch.setenv("DAMOC_GPU_NODE_SELECTOR", "{}")
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", "http://minio-service.kubeflow:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    model = tmp_path / "in_model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    return model


def _settings(**trainjob):
    return TrainingConfig(launcher="trainjob", save_steps=5, checkpoint_uri="s3://bucket/ckpt",
                          trainjob={"nodes": 2, "gpus_per_node": 8, "poll_s": 0.01, **trainjob})


def _train(model, out, settings, server, **kw):
    return L.LAUNCHERS.get("trainjob").train(model, SAMPLES, out, settings, run_id="run-1", candidate="tiny-llama",
                                             clients=server.clients(), **kw)


def test_trainjob_launcher_creates_watches_copies_back_and_deletes(cluster_env, tmp_path, schema, caplog):
    created = {}

    def play(job):
        created.setdefault("job", job)
        return _play_worker(job) if len(created.setdefault("polls", [])) else (created["polls"].append(1)
                                                                                 or _status("Suspended"))

    out = tmp_path / "out"
    with FakeApiServer(schema, play, pods=[_pod()]) as server:
        stats = _train(cluster_env, out, _settings(), server)
    job = created["job"]
    name = job["metadata"]["name"]
    base = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
    verbs = [(v, p) for v, p in server.requests if "trainjobs" in p]
    assert server.queries[0] == "fieldValidation=Strict"
    assert verbs[0] == ("POST", base) and verbs[-1] == ("DELETE", f"{base}/{name}")
    assert [v for v, _ in verbs[1:-1]] == ["GET", "GET"] and not server.jobs  # polled twice, then deleted
    assert ("GET", f"/api/v1/namespaces/{NS}/pods") in server.requests  # the pods were inspected while waiting
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    schema.validate(job)
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == "registry.example.com/damoc/train:1" and tv2.world_size(job) == 16
    assert trainer["command"] == ["torchrun", "-m", "damoc.training.worker"]
    assert _arg(trainer["args"], "--model") == f"{tmp_path / 'staging'}/{name}/model"
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "damoc-runner" and pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists"}] and "nodeSelector" not in pod
    assert "must-not-leak" not in json.dumps(job)
    assert json.loads((out / "config.json").read_text()) == {"trained": True}
    assert stats["launcher"] == "trainjob" and stats["job"] == name and stats["steps"] == 9
    assert stats["nodes"] == 2 and stats["gpus_per_node"] == 8 and stats["gpu_hours"] >= 0
    # Same (run, candidate): the same job and staging prefix, so a rerun finds the mirrored checkpoints.
    assert L.build_trainjob(_settings(), "run-1", "tiny-llama", "s3://x")["metadata"]["name"] == name


def test_trainjob_failure_surfaces_the_pod_log_and_still_deletes(cluster_env, tmp_path, schema):
    pods = [_pod(phase="Failed", state=ERR)]
    logs = {pods[0]["metadata"]["name"]: "torch.OutOfMemoryError: CUDA out of memory\n"}
    with FakeApiServer(schema, lambda job: _status(("Failed", "True", "FailedJobs")), pods, logs) as server:
        with pytest.raises(tv2.TrainingJobError, match="OutOfMemoryError") as err:
            _train(cluster_env, tmp_path / "out", _settings(), server)
    assert err.value.reason == "FailedJobs" and err.value.pod == pods[0]["metadata"]["name"]
    assert server.requests[-1][0] == "DELETE" and not server.jobs and not (tmp_path / "out").exists()


def test_trainjob_cancelled_while_waiting_deletes_the_job(cluster_env, tmp_path, schema):
    def cancel(seconds):
        raise KeyboardInterrupt  # Ctrl-C / a KFP run cancelled while the task waits

    with FakeApiServer(schema, lambda job: _status("Suspended")) as server:
        with pytest.raises(KeyboardInterrupt):
            _train(cluster_env, tmp_path / "out", _settings(), server, sleep=cancel)
    assert [v for v, p in server.requests if "trainjobs" in p] == ["POST", "GET", "DELETE"] and not server.jobs


def test_sigterm_while_waiting_deletes_the_job(cluster_env, tmp_path, schema):
    """KFP cancels a run by deleting the task pod: SIGTERM must not leave the TrainJob training."""
    import signal

    def terminated(seconds):
        os.kill(os.getpid(), signal.SIGTERM)

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with FakeApiServer(schema, lambda job: _status("Suspended")) as server:
        with pytest.raises(SystemExit) as err:
            _train(cluster_env, tmp_path / "out", _settings(), server, sleep=terminated)
    assert err.value.code == 143 and not server.jobs
    assert [v for v, p in server.requests if "trainjobs" in p] == ["POST", "GET", "DELETE"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_invalid_trainjob_is_refused_by_the_api_server_and_nothing_is_left(cluster_env, tmp_path, schema,
                                                                           monkeypatch):
    """An object the pinned CRD refuses (here: the 2.1 field name) fails at create with the server's message."""
    from kubernetes.client.exceptions import ApiException

    real = L.build_trainjob

    def old_field(*a, **kw):
        job = real(*a, **kw)
        job["spec"]["podTemplateOverrides"] = job["spec"].pop("runtimePatches")
        return job

    monkeypatch.setattr(L, "build_trainjob", old_field)
    with FakeApiServer(schema, lambda job: _status("Complete")) as server:
        with pytest.raises(ApiException) as err:
            _train(cluster_env, tmp_path / "out", _settings(), server)
    assert err.value.status == 422 and "podTemplateOverrides" in err.value.body and not server.jobs


def test_mpi_policy_builds_the_mpirun_launcher(cluster_env, schema):
    job = L.build_trainjob(_settings(ml_policy="mpi", runtime="deepspeed-distributed"), "r", "c", "s3://b/stage")
    schema.validate(job)
    trainer = job["spec"]["trainer"]
    assert trainer["command"][:2] == ["sh", "-c"] and "mpirun --hostfile /etc/mpi/hostfile" in trainer["command"][2]
    for name in ("DAMOC_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"-x {name}" in trainer["command"][2]
    assert trainer["args"][:3] == ["python", "-m", "damoc.training.worker"]
    assert _arg(trainer["args"], "--model") == "s3://b/stage/model"


def test_trainjob_settings_in_the_run_config(cluster_env, monkeypatch):
    cfg = TrainingConfig(launcher="trainjob", processes=4, trainjob={"runtime": "damoc-deepspeed", "nodes": 3,
                                                                     "gpus_per_node": 4, "memory": "200Gi"})
    job = L.build_trainjob(cfg, "r", "c", "s3://b/p")
    assert job["spec"]["runtimeRef"]["name"] == "damoc-deepspeed" and tv2.world_size(job) == 12
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["memory"] == "200Gi"
    for bad, needle in (({"memory": "lots"}, "training.trainjob.memory"), ({"ml_policy": "jax"}, "ml_policy"),
                        ({"nodes": 0}, "nodes"), ({"runtimee": "x"}, "runtimee")):
        with pytest.raises(ConfigError, match=needle):
            parse_config({"candidates": [{"name": "a", "path": "zoo://tiny-llama"}],
                          "data": {"train": "t.jsonl", "eval": "e.jsonl"},
                          "training": {"launcher": "trainjob", "trainjob": bad}}, "run.yaml")
    monkeypatch.delenv("DAMOC_TRAINING_IMAGE")
    with pytest.raises(ValueError, match="training image"):
        L.build_trainjob(cfg, "r", "c", "s3://b/p")


def test_where_it_trains_does_not_change_the_checkpoint_fingerprint():
    """Checkpoint mirroring (training.checkpoint_uri) is keyed by the run fingerprint: moving a candidate between
    launchers or TrainJob shapes must find the same mirrored checkpoints; a training setting must not."""
    from damoc.training.finetune import run_fingerprint

    base = TrainingConfig(save_steps=5, checkpoint_uri="s3://bucket/ckpt")
    moved = base.model_copy(update={"launcher": "trainjob", "trainjob": TrainingConfig().trainjob.model_copy(
        update={"nodes": 4, "runtime": "damoc-torch", "timeout_s": 60.0})})
    uri = "s3://stage/damoc-ft-x/model"
    assert run_fingerprint(uri, SAMPLES, base) == run_fingerprint(uri, SAMPLES, moved)
    assert run_fingerprint(uri, SAMPLES, base) != run_fingerprint(uri, SAMPLES,
                                                                  base.model_copy(update={"learning_rate": 2e-3}))
