"""One fine-tuning job per candidate on a cluster: a Kubeflow PyTorchJob, its submission, wait and clean-up.

Version pinned: ``kubeflow.org/v1`` PyTorchJob, validated against the CRD of **Kubeflow Training Operator v1.9.4**
(``shared/schemas/crds/kubeflow.org_pytorchjobs.v1.9.4.yaml``), the last release of the v1 operator. It is the
version that still runs one Kubernetes object per training job with plain master/worker pod templates. **Legacy**
(launcher ``pytorchjob``): the Kubeflow distribution dropped the v1 operator after 26.03.1; on Kubeflow Trainer v2
clusters use the ``trainjob`` launcher (:mod:`damoc.cluster.trainjob`). Both share
:mod:`damoc.cluster.job_common` (naming, pod parts, submit / wait / delete).

How the operator runs the job (v1.9): it creates one pod and one headless Service per replica, named
``<job>-master-0`` and ``<job>-worker-<i>``, and injects ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``,
``RANK`` and ``PET_*`` (torchrun) variables into the container that must be named ``pytorch``. Pods carry the
labels ``training.kubeflow.org/job-name`` and ``training.kubeflow.org/replica-type``; job progress is reported
as ``status.conditions`` of type Created / Running / Restarting / Succeeded / Failed.

API objects: the functions that talk to the cluster take duck-typed ``kubernetes.client.CustomObjectsApi`` and
``kubernetes.client.CoreV1Api`` instances (see :mod:`damoc.cluster.job_common`), so tests pass fakes returning
recorded responses.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from damoc.cluster import job_common as jc
# Re-exported: the names callers and tests of this module have always used.
from damoc.cluster.job_common import (CANDIDATE_LABEL, MAX_JOB_NAME, RUN_ID_LABEL, TrainingJobError,  # noqa: F401
                                      TrainingJobTimeout, job_name, label_value)

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


def _master_first(pod: Mapping[str, Any]) -> tuple[bool, str]:
    meta = pod.get("metadata") or {}
    return (meta.get("labels") or {}).get(REPLICA_TYPE_LABEL, "").lower() != "master", meta.get("name", "")


JOB_KIND = jc.JobKind(GROUP, VERSION, PLURAL, KIND, succeeded="Succeeded", failed="Failed",
                      pod_label=JOB_NAME_LABEL, container=CONTAINER_NAME, primary_first=_master_first)


# ---------------------------------------------------------------------------------------------------- builder

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
    owner = "pytorch_job"
    jc.check_common(owner, image=image, command=command, namespace=namespace, run_as_user=run_as_user)
    jc.check_count(owner, "workers", workers, 0)
    jc.check_count(owner, "gpus", gpus, 0)
    if restart_policy not in ("Never", "OnFailure", "Always", "ExitCode"):
        raise ValueError(f"pytorch_job: restart_policy must be Never, OnFailure, Always or ExitCode, "
                         f"got {restart_policy!r}")
    res = jc.resources(owner, cpu=cpu, memory=memory, cpu_limit=cpu_limit, memory_limit=memory_limit, gpus=gpus,
                       gpu_resource=gpu_resource)
    shm, shm_mount = jc.shm_volume(owner, shm_size)
    container_env = jc.container_env(owner, env, secret_name, secret_env)
    name, labels, annotations = jc.identity(run_id, candidate, extra_labels)

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(command),
        "resources": res,
        "ports": [{"name": "pytorchjob-port", "containerPort": int(port), "protocol": "TCP"}],
        "volumeMounts": [shm_mount],
        "securityContext": jc.container_security_context(),
    }
    if args:
        container["args"] = list(args)
    if container_env:
        container["env"] = container_env
    pod_spec: dict[str, Any] = {"containers": [container], "volumes": [shm],
                                "securityContext": jc.pod_security_context(run_as_user),
                                **jc.placement(service_account, node_selector, tolerations)}

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": restart_policy,
                "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                             "spec": jc.deep_copy(pod_spec)}}

    replica_specs = {"Master": replica(1)}
    if workers:
        replica_specs["Worker"] = replica(workers)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": int(backoff_limit)}
    if active_deadline_s is not None:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_s)
    if ttl_after_finished_s is not None:
        run_policy["ttlSecondsAfterFinished"] = int(ttl_after_finished_s)
    return {
        "apiVersion": JOB_KIND.api_version,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {"nprocPerNode": str(max(gpus, 1)), "runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }


def world_size(job: Mapping[str, Any]) -> int:
    """Number of training processes the job starts: replicas over Master and Worker x ``nprocPerNode``."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    nodes = sum(int(s.get("replicas", 1)) for s in specs.values())
    return nodes * int(job["spec"].get("nprocPerNode", "1"))


# ---------------------------------------------------------------------------------------------------- cluster

_condition = jc.condition


def submit_job(api, job: Mapping[str, Any]) -> dict[str, Any]:
    """Create the PyTorchJob; returns the created object."""
    return jc.submit(api, JOB_KIND, job)


def delete_job(api, name: str, namespace: str = "default", *, propagation_policy: str = "Foreground",
               missing_ok: bool = True) -> bool:
    """Delete the PyTorchJob and (Foreground) its pods and services; False when it did not exist."""
    return jc.delete(api, JOB_KIND, name, namespace, propagation_policy=propagation_policy, missing_ok=missing_ok)


def wait_for_job(api, name: str, namespace: str = "default", timeout_s: float = 24 * 3600, poll_s: float = 30.0,
                 *, core_api=None, max_restarts: int = 3, log_tail_lines: int = 200,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the PyTorchJob until condition Succeeded (see :func:`damoc.cluster.job_common.wait`)."""
    return jc.wait(api, JOB_KIND, name, namespace, timeout_s, poll_s, core_api=core_api, max_restarts=max_restarts,
                   log_tail_lines=log_tail_lines, sleep=sleep, clock=clock)
