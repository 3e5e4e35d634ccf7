"""One fine-tuning job per candidate on Kubeflow Trainer v2: a ``TrainJob`` against a training runtime.

Version pinned: ``trainer.kubeflow.org/v1alpha1`` TrainJob of **Kubeflow Trainer v2.2.1**, validated against its
CRD (``shared/schemas/crds/trainer.kubeflow.org_trainjobs.v2.2.1.yaml``). Trainer renamed the pod-override field
in each minor release (``podSpecOverrides`` 2.0, ``podTemplateOverrides`` 2.1, ``runtimePatches`` 2.2); this
module writes the 2.2 form, so a cluster on an older Trainer rejects the object at create time (the error names
the unknown field) instead of silently running unhardened pods.

How Trainer runs it: the TrainJob names a runtime (``runtimeRef``: a ``ClusterTrainingRuntime`` installed by the
cluster admin, or a namespaced ``TrainingRuntime``); the controller merges the TrainJob's ``trainer`` (image,
command, args, env, ``numNodes``, ``numProcPerNode``, ``resourcesPerNode``) and ``runtimePatches`` into the
runtime's JobSet template and creates a JobSet of the same name. Its pods carry the label
``jobset.sigs.k8s.io/jobset-name=<job>`` and run the training container ``node``. Progress is reported as
``status.conditions`` of type Complete / Failed (and Suspended, e.g. while Kueue holds it for quota).

Two runtime families (the runtime's ``mlPolicy``), chosen by ``ml_policy``:

- ``torch`` (``torch-distributed``, or the chart's ``damoc-torch``): the torch plugin injects
  ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PORT`` into every ``node``
  container; the command is ``torchrun -m damoc.training.worker``, DeepSpeed ZeRO (``training.deepspeed``) runs
  under the HF Trainer in those processes.
- ``mpi`` (``deepspeed-distributed``: OpenMPI, sshd in the node pods, ``runLauncherAsNode``): the launcher pod
  runs ``mpirun`` over ``/etc/mpi/hostfile``; :func:`mpi_command` turns each rank's ``OMPI_COMM_WORLD_*``
  variables into the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and ``MASTER_ADDR`` (first host of the hostfile)
  that torch.distributed and the worker read. The image must hold OpenMPI and sshd besides DaMoC.

Pod hardening, ``/dev/shm``, service account and GPU placement go into one ``runtimePatches`` entry (manager
``damoc.io/launcher``) for the runtime's replicated jobs (``node``; with ``mpi`` also ``launcher``).
"""
from __future__ import annotations

import shlex
import time
from typing import Any, Callable, Mapping, Sequence

from damoc.cluster import job_common as jc
from damoc.cluster.job_common import TrainingJobError, TrainingJobTimeout  # noqa: F401  (raised by wait_for_job)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
#: Trainer release whose CRD the generated objects are validated against.
TRAINER_RELEASE = "v2.2.1"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
DEFAULT_RUNTIME = "torch-distributed"
#: The training container of every Trainer runtime (the trainer settings land in it).
CONTAINER_NAME = "node"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
PATCH_MANAGER = "damoc.io/launcher"
#: Replicated jobs of each runtime family that run training processes (and get the pod patch).
REPLICATED_JOBS = {"torch": ("node",), "mpi": ("launcher", "node")}
MPI_HOSTFILE = "/etc/mpi/hostfile"
MPI_MASTER_PORT = 29500


