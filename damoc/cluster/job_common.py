"""What every per-candidate training job on a cluster shares, whichever operator runs it.

Both cluster launchers (``pytorchjob``: Training Operator v1 PyTorchJob, :mod:`damoc.cluster.training_job`;
``trainjob``: Kubeflow Trainer v2 TrainJob, :mod:`damoc.cluster.trainjob`) build their object from the same
parts and talk to the API server the same way:

- naming: a deterministic DNS-1035 job name per (run, candidate), label-safe identity labels;
- the training container: resources (GPU requests == limits), environment (plain values, secrets only by
  ``secretKeyRef``), a memory-backed ``/dev/shm``, the "restricted" Pod Security Standard contexts;
- the API calls: create, poll by name (``get``), delete (Foreground), list the job's pods by one label and read
  the failing pod's log — exactly the verbs the chart's Role grants (tests/test_deploy_manifests.py checks it);
- the wait: job conditions plus pod states (OOMKilled, CrashLoopBackOff, image errors) so a job that will not
  recover fails early, with the log tail of the pod that explains it.

A :class:`JobKind` names what differs between operators (API group/version/plural, condition types, the pod
label and container name). API objects are duck-typed ``kubernetes.client.CustomObjectsApi`` /
``CoreV1Api`` instances, so tests pass fakes that return recorded responses.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

RUN_ID_LABEL = "damoc.io/run-id"
CANDIDATE_LABEL = "damoc.io/candidate"
#: Job names are kept this short: operators name child objects ``<job>-<role>-<index>`` (PyTorchJob Services
#: ``<job>-worker-<i>``, JobSet pod hostnames ``<job>-launcher-0-0``), each a DNS-1035 label (<= 63 chars).
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
    """The job reached neither success nor failure within the timeout. ``last_conditions`` holds what was seen."""

    def __init__(self, name: str, timeout_s: float, last_conditions: list[dict[str, Any]]):
        self.name, self.timeout_s, self.last_conditions = name, timeout_s, last_conditions
        seen = ", ".join(f"{c.get('type')}={c.get('status')}" for c in last_conditions) or "no conditions"
        super().__init__(f"training job {name} did not finish within {timeout_s:g} s (last seen: {seen})")


@dataclass(frozen=True)
class JobKind:
    """What differs between the operators' job objects, for the generic submit / wait / delete."""

    group: str
    version: str
    plural: str
    kind: str
    #: Condition types (status "True") that end the wait: success and failure.
    succeeded: str
    failed: str
    #: Label every pod of the job carries with the job's name as value (pods are listed by it).
    pod_label: str
    #: Name of the training container (its log explains a failure).
    container: str
    #: Sort key over pods: the pod whose failure is the cause (rank 0 / launcher) first.
    primary_first: Callable[[Mapping[str, Any]], Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


# ---------------------------------------------------------------------------------------------------- naming

def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def job_name(run_id: str, candidate: str, *, prefix: str = "damoc-ft", max_len: int = MAX_JOB_NAME) -> str:
    """A unique, deterministic job name for (run, candidate): ``<prefix>-<candidate>-<run>-<hash8>``.

    DNS-1123 label that also starts with a letter (DNS-1035, as the operators' child object names require) and
    is at most ``max_len`` characters. Readable parts are slugged and truncated; the 8-hex suffix is the SHA-256
    of the exact (run_id, candidate) pair, so two candidates whose slugs collide ("Qwen/Qwen2.5-7B" and
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
    exact original is kept in the object's annotations (:func:`identity`).
    """
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: 63 - 7].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def identity(run_id: str, candidate: str, extra_labels: Mapping[str, str] | None = None
             ) -> tuple[str, dict[str, str], dict[str, str]]:
    """(job name, labels, annotations) of the job for (run, candidate); annotations keep the exact strings."""
    labels = {"app.kubernetes.io/name": "damoc", "app.kubernetes.io/component": "finetune",
              "app.kubernetes.io/managed-by": "damoc", RUN_ID_LABEL: label_value(run_id),
              CANDIDATE_LABEL: label_value(candidate), **(extra_labels or {})}
    return job_name(run_id, candidate), labels, {RUN_ID_LABEL: run_id, CANDIDATE_LABEL: candidate}


