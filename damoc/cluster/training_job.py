"""One fine-tuning job per candidate on a cluster: a Kubeflow PyTorchJob, its submission, wait and clean-up.

Version pinned: ``kubeflow.org/v1`` PyTorchJob, validated against the CRD of **Kubeflow Training Operator v1.9.4**
(``shared/schemas/crds/kubeflow.org_pytorchjobs.v1.9.4.yaml``), the last release of the v1 operator. It is the
version that still runs one Kubernetes object per training job with plain master/worker pod templates, which is
what a per-candidate job of this project needs; its successor (Kubeflow Trainer v2, ``trainer.kubeflow.org/
v1alpha1`` TrainJob) needs a ClusterTrainingRuntime installed by the cluster admin and has renamed its pod
override field in every minor release so far (see the schemas README), so it is not targeted here.

How the operator runs the job (v1.9): it creates one pod and one headless Service per replica, named
``<job>-master-0`` and ``<job>-worker-<i>``, and injects ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``,
``RANK`` and ``PET_*`` (torchrun) variables into the container that must be named ``pytorch``. Pods carry the
labels ``training.kubeflow.org/job-name`` and ``training.kubeflow.org/replica-type``; job progress is reported
as ``status.conditions`` of type Created / Running / Restarting / Succeeded / Failed.

API objects: the functions that talk to the cluster take duck-typed ``kubernetes.client.CustomObjectsApi`` and
``kubernetes.client.CoreV1Api`` instances (only the methods named in their docstrings are used), so tests pass
fakes returning recorded responses.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

GROUP = "kubeflow.org"
VERSION = "v1"
PLURAL = "pytorchjobs"
KIND = "PyTorchJob"
#: Training Operator release whose CRD the generated objects are validated against.
OPERATOR_RELEASE = "v1.9.4"
#: Name the operator requires for the training container (it injects the rendezvous environment there).
CONTAINER_NAME = "pytorch"
DEFAULT_PORT = 23456
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
RUN_ID_LABEL = "damoc.io/run-id"
CANDIDATE_LABEL = "damoc.io/candidate"
#: Job names are kept this short: the operator names Services ``<job>-worker-<index>`` and a Service name is a
#: DNS-1035 label (<= 63 chars, starts with a letter), so 63 minus room for "-worker-" and a 4-digit index.
MAX_JOB_NAME = 50

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRETISH = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY)", re.I)
_FAILED_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                   "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


class TrainingJobError(RuntimeError):
    """A training job failed (job condition Failed, a crashing/OOM-killed/unschedulable pod, or it vanished).

    Attributes: ``name`` (job), ``reason`` (short machine-readable cause: the condition's reason, "OOMKilled",
    "CrashLoopBackOff", "NotFound", ...), ``pod`` (the failing pod's name, if known) and ``logs`` (the tail of
    its training container's log, "" if unavailable).
    """

    def __init__(self, name: str, reason: str, message: str, *, pod: str | None = None, logs: str = ""):
        self.name, self.reason, self.pod, self.logs = name, reason, pod, logs
        text = f"training job {name} failed ({reason}): {message}"
        if pod:
            text += f"\n--- last log lines of pod {pod} ---\n{logs.rstrip() or '(no log available)'}"
        super().__init__(text)


class TrainingJobTimeout(TimeoutError):
    """The job reached neither Succeeded nor Failed within the timeout. ``last_conditions`` holds what was seen."""

    def __init__(self, name: str, timeout_s: float, last_conditions: list[dict[str, Any]]):
        self.name, self.timeout_s, self.last_conditions = name, timeout_s, last_conditions
        seen = ", ".join(f"{c.get('type')}={c.get('status')}" for c in last_conditions) or "no conditions"
        super().__init__(f"training job {name} did not finish within {timeout_s:g} s (last seen: {seen})")


# ---------------------------------------------------------------------------------------------------- naming

def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def job_name(run_id: str, candidate: str, *, prefix: str = "damoc-ft", max_len: int = MAX_JOB_NAME) -> str:
    """A unique, deterministic job name for (run, candidate): ``<prefix>-<candidate>-<run>-<hash8>``.

    DNS-1123 label that also starts with a letter (DNS-1035, as the operator's Service names require) and is at
    most ``max_len`` characters. Readable parts are slugged and truncated; the 8-hex suffix is the SHA-256 of
    the exact (run_id, candidate) pair, so two candidates whose slugs collide ("Qwen/Qwen2.5-7B" and
    "qwen-qwen2-5-7b") still get different names, and the same pair always gets the same name (idempotent
    resubmission).
    """
    if not run_id or not candidate:
        raise ValueError("job_name: run_id and candidate must be non-empty")
    if not (8 <= max_len <= 63):
        raise ValueError(f"job_name: max_len must be in 8..63, got {max_len}")
    digest = hashlib.sha256(f"{run_id}\0{candidate}".encode()).hexdigest()[:8]
    prefix = _slug(prefix)
    if not prefix or not prefix[0].isalpha():
        prefix = "j" + (f"-{prefix}" if prefix else "")
    room = max_len - len(digest) - 1 - len(prefix) - 1  # prefix-...-digest
    parts = [p for p in (_slug(candidate), _slug(run_id)) if p]
    body = ""
    if room > 1 and parts:
        cand = parts[0][: max(1, (room * 2) // 3)] if len(parts) > 1 else parts[0][:room]
        body = cand
        if len(parts) > 1:
            rest = room - len(cand) - 1
            if rest > 0:
                body = f"{cand}-{parts[1][:rest]}"
        body = re.sub(r"-+", "-", body).strip("-")
    name = "-".join(p for p in (prefix, body, digest) if p)[:max_len]
    assert _DNS1035_LABEL.match(name) and len(name) <= max_len, name
    return name


def label_value(text: str) -> str:
    """``text`` made into a valid label value (<= 63 chars of [A-Za-z0-9-_.], alphanumeric at both ends).

    Values that had to be changed get a 6-hex hash of the original, so distinct inputs stay distinct; the
    exact original is kept in the object's annotations by :func:`pytorch_job`.
    """
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: 63 - 7].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


# ---------------------------------------------------------------------------------------------------- builder

def _check_quantity(name: str, value: str | int | float) -> str:
    from kubernetes.utils import parse_quantity

    try:
        if parse_quantity(value) <= 0:
            raise ValueError("must be positive")
    except ValueError as exc:
        raise ValueError(f"pytorch_job: {name}={value!r} is not a valid positive Kubernetes quantity ({exc})") \
            from None
    return str(value)


def pytorch_job(run_id: str, candidate: str, *, image: str, command: Sequence[str], args: Sequence[str] = (),
                namespace: str = "default", workers: int = 0, gpus: int = 1, cpu: str = "8", memory: str = "64Gi",
                cpu_limit: str | None = None, memory_limit: str | None = None, shm_size: str = "16Gi",
                gpu_resource: str = "nvidia.com/gpu", secret_name: str | None = None,
                secret_env: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
                service_account: str | None = None, image_pull_policy: str = "IfNotPresent",
                restart_policy: str = "Never", backoff_limit: int = 0,
                active_deadline_s: int | None = None, ttl_after_finished_s: int | None = 3600,
                run_as_user: int = 1000, node_selector: Mapping[str, str] | None = None,
                tolerations: Sequence[Mapping[str, Any]] | None = None, port: int = DEFAULT_PORT,
                extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob (a plain dict, ready for ``create_namespaced_custom_object``).

    Args:
        run_id, candidate: identify the job: its name (:func:`job_name`), labels ``damoc.io/run-id`` and
            ``damoc.io/candidate`` (label-safe forms) and annotations with the exact strings.
        image, command, args: the training container (named ``pytorch``, as the operator requires).
            ``command`` typically starts ``torchrun`` or ``deepspeed``; the operator sets the rendezvous env.
        workers: Worker replicas besides the one Master (0 = single node). World size is
            ``(1 + workers) * max(gpus, 1)`` processes; ``nprocPerNode`` is set to ``max(gpus, 1)``.
        gpus: GPUs per replica (``gpu_resource`` in requests and limits, which must be equal for an extended
            resource). 0 = CPU-only.
        cpu, memory: requests per replica; ``cpu_limit``/``memory_limit`` default to the requests (memory
            request == limit avoids the node over-committing memory under the job).
        shm_size: size limit of the memory-backed ``emptyDir`` mounted at ``/dev/shm`` (NCCL and dataloader
            workers need more than the container runtime's 64 MiB default). It counts against the memory limit.
        secret_name, secret_env: environment from a Secret by reference: ``{ENV_VAR: key_in_secret}`` becomes
            ``valueFrom.secretKeyRef`` (S3 credentials, HF token). Values are never copied into the object.
        env: plain, non-secret variables; a name that looks secret (…TOKEN, …PASSWORD, …SECRET…, …ACCESS_KEY…)
            is refused with a pointer to ``secret_env``.
        restart_policy, backoff_limit: pod restart policy (Never / OnFailure / Always / ExitCode) and
            ``runPolicy.backoffLimit``. Default: fail fast (a failed candidate is reported, not retried).
        active_deadline_s, ttl_after_finished_s: ``runPolicy`` deadlines (None = unset). ``cleanPodPolicy`` is
            "None" so a failed pod and its log stay readable until the TTL removes the job.
        run_as_user: non-root uid (and gid, fsGroup) of the pods. Both pod and container security contexts
            satisfy the "restricted" Pod Security Standard: runAsNonRoot, seccomp RuntimeDefault,
            allowPrivilegeEscalation false, all capabilities dropped.
    """
    if not image:
        raise ValueError("pytorch_job: image is required")
    if not command or not all(isinstance(c, str) and c for c in command):
        raise ValueError("pytorch_job: command must be a non-empty list of non-empty strings")
    if not _DNS1123_LABEL.match(namespace) or len(namespace) > 63:
        raise ValueError(f"pytorch_job: namespace {namespace!r} is not a DNS-1123 label")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"pytorch_job: workers must be an integer >= 0, got {workers!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"pytorch_job: gpus must be an integer >= 0, got {gpus!r}")
    if restart_policy not in ("Never", "OnFailure", "Always", "ExitCode"):
        raise ValueError(f"pytorch_job: restart_policy must be Never, OnFailure, Always or ExitCode, "
                         f"got {restart_policy!r}")
    if run_as_user <= 0:
        raise ValueError("pytorch_job: run_as_user must be a non-root uid (> 0)")
    requests = {"cpu": _check_quantity("cpu", cpu), "memory": _check_quantity("memory", memory)}
    limits = {"cpu": _check_quantity("cpu_limit", cpu_limit or cpu),
              "memory": _check_quantity("memory_limit", memory_limit or memory)}
    from kubernetes.utils import parse_quantity

    if parse_quantity(limits["memory"]) < parse_quantity(requests["memory"]):
        raise ValueError(f"pytorch_job: memory_limit {limits['memory']} is below the request {requests['memory']}")
    if parse_quantity(limits["cpu"]) < parse_quantity(requests["cpu"]):
        raise ValueError(f"pytorch_job: cpu_limit {limits['cpu']} is below the request {requests['cpu']}")
    _check_quantity("shm_size", shm_size)
    if gpus:
        requests[gpu_resource] = limits[gpu_resource] = str(gpus)

    container_env: list[dict[str, Any]] = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"pytorch_job: invalid environment variable name {key!r}")
        if _SECRETISH.search(key):
            raise ValueError(f"pytorch_job: env {key} looks like a secret; pass it with secret_env (secretKeyRef) "
                             "instead of a literal value")
        container_env.append({"name": key, "value": str(value)})
    if secret_env:
        if not secret_name:
            raise ValueError("pytorch_job: secret_env needs secret_name")
        for key, secret_key in secret_env.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"pytorch_job: invalid environment variable name {key!r}")
            container_env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": secret_name, "key": secret_key, "optional": False}}})

    name = job_name(run_id, candidate)
    labels = {"app.kubernetes.io/name": "damoc", "app.kubernetes.io/component": "finetune",
              "app.kubernetes.io/managed-by": "damoc", RUN_ID_LABEL: label_value(run_id),
              CANDIDATE_LABEL: label_value(candidate), **(extra_labels or {})}
    annotations = {RUN_ID_LABEL: run_id, CANDIDATE_LABEL: candidate}

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(command),
        "resources": {"requests": requests, "limits": limits},
        "ports": [{"name": "pytorchjob-port", "containerPort": int(port), "protocol": "TCP"}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if args:
        container["args"] = list(args)
    if container_env:
        container["env"] = container_env
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}],
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": run_as_user, "runAsGroup": run_as_user, "fsGroup": run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": restart_policy,
                "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                             "spec": _deep_copy(pod_spec)}}

    replica_specs = {"Master": replica(1)}
    if workers:
        replica_specs["Worker"] = replica(workers)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": int(backoff_limit)}
    if active_deadline_s is not None:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_s)
    if ttl_after_finished_s is not None:
        run_policy["ttlSecondsAfterFinished"] = int(ttl_after_finished_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {"nprocPerNode": str(max(gpus, 1)), "runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }


def _deep_copy(obj: Any) -> Any:
    import copy

    return copy.deepcopy(obj)


def world_size(job: Mapping[str, Any]) -> int:
    """Number of training processes the job starts: replicas over Master and Worker x ``nprocPerNode``."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    nodes = sum(int(s.get("replicas", 1)) for s in specs.values())
    return nodes * int(job["spec"].get("nprocPerNode", "1"))


# ---------------------------------------------------------------------------------------------------- cluster

def submit_job(api, job: Mapping[str, Any]) -> dict[str, Any]:
    """Create the job (``api.create_namespaced_custom_object``); returns the created object."""
    meta = job["metadata"]
    return _to_dict(api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, dict(job)))


def delete_job(api, name: str, namespace: str = "default", *, propagation_policy: str = "Foreground",
               missing_ok: bool = True) -> bool:
    """Delete the job and (Foreground) its pods and services (``api.delete_namespaced_custom_object``).

    Returns True when a delete was issued, False when the job did not exist and ``missing_ok``.
    """
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy=propagation_policy)
    except Exception as exc:  # kubernetes.client.exceptions.ApiException carries .status
        if missing_ok and getattr(exc, "status", None) == 404:
            return False
        raise
    return True


def _to_dict(obj: Any) -> Any:
    """Recorded JSON dicts pass through; kubernetes client models become their camelCase JSON form."""
    if obj is None or isinstance(obj, (dict, list, str, int, float, bool)):
        return obj
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return cond
    return None


def _pods(core_api, name: str, namespace: str) -> list[dict[str, Any]]:
    listing = _to_dict(core_api.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}"))
    return list((listing or {}).get("items") or [])


def _pod_problem(pod: Mapping[str, Any], max_restarts: int, include_exits: bool) -> tuple[str, str] | None:
    """(reason, message) when the pod has failed or cannot make progress; None when it is fine so far.

    While the job runs (``include_exits=False``) only states that will not recover count: OOMKilled (now or
    in the previous run), CrashLoopBackOff after ``max_restarts`` restarts, image/config errors. A plain
    non-zero exit may be retried by the operator (restart policies OnFailure/ExitCode), so it counts only once
    the job has failed (``include_exits=True``), to find the pod whose log explains the failure.
    """
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        restarts = int(cs.get("restartCount") or 0)
        for st in (state.get("terminated"), last.get("terminated")):
            if st and st.get("reason") == "OOMKilled":
                return "OOMKilled", (f"container {cs.get('name')} was killed for exceeding its memory limit "
                                     f"(exit code {st.get('exitCode')}, {restarts} restart(s)); raise "
                                     "memory_limit, or lower the micro batch / enable ZeRO offload")
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") in _FAILED_WAITING:
            if waiting["reason"] != "CrashLoopBackOff" or restarts >= max_restarts or include_exits:
                detail = waiting.get("message") or ""
                return waiting["reason"], (f"container {cs.get('name')} is in {waiting['reason']} after "
                                           f"{restarts} restart(s){': ' + detail if detail else ''}")
        terminated = state.get("terminated")
        if include_exits and terminated and int(terminated.get("exitCode") or 0) != 0:
            return (terminated.get("reason") or "Error",
                    f"container {cs.get('name')} exited with code {terminated.get('exitCode')}")
    if include_exits and status.get("phase") == "Failed":
        return status.get("reason") or "PodFailed", status.get("message") or "pod phase is Failed"
    return None


def _pod_logs(core_api, pod: Mapping[str, Any], namespace: str, tail_lines: int) -> str:
    name = pod["metadata"]["name"]
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarted = any(int(cs.get("restartCount") or 0) > 0 and not (cs.get("state") or {}).get("terminated")
                    for cs in statuses)
    # A restarted container's useful log (the crash) is the previous instance's.
    for previous in ((True, False) if restarted else (False,)):
        try:
            text = core_api.read_namespaced_pod_log(name, namespace, container=CONTAINER_NAME,
                                                    tail_lines=tail_lines, previous=previous)
            text = text.decode() if isinstance(text, bytes) else str(text or "")
            if text.strip():
                return text
        except Exception as exc:  # logs are best effort: the pod may be gone or never have started
            log.debug("no log for pod %s (previous=%s): %s", name, previous, exc)
    return ""


def _failing_pod(core_api, name: str, namespace: str, max_restarts: int,
                 include_exits: bool) -> tuple[dict, str, str] | None:
    pods = _pods(core_api, name, namespace)
    # Prefer the master: when it fails the workers usually fail only as a consequence.
    pods.sort(key=lambda p: (((p.get("metadata") or {}).get("labels") or {}).get(REPLICA_TYPE_LABEL, "")
                             .lower() != "master", (p.get("metadata") or {}).get("name", "")))
    for pod in pods:
        problem = _pod_problem(pod, max_restarts, include_exits)
        if problem:
            return pod, problem[0], problem[1]
    return None


def _failure_evidence(core_api, name: str, namespace: str, max_restarts: int,
                      tail_lines: int) -> tuple[str | None, str]:
    """(pod name, log tail) explaining a failed job: the failing pod (master first), else any of its pods."""
    if core_api is None:
        return None, ""
    try:
        found = _failing_pod(core_api, name, namespace, max_restarts, include_exits=True)
        pod = found[0] if found else next(iter(_pods(core_api, name, namespace)), None)
    except Exception as exc:  # evidence is best effort; the Failed condition is reported regardless
        log.warning("listing pods of failed job %s/%s failed: %s", namespace, name, exc)
        return None, ""
    if pod is None:
        return None, ""
    return pod["metadata"]["name"], _pod_logs(core_api, pod, namespace, tail_lines)


def wait_for_job(api, name: str, namespace: str = "default", timeout_s: float = 24 * 3600, poll_s: float = 30.0,
                 *, core_api=None, max_restarts: int = 3, log_tail_lines: int = 200,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the job until it succeeds; return the final job object, raise on failure or timeout.

    Reads the job with ``api.get_namespaced_custom_object(group, version, namespace, plural, name)`` every
    ``poll_s`` seconds. With ``core_api`` (a ``CoreV1Api``: ``list_namespaced_pod``,
    ``read_namespaced_pod_log``) the job's pods are inspected too, so a pod that will not recover fails the
    wait early instead of at the timeout: OOMKilled (now or in its previous run), CrashLoopBackOff after
    ``max_restarts`` restarts, image pull errors, container config errors; the failing pod's last
    ``log_tail_lines`` log lines (of the crashed instance, if restarted) are put in the error.

    Raises:
        TrainingJobError: condition Failed (reason and message from the condition), a failing pod (see above),
            or the job no longer exists (HTTP 404, reason "NotFound").
        TrainingJobTimeout: neither Succeeded nor Failed after ``timeout_s``.

    Other API errors (e.g. 5xx, connection resets) are logged and retried until the timeout. ``sleep`` and
    ``clock`` are injectable for tests.
    """
    if poll_s <= 0 or timeout_s < 0:
        raise ValueError("wait_for_job: poll_s must be > 0 and timeout_s >= 0")
    deadline = clock() + timeout_s
    conditions: list[dict[str, Any]] = []
    while True:
        try:
            job = _to_dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise TrainingJobError(name, "NotFound", f"job {namespace}/{name} does not exist (deleted?)") \
                    from exc
            log.warning("reading job %s/%s failed, retrying: %s", namespace, name, exc)
            job = None
        if job is not None:
            conditions = list((job.get("status") or {}).get("conditions") or [])
            if _condition(job, "Succeeded"):
                return job
            failed = _condition(job, "Failed")
            if failed:
                pod, logs = _failure_evidence(core_api, name, namespace, max_restarts, log_tail_lines)
                raise TrainingJobError(name, failed.get("reason") or "Failed",
                                       failed.get("message") or "job condition Failed", pod=pod, logs=logs)
            if core_api is not None:
                try:
                    found = _failing_pod(core_api, name, namespace, max_restarts, include_exits=False)
                except Exception as exc:
                    log.warning("listing pods of job %s/%s failed: %s", namespace, name, exc)
                    found = None
                if found:
                    pod, reason, message = found
                    raise TrainingJobError(name, reason, message, pod=pod["metadata"]["name"],
                                           logs=_pod_logs(core_api, pod, namespace, log_tail_lines))
        remaining = deadline - clock()
        if remaining <= 0:
            raise TrainingJobTimeout(name, timeout_s, conditions)
        sleep(min(poll_s, remaining))