def _primary_first(pod: Mapping[str, Any]) -> tuple[bool, int, int, str]:
    """The launcher (mpi), then node job 0 / completion index 0 (torch rank 0), then the rest by name."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}

    def index(key: str) -> int:
        try:
            return int(labels.get(key, 0))
        except (TypeError, ValueError):
            return 0

    return (labels.get(REPLICATED_JOB_LABEL) != "launcher", index(JOB_INDEX_LABEL), index(COMPLETION_INDEX_LABEL),
            meta.get("name", ""))


JOB_KIND = jc.JobKind(GROUP, VERSION, PLURAL, KIND, succeeded="Complete", failed="Failed",
                      pod_label=JOBSET_NAME_LABEL, container=CONTAINER_NAME, primary_first=_primary_first)


# ---------------------------------------------------------------------------------------------------- commands

#: Runs in every MPI rank: OpenMPI's variables as the ones torch.distributed (env://) and the worker read.
_RANK_SCRIPT = ('export RANK="$OMPI_COMM_WORLD_RANK" WORLD_SIZE="$OMPI_COMM_WORLD_SIZE" '
                'LOCAL_RANK="$OMPI_COMM_WORLD_LOCAL_RANK" LOCAL_WORLD_SIZE="$OMPI_COMM_WORLD_LOCAL_SIZE"; exec "$@"')


def torch_command() -> list[str]:
    """The ``node`` container's command under a torch runtime (torchrun reads the plugin's ``PET_*``)."""
    return ["torchrun", "-m", "damoc.training.worker"]


def mpi_command(forward_env: Sequence[str] = (), *, hostfile: str = MPI_HOSTFILE, port: int = MPI_MASTER_PORT,
                mpirun: str = "mpirun") -> list[str]:
    """The launcher's command under an MPI runtime; the rank's program and its arguments follow as args.

    ``sh -c`` on the launcher: rendezvous at the hostfile's first host (rank 0 with ``--map-by slot``), then
    ``mpirun`` starts every slot with ``forward_env`` (names only: values, secrets included, stay in the launcher's
    environment and travel through OpenMPI, never in the object) and each rank maps its OpenMPI variables.
    """
    for name in forward_env:
        if not jc._ENV_NAME.match(name):
            raise ValueError(f"mpi_command: invalid environment variable name {name!r}")
    exports = " ".join(f"-x {shlex.quote(n)}" for n in ("MASTER_ADDR", "MASTER_PORT", *forward_env))
    script = (f"set -eu; MASTER_ADDR=$(awk 'NF {{print $1; exit}}' {shlex.quote(hostfile)}); "
              f"MASTER_PORT={int(port)}; export MASTER_ADDR MASTER_PORT; "
              f"exec {shlex.quote(mpirun)} --hostfile {shlex.quote(hostfile)} --bind-to none --map-by slot {exports} "
              f"sh -c {shlex.quote(_RANK_SCRIPT)} damoc-rank \"$@\"")
    return ["sh", "-c", script, "damoc-mpi-launcher"]


# ---------------------------------------------------------------------------------------------------- builder

def train_job(run_id: str, candidate: str, *, image: str, command: Sequence[str], args: Sequence[str] = (),
              runtime: str = DEFAULT_RUNTIME, runtime_kind: str = "ClusterTrainingRuntime", ml_policy: str = "torch",
              namespace: str = "default", nodes: int = 1, gpus_per_node: int = 1, procs_per_node: int | None = None,
              cpu: str = "8", memory: str = "64Gi", cpu_limit: str | None = None, memory_limit: str | None = None,
              shm_size: str = "16Gi", gpu_resource: str = "nvidia.com/gpu", secret_name: str | None = None,
              secret_env: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
              service_account: str | None = None, run_as_user: int = 1000,
              node_selector: Mapping[str, str] | None = None, tolerations: Sequence[Mapping[str, Any]] | None = None,
              active_deadline_s: int | None = None, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``trainer.kubeflow.org/v1alpha1`` TrainJob (a plain dict, ready for ``create_namespaced_custom_object``).

    Args:
        run_id, candidate: the job's name (:func:`damoc.cluster.job_common.job_name`, the same as the PyTorchJob
            launcher's), labels ``damoc.io/run-id`` / ``damoc.io/candidate`` and annotations with the exact strings.
        image, command, args: the ``node`` container (``trainer.image/command/args``, replacing the runtime's).
        runtime, runtime_kind: ``runtimeRef``; a namespaced ``TrainingRuntime`` must be in ``namespace``.
        ml_policy: ``torch`` or ``mpi``, the runtime's ``mlPolicy`` (decides which replicated jobs get the patch).
        nodes, gpus_per_node, procs_per_node: ``numNodes``; ``gpu_resource`` per node in requests and limits
            (0 = CPU-only); ``numProcPerNode`` (default ``max(gpus_per_node, 1)``; with ``mpi``: slots per node).
        cpu, memory, cpu_limit, memory_limit, shm_size: per node, as in the PyTorchJob builder.
        secret_name, secret_env, env: ``trainer.env`` (secrets by ``secretKeyRef`` only).
        service_account, node_selector, tolerations, run_as_user: pod patch (restricted Pod Security Standard).
        active_deadline_s: ``spec.activeDeadlineSeconds`` (None = unset): the TrainJob fails with
            DeadlineExceeded after it.
    """
    owner = "train_job"
    jc.check_common(owner, image=image, command=command, namespace=namespace, run_as_user=run_as_user)
    if not runtime or not isinstance(runtime, str) or len(runtime) > 253:
        raise ValueError(f"{owner}: runtime must be the name of a ClusterTrainingRuntime or TrainingRuntime")
    if runtime_kind not in RUNTIME_KINDS:
        raise ValueError(f"{owner}: runtime_kind must be one of {', '.join(RUNTIME_KINDS)}, got {runtime_kind!r}")
    if ml_policy not in REPLICATED_JOBS:
        raise ValueError(f"{owner}: ml_policy must be one of {', '.join(REPLICATED_JOBS)}, got {ml_policy!r}")
    jc.check_count(owner, "nodes", nodes, 1)
    jc.check_count(owner, "gpus_per_node", gpus_per_node, 0)
    if procs_per_node is not None:
        jc.check_count(owner, "procs_per_node", procs_per_node, 1)
    if active_deadline_s is not None:
        jc.check_count(owner, "active_deadline_s", active_deadline_s, 1)
    res = jc.resources(owner, cpu=cpu, memory=memory, cpu_limit=cpu_limit, memory_limit=memory_limit,
                       gpus=gpus_per_node, gpu_resource=gpu_resource)
    shm, shm_mount = jc.shm_volume(owner, shm_size)
    trainer_env = jc.container_env(owner, env, secret_name, secret_env)
    name, labels, annotations = jc.identity(run_id, candidate, extra_labels)

    pod_patch: dict[str, Any] = {
        "securityContext": jc.pod_security_context(run_as_user),
        **jc.placement(service_account, node_selector, tolerations),
        "volumes": [shm],
        "containers": [{"name": CONTAINER_NAME, "securityContext": jc.container_security_context(),
                        "volumeMounts": [shm_mount]}],
    }
    replicated = [{"name": rjob, "template": {
        "metadata": {"labels": dict(labels)},
        "spec": {"template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                              "spec": jc.deep_copy(pod_patch)}}}} for rjob in REPLICATED_JOBS[ml_policy]]
    trainer: dict[str, Any] = {"image": image, "command": list(command), "numNodes": nodes,
                               "numProcPerNode": procs_per_node or max(gpus_per_node, 1), "resourcesPerNode": res}
    if args:
        trainer["args"] = list(args)
    if trainer_env:
        trainer["env"] = trainer_env
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": runtime_kind, "name": runtime},
        "trainer": trainer,
        "runtimePatches": [{"manager": PATCH_MANAGER,
                            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": replicated}}}}],
    }
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)
    return {"apiVersion": JOB_KIND.api_version, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": spec}


def world_size(job: Mapping[str, Any]) -> int:
    """Training processes the job starts: ``numNodes`` x ``numProcPerNode``."""
    trainer = job["spec"]["trainer"]
    return int(trainer.get("numNodes", 1)) * int(trainer.get("numProcPerNode", 1))


# ---------------------------------------------------------------------------------------------------- cluster

def submit_job(api, job: Mapping[str, Any]) -> dict[str, Any]:
    """Create the TrainJob; returns the created object."""
    return jc.submit(api, JOB_KIND, job)


def delete_job(api, name: str, namespace: str = "default", *, propagation_policy: str = "Foreground",
               missing_ok: bool = True) -> bool:
    """Delete (= cancel) the TrainJob and, Foreground, its JobSet and pods; False when it did not exist."""
    return jc.delete(api, JOB_KIND, name, namespace, propagation_policy=propagation_policy, missing_ok=missing_ok)


def wait_for_job(api, name: str, namespace: str = "default", timeout_s: float = 24 * 3600, poll_s: float = 30.0,
                 *, core_api=None, max_restarts: int = 3, log_tail_lines: int = 200,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the TrainJob until condition Complete (see :func:`damoc.cluster.job_common.wait`); a Suspended job
    (queued by Kueue) keeps being waited for until the timeout."""
    return jc.wait(api, JOB_KIND, name, namespace, timeout_s, poll_s, core_api=core_api, max_restarts=max_restarts,
                   log_tail_lines=log_tail_lines, sleep=sleep, clock=clock)