# ---------------------------------------------------------------------------------------------------- pod parts

def check_common(owner: str, *, image: str, command: Sequence[str], namespace: str, run_as_user: int) -> None:
    """The checks every builder makes on its container and placement; ``owner`` prefixes the messages."""
    if not image:
        raise ValueError(f"{owner}: image is required")
    if not command or not all(isinstance(c, str) and c for c in command):
        raise ValueError(f"{owner}: command must be a non-empty list of non-empty strings")
    if not _DNS1123_LABEL.match(namespace) or len(namespace) > 63:
        raise ValueError(f"{owner}: namespace {namespace!r} is not a DNS-1123 label")
    if run_as_user <= 0:
        raise ValueError(f"{owner}: run_as_user must be a non-root uid (> 0)")


def check_count(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_quantity(owner: str, name: str, value: str | int | float) -> str:
    from kubernetes.utils import parse_quantity

    try:
        if parse_quantity(value) <= 0:
            raise ValueError("must be positive")
    except ValueError as exc:
        raise ValueError(f"{owner}: {name}={value!r} is not a valid positive Kubernetes quantity ({exc})") \
            from None
    return str(value)


def resources(owner: str, *, cpu: str, memory: str, cpu_limit: str | None = None, memory_limit: str | None = None,
              gpus: int = 0, gpu_resource: str = "nvidia.com/gpu") -> dict[str, dict[str, str]]:
    """Requests and limits of one training container (limits default to the requests).

    Memory request == limit by default so the node does not over-commit memory under the job; an extended
    resource (GPUs) must have requests equal to limits.
    """
    from kubernetes.utils import parse_quantity

    requests = {"cpu": _check_quantity(owner, "cpu", cpu), "memory": _check_quantity(owner, "memory", memory)}
    limits = {"cpu": _check_quantity(owner, "cpu_limit", cpu_limit or cpu),
              "memory": _check_quantity(owner, "memory_limit", memory_limit or memory)}
    if parse_quantity(limits["memory"]) < parse_quantity(requests["memory"]):
        raise ValueError(f"{owner}: memory_limit {limits['memory']} is below the request {requests['memory']}")
    if parse_quantity(limits["cpu"]) < parse_quantity(requests["cpu"]):
        raise ValueError(f"{owner}: cpu_limit {limits['cpu']} is below the request {requests['cpu']}")
    if gpus:
        requests[gpu_resource] = limits[gpu_resource] = str(gpus)
    return {"requests": requests, "limits": limits}


def container_env(owner: str, env: Mapping[str, str] | None = None, secret_name: str | None = None,
                  secret_env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Plain variables as values, ``{ENV_VAR: key_in_secret}`` as ``secretKeyRef``s (values never copied).

    A plain variable whose name looks secret (…TOKEN, …PASSWORD, …SECRET…, …ACCESS_KEY…) is refused with a
    pointer to ``secret_env``.
    """
    out: list[dict[str, Any]] = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"{owner}: invalid environment variable name {key!r}")
        if _SECRETISH.search(key):
            raise ValueError(f"{owner}: env {key} looks like a secret; pass it with secret_env (secretKeyRef) "
                             "instead of a literal value")
        out.append({"name": key, "value": str(value)})
    if secret_env:
        if not secret_name:
            raise ValueError(f"{owner}: secret_env needs secret_name")
        for key, secret_key in secret_env.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{owner}: invalid environment variable name {key!r}")
            out.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": secret_name, "key": secret_key, "optional": False}}})
    return out


def shm_volume(owner: str, shm_size: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(volume, mount) of a memory-backed ``/dev/shm``: NCCL and dataloader workers need more than the container
    runtime's 64 MiB default. It counts against the memory limit."""
    _check_quantity(owner, "shm_size", shm_size)
    return ({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
            {"name": "dshm", "mountPath": "/dev/shm"})


def container_security_context() -> dict[str, Any]:
    """The "restricted" Pod Security Standard, container part."""
    return {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security_context(run_as_user: int) -> dict[str, Any]:
    """Non-root uid (and gid, fsGroup) for every pod, seccomp RuntimeDefault."""
    return {"runAsNonRoot": True, "runAsUser": run_as_user, "runAsGroup": run_as_user, "fsGroup": run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"}}


def placement(service_account: str | None, node_selector: Mapping[str, str] | None,
              tolerations: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The optional pod-spec fields that place the pods: service account, node selector, tolerations."""
    out: dict[str, Any] = {}
    if service_account:
        out["serviceAccountName"] = service_account
    if node_selector:
        out["nodeSelector"] = dict(node_selector)
    if tolerations:
        out["tolerations"] = [dict(t) for t in tolerations]
    return out


def deep_copy(obj: Any) -> Any:
    return copy.deepcopy(obj)


# ---------------------------------------------------------------------------------------------------- cluster

def to_dict(obj: Any) -> Any:
    """Recorded JSON dicts pass through; kubernetes client models become their camelCase JSON form."""
    if obj is None or isinstance(obj, (dict, list, str, int, float, bool)):
        return obj
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def submit(api, kind: JobKind, job: Mapping[str, Any]) -> dict[str, Any]:
    """Create the job (``api.create_namespaced_custom_object``); returns the created object.

    ``fieldValidation=Strict``: an API server whose CRD lacks a field we set (an older operator release) refuses
    the object with the field's name, instead of pruning it silently (the default) and running pods without it.
    """
    meta = job["metadata"]
    return to_dict(api.create_namespaced_custom_object(kind.group, kind.version, meta["namespace"], kind.plural,
                                                       dict(job), field_validation="Strict"))


def delete(api, kind: JobKind, name: str, namespace: str = "default", *, propagation_policy: str = "Foreground",
           missing_ok: bool = True) -> bool:
    """Delete the job and (Foreground) what the operator made for it (``api.delete_namespaced_custom_object``).

    Returns True when a delete was issued, False when the job did not exist and ``missing_ok``.
    """
    try:
        api.delete_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name,
                                            propagation_policy=propagation_policy)
    except Exception as exc:  # kubernetes.client.exceptions.ApiException carries .status
        if missing_ok and getattr(exc, "status", None) == 404:
            return False
        raise
    return True


def condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The job's condition of type ``kind`` when its status is "True", else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return cond
    return None


def _pods(core_api, kind: JobKind, name: str, namespace: str) -> list[dict[str, Any]]:
    listing = to_dict(core_api.list_namespaced_pod(namespace, label_selector=f"{kind.pod_label}={name}"))
    return list((listing or {}).get("items") or [])


def pod_problem(pod: Mapping[str, Any], max_restarts: int, include_exits: bool) -> tuple[str, str] | None:
    """(reason, message) when the pod has failed or cannot make progress; None when it is fine so far.

    While the job runs (``include_exits=False``) only states that will not recover count: OOMKilled (now or
    in the previous run), CrashLoopBackOff after ``max_restarts`` restarts, image/config errors. A plain
    non-zero exit may be retried by the operator (restart policies, JobSet failure policies), so it counts only
    once the job has failed (``include_exits=True``), to find the pod whose log explains the failure.
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


def pod_logs(core_api, kind: JobKind, pod: Mapping[str, Any], namespace: str, tail_lines: int) -> str:
    name = pod["metadata"]["name"]
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarted = any(int(cs.get("restartCount") or 0) > 0 and not (cs.get("state") or {}).get("terminated")
                    for cs in statuses)
    # A restarted container's useful log (the crash) is the previous instance's.
    for previous in ((True, False) if restarted else (False,)):
        try:
            text = core_api.read_namespaced_pod_log(name, namespace, container=kind.container,
                                                    tail_lines=tail_lines, previous=previous)
            text = text.decode() if isinstance(text, bytes) else str(text or "")
            if text.strip():
                return text
        except Exception as exc:  # logs are best effort: the pod may be gone or never have started
            log.debug("no log for pod %s (previous=%s): %s", name, previous, exc)
    return ""


def _failing_pod(core_api, kind: JobKind, name: str, namespace: str, max_restarts: int,
                 include_exits: bool) -> tuple[dict, str, str] | None:
    # The primary pod first: when rank 0 / the launcher fails, the others usually fail only as a consequence.
    pods = sorted(_pods(core_api, kind, name, namespace), key=kind.primary_first)
    for pod in pods:
        problem = pod_problem(pod, max_restarts, include_exits)
        if problem:
            return pod, problem[0], problem[1]
    return None


def _failure_evidence(core_api, kind: JobKind, name: str, namespace: str, max_restarts: int,
                      tail_lines: int) -> tuple[str | None, str]:
    """(pod name, log tail) explaining a failed job: the failing pod (primary first), else its primary pod."""
    if core_api is None:
        return None, ""
    try:
        found = _failing_pod(core_api, kind, name, namespace, max_restarts, include_exits=True)
        pod = found[0] if found else next(iter(sorted(_pods(core_api, kind, name, namespace),
                                                      key=kind.primary_first)), None)
    except Exception as exc:  # evidence is best effort; the Failed condition is reported regardless
        log.warning("listing pods of failed job %s/%s failed: %s", namespace, name, exc)
        return None, ""
    if pod is None:
        return None, ""
    return pod["metadata"]["name"], pod_logs(core_api, kind, pod, namespace, tail_lines)


def wait(api, kind: JobKind, name: str, namespace: str = "default", timeout_s: float = 24 * 3600,
         poll_s: float = 30.0, *, core_api=None, max_restarts: int = 3, log_tail_lines: int = 200,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the job until it succeeds; return the final job object, raise on failure or timeout.

    Reads the job with ``api.get_namespaced_custom_object(group, version, namespace, plural, name)`` every
    ``poll_s`` seconds. With ``core_api`` (a ``CoreV1Api``: ``list_namespaced_pod``,
    ``read_namespaced_pod_log``) the job's pods are inspected too, so a pod that will not recover fails the
    wait early instead of at the timeout: OOMKilled (now or in its previous run), CrashLoopBackOff after
    ``max_restarts`` restarts, image pull errors, container config errors; the failing pod's last
    ``log_tail_lines`` log lines (of the crashed instance, if restarted) are put in the error.

    Raises:
        TrainingJobError: condition ``kind.failed`` (reason and message from the condition), a failing pod
            (see above), or the job no longer exists (HTTP 404, reason "NotFound": deleted by someone else).
        TrainingJobTimeout: neither condition after ``timeout_s``.

    Other API errors (e.g. 5xx, connection resets) are logged and retried until the timeout. ``sleep`` and
    ``clock`` are injectable for tests.
    """
    if poll_s <= 0 or timeout_s < 0:
        raise ValueError("wait: poll_s must be > 0 and timeout_s >= 0")
    deadline = clock() + timeout_s
    conditions: list[dict[str, Any]] = []
    while True:
        try:
            job = to_dict(api.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise TrainingJobError(name, "NotFound", f"job {namespace}/{name} does not exist (deleted?)") \
                    from exc
            log.warning("reading job %s/%s failed, retrying: %s", namespace, name, exc)
            job = None
        if job is not None:
            conditions = list((job.get("status") or {}).get("conditions") or [])
            if condition(job, kind.succeeded):
                return job
            failed = condition(job, kind.failed)
            if failed:
                pod, logs = _failure_evidence(core_api, kind, name, namespace, max_restarts, log_tail_lines)
                raise TrainingJobError(name, failed.get("reason") or "Failed",
                                       failed.get("message") or f"job condition {kind.failed}", pod=pod, logs=logs)
            if core_api is not None:
                try:
                    found = _failing_pod(core_api, kind, name, namespace, max_restarts, include_exits=False)
                except Exception as exc:
                    log.warning("listing pods of job %s/%s failed: %s", namespace, name, exc)
                    found = None
                if found:
                    pod, reason, message = found
                    raise TrainingJobError(name, reason, message, pod=pod["metadata"]["name"],
                                           logs=pod_logs(core_api, kind, pod, namespace, log_tail_lines))
        remaining = deadline - clock()
        if remaining <= 0:
            raise TrainingJobTimeout(name, timeout_s, conditions)
        sleep(min(poll_s, remaining))
