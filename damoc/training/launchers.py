"""The registry of training launchers: where and how a candidate's fine-tuning job runs.

- ``in_process``: the HF Trainer in the pipeline task's own process (laptop, CI, one device).
- ``torchrun``: one pod (or machine), ``training.processes`` processes (default: the GPUs visible, else 1):
  ``python -m torch.distributed.run --standalone --nproc_per_node N -m damoc.training.worker ...`` as a
  subprocess, the samples and settings handed over as files in ``.<out>.launch/`` next to the output. Its
  output is streamed to this process's stdout (the task log); a failure raises with the log's tail.
- ``trainjob``: several nodes through Kubeflow Trainer v2 (``damoc.cluster.trainjob``, a
  ``trainer.kubeflow.org/v1alpha1`` TrainJob against the runtime ``training.trainjob.runtime``, e.g. the
  ``torch-distributed`` or ``deepspeed-distributed`` ClusterTrainingRuntime): ``training.trainjob.nodes`` x
  ``gpus_per_node``, ``numProcPerNode`` = ``training.processes`` or the GPUs per node, per-node cpu / memory /
  ``/dev/shm`` from ``training.trainjob``; ``torchrun -m damoc.training.worker`` in every node (``ml_policy:
  torch``) or ``mpirun`` from the launcher (``ml_policy: mpi``).
- ``pytorchjob`` (legacy, clusters still on the Training Operator v1): the same through a Kubeflow PyTorchJob
  (``damoc.cluster.training_job``, ``kubeflow.org/v1``), ``training.nodes`` replicas x ``training.gpus_per_node``
  GPUs, per-pod resources from ``DAMOC_TRAINING_CPU`` / ``DAMOC_TRAINING_MEMORY`` / ``DAMOC_TRAINING_SHM``
  (defaults 8 / 64Gi / 16Gi), ``DAMOC_TRAINING_TIMEOUT_S`` (default one day).

Both cluster launchers (:func:`run_cluster_job`) put the model, samples and settings under a staging prefix the
pods can read (``training.staging_uri``, else ``$DAMOC_TRAINING_STAGING_URI``: an ``s3://`` prefix, or a path on
a volume every pod mounts at the same place), run ``damoc.training.worker`` against it, wait for the job (pod
failures surface with their logs), delete it when training ends, fails or is cancelled, and copy the trained
model to the output. ``training.checkpoint_uri`` checkpoints are mirrored by the worker, so a rerun resumes.

Deployment settings come from the environment (the chart's ``damoc-defaults`` ConfigMap), never from pipeline
parameters (they end up in KFP run metadata): ``DAMOC_TRAINING_IMAGE`` (unless ``training.image``),
``DAMOC_TRAINING_NAMESPACE`` (else the pod's own namespace, else ``default``), ``DAMOC_TRAINING_SECRET`` (name of
a Kubernetes Secret whose keys ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` the pods get by
``secretKeyRef``; values are never copied), ``DAMOC_TRAINING_SERVICE_ACCOUNT``, ``DAMOC_GPU_RESOURCE`` (default
``nvidia.com/gpu``), ``DAMOC_GPU_NODE_SELECTOR`` / ``DAMOC_GPU_TOLERATIONS`` (JSON), ``DAMOC_RUN_ID`` (else a
fresh id) naming the job. The S3 endpoint variables (``DAMOC_S3_ENDPOINT``, ``AWS_REGION``, ``DAMOC_S3_SECURE``)
are passed on as plain values.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from damoc.registry import Registry

TrainFn = Callable[..., dict[str, Any]]
"""(model_path, samples, out_dir, training_config, *, trust_remote_code, progress) -> training statistics"""


@dataclass(frozen=True)
class Launcher:
    name: str
    description: str
    train: TrainFn


LAUNCHERS: Registry[Launcher] = Registry("training launcher")


def _in_process(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
                trust_remote_code: bool = False, progress: bool = False, callbacks: Sequence[Any] | None = None,
                **_: Any) -> dict[str, Any]:
    from damoc.training.finetune import finetune  # torch is imported only when training actually runs

    return finetune(model_path, samples, out_dir, settings, trust_remote_code=trust_remote_code, progress=progress,
                    callbacks=callbacks)


LAUNCHERS.register("in_process", Launcher(
    "in_process", "HF Trainer inside the pipeline task's own process (laptop, CI, one device)", _in_process))


# ------------------------------------------------------------------------------------------------ torchrun

def default_processes() -> int:
    """Processes per node when ``training.processes`` is null: the CUDA devices visible, else 1."""
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch / broken driver: one process
        return 1


def worker_args(model: str, samples: str, settings: str, out: str, stats: str, *,
                trust_remote_code: bool = False, progress: bool = False) -> list[str]:
    """The ``damoc.training.worker`` arguments (after ``-m damoc.training.worker``)."""
    args = ["--model", model, "--samples", samples, "--settings", settings, "--out", out, "--stats", stats]
    if trust_remote_code:
        args.append("--trust-remote-code")
    if progress:
        args.append("--progress")
    return args


def torchrun_command(processes: int, args: Sequence[str]) -> list[str]:
    """``torchrun`` through this interpreter (same venv), one node, a free rendezvous port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "damoc.training.worker", *args]


def _run_streaming(cmd: Sequence[str], env: dict[str, str], tail_lines: int = 80) -> tuple[int, str]:
    """Run, copying output lines to our stdout (the task log); (exit code, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line)
        return proc.wait(), "".join(tail)
    finally:
        if proc.poll() is None:  # cancelled (KeyboardInterrupt, SIGTERM turned exception): stop the workers
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _torchrun(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
              trust_remote_code: bool = False, progress: bool = False, **_: Any) -> dict[str, Any]:
    import json

    from damoc.data.records import write_samples

    out_dir = Path(out_dir)
    processes = settings.processes or default_processes()
    work = out_dir.parent / f".{out_dir.name}.launch"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_samples(samples, work / "samples.jsonl")
        (work / "settings.json").write_text(settings.model_dump_json(), encoding="utf-8")
        stats_path = work / "stats.json"
        cmd = torchrun_command(processes, worker_args(
            str(model_path), str(work / "samples.jsonl"), str(work / "settings.json"), str(out_dir), str(stats_path),
            trust_remote_code=trust_remote_code, progress=progress))
        env = dict(os.environ)
        # Several CPU processes on one machine: share the cores instead of each taking all of them.
        if processes > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
        code, tail = _run_streaming(cmd, env)
        if code != 0:
            raise RuntimeError(f"torchrun ({processes} process(es)) exited with code {code}; last output:\n{tail}")
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats.update({"launcher": "torchrun", "processes": processes})
    return stats


LAUNCHERS.register("torchrun", Launcher(
    "torchrun", "one pod/machine, training.processes processes (default: the GPUs visible, else 1) under "
    "torchrun; DeepSpeed with training.deepspeed", _torchrun))


# ---------------------------------------------------------------------------------------- cluster launchers

_POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Plain (non-secret) variables passed on to the job's pods when set here.
_PASSED_ENV = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "AWS_REGION", "DAMOC_S3_SECURE",
               "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def training_namespace() -> str:
    ns = os.environ.get("DAMOC_TRAINING_NAMESPACE", "").strip()
    if ns:
        return ns
    try:
        return _POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def kubernetes_clients():
    """(CustomObjectsApi, CoreV1Api) from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def _json_env(name: str, kind: type) -> Any:
    import json

    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"${name} is not valid JSON ({exc}); the damoc-defaults ConfigMap sets it") from None
    if not isinstance(value, kind):
        raise ValueError(f"${name} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value or None


def secret_key_env() -> dict[str, str]:
    """{ENV_VAR: key in the S3 Secret}: the key names come from DAMOC_TRAINING_SECRET_KEYS ("access,secret"; the
    chart publishes accesskey,secretkey for KFP's own object store), AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY
    otherwise."""
    raw = os.environ.get("DAMOC_TRAINING_SECRET_KEYS", "").strip()
    names = [n.strip() for n in raw.split(",")] if raw else ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    if len(names) != 2 or not all(names):
        raise ValueError(f"DAMOC_TRAINING_SECRET_KEYS must be two key names, 'access,secret'; got {raw!r}")
    return {"AWS_ACCESS_KEY_ID": names[0], "AWS_SECRET_ACCESS_KEY": names[1]}


def job_settings(settings: Any, launcher: str) -> dict[str, Any]:
    """What both cluster launchers take from the deployment (env, the damoc-defaults ConfigMap), never from
    pipeline parameters (those end up in KFP run metadata): image, namespace, S3 Secret by name, service account,
    GPU resource name, node selector and tolerations of the GPU nodes, and the plain S3 endpoint variables."""
    image = settings.image or os.environ.get("DAMOC_TRAINING_IMAGE", "").strip()
    if not image:
        raise ValueError(f"launcher {launcher} needs a training image: set training.image or $DAMOC_TRAINING_IMAGE")
    secret = os.environ.get("DAMOC_TRAINING_SECRET", "").strip() or None
    env = {k: os.environ[k] for k in _PASSED_ENV if os.environ.get(k)}
    return {
        "image": image, "namespace": training_namespace(), "env": env or None, "secret_name": secret,
        "secret_env": secret_key_env() if secret else None,
        "service_account": os.environ.get("DAMOC_TRAINING_SERVICE_ACCOUNT", "").strip() or None,
        "gpu_resource": os.environ.get("DAMOC_GPU_RESOURCE", "").strip() or "nvidia.com/gpu",
        "node_selector": _json_env("DAMOC_GPU_NODE_SELECTOR", dict),
        "tolerations": _json_env("DAMOC_GPU_TOLERATIONS", list),
    }


def _staged_worker_args(staging: str, trust_remote_code: bool) -> list[str]:
    return worker_args(f"{staging}/model", f"{staging}/samples.jsonl", f"{staging}/settings.json",
                       f"{staging}/out/model", f"{staging}/out/stats.json", trust_remote_code=trust_remote_code)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a cluster job runs, SIGTERM (KFP cancelling the run deletes the task pod) raises SystemExit(143), so
    the job is deleted instead of left training. Only where SIGTERM still has its default action (a handler that
    the CLI or a runner installed is left alone) and in the main thread (signals are delivered only there)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass(frozen=True)
class ClusterBackend:
    """One operator's job API for :func:`run_cluster_job`: build the object, then submit / wait / delete it."""

    launcher: str
    #: (settings, run_id, candidate, staging prefix, trust_remote_code) -> the job object
    build: Callable[..., dict[str, Any]]
    submit: Callable[..., Any]
    wait: Callable[..., Any]
    delete: Callable[..., Any]
    #: settings -> (nodes, GPUs per node, timeout s, poll s)
    shape: Callable[[Any], tuple[int, int, float, float]]


def run_cluster_job(backend: ClusterBackend, model_path: str | Path, samples: Sequence, out_dir: str | Path,
                    settings: Any, *, trust_remote_code: bool = False, run_id: str | None = None,
                    candidate: str | None = None, clients: tuple[Any, Any] | None = None, poll_s: float | None = None,
                    sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Stage the model, samples and settings where the pods read them, run the job, copy the model back.

    The staging prefix is ``<staging_uri>/<job name>``; the job name is deterministic in (run, candidate), so the
    worker's checkpoint fingerprint (it includes the staged model URI) is the same on a rerun, and
    ``training.checkpoint_uri`` mirroring lets a rerun on fresh pods resume. The job is deleted when training
    ends, fails, times out or is cancelled (KeyboardInterrupt / SystemExit while waiting).
    """
    import json
    import tempfile
    import time

    from damoc import atomic, storage
    from damoc.data.records import write_samples

    launcher = backend.launcher
    staging_root = (settings.staging_uri or os.environ.get("DAMOC_TRAINING_STAGING_URI", "")).strip().rstrip("/")
    if not staging_root:
        raise ValueError(f"launcher {launcher} needs a staging location the job's pods can read: set "
                         "training.staging_uri or $DAMOC_TRAINING_STAGING_URI (an s3:// prefix)")
    out_dir = Path(out_dir)
    run_id = run_id or os.environ.get("DAMOC_RUN_ID") or uuid.uuid4().hex[:12]
    # Unique per output: the task's output directory identifies the candidate when no name is given.
    candidate = candidate or "c" + hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:10]
    job = backend.build(settings, run_id, candidate, "", trust_remote_code=trust_remote_code)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    staging = f"{staging_root}/{name}"
    job = backend.build(settings, run_id, candidate, staging, trust_remote_code=trust_remote_code)
    nodes, gpus_per_node, timeout_s, default_poll_s = backend.shape(settings)

    with tempfile.TemporaryDirectory(prefix="damoc-launch-") as tmp:
        tmp_path = Path(tmp)
        write_samples(samples, tmp_path / "samples.jsonl")
        (tmp_path / "settings.json").write_text(settings.model_dump_json(), encoding="utf-8")
        storage.publish(Path(model_path), f"{staging}/model")
        storage.publish(tmp_path / "samples.jsonl", f"{staging}/samples.jsonl")
        storage.publish(tmp_path / "settings.json", f"{staging}/settings.json")

    custom, core = clients or kubernetes_clients()
    started = time.perf_counter()
    with _sigterm_raises():
        backend.submit(custom, job)
        try:
            backend.wait(custom, name, namespace, timeout_s=timeout_s, poll_s=poll_s or default_poll_s,
                         core_api=core, **({"sleep": sleep} if sleep else {}))
        finally:  # success, failure, timeout or cancellation (Ctrl-C, SIGTERM): the job and its pods go
            backend.delete(custom, name, namespace)
    job_seconds = time.perf_counter() - started
    stats = json.loads(storage.read_text(f"{staging}/out/stats.json"))
    model_local = storage.localize(f"{staging}/out/model")
    with atomic.staged_dir(out_dir) as staged:
        shutil.copytree(model_local, staged, dirs_exist_ok=True)
    stats.update({"launcher": launcher, "job": name, "namespace": namespace, "nodes": nodes,
                  "gpus_per_node": gpus_per_node, "job_seconds": round(job_seconds, 3),
                  "gpu_hours": round(job_seconds * nodes * gpus_per_node / 3600, 4)})
    return stats


# ---------------------------------------------------------------------------------------------- pytorchjob

def build_training_job(settings: Any, run_id: str, candidate: str, staging: str, *,
                       trust_remote_code: bool = False) -> dict[str, Any]:
    """The PyTorchJob for one candidate: torchrun + the worker, reading and writing under ``staging``."""
    from damoc.cluster.training_job import pytorch_job

    job = pytorch_job(
        run_id, candidate, command=["torchrun", "-m", "damoc.training.worker"],
        args=_staged_worker_args(staging, trust_remote_code), workers=settings.nodes - 1,
        gpus=settings.gpus_per_node, cpu=os.environ.get("DAMOC_TRAINING_CPU", "8"),
        memory=os.environ.get("DAMOC_TRAINING_MEMORY", "64Gi"), shm_size=os.environ.get("DAMOC_TRAINING_SHM", "16Gi"),
        **job_settings(settings, "pytorchjob"))
    if settings.processes:
        job["spec"]["nprocPerNode"] = str(settings.processes)
    return job


def _pytorchjob_backend() -> ClusterBackend:
    from damoc.cluster import training_job as tj

    return ClusterBackend(
        "pytorchjob", build_training_job, tj.submit_job, tj.wait_for_job, tj.delete_job,
        lambda s: (s.nodes, s.gpus_per_node, float(os.environ.get("DAMOC_TRAINING_TIMEOUT_S", 24 * 3600)), 30.0))


def _pytorchjob(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
                trust_remote_code: bool = False, progress: bool = False, **kw: Any) -> dict[str, Any]:
    return run_cluster_job(_pytorchjob_backend(), model_path, samples, out_dir, settings,
                           trust_remote_code=trust_remote_code, **kw)


LAUNCHERS.register("pytorchjob", Launcher(
    "pytorchjob", "legacy (Training Operator v1 clusters): a Kubeflow PyTorchJob (kubeflow.org/v1) per candidate, "
    "training.nodes x training.gpus_per_node, staged through training.staging_uri; waited for and deleted",
    _pytorchjob))


# ------------------------------------------------------------------------------------------------ trainjob

def build_trainjob(settings: Any, run_id: str, candidate: str, staging: str, *,
                   trust_remote_code: bool = False) -> dict[str, Any]:
    """The TrainJob for one candidate: the worker under torchrun (torch runtimes) or mpirun (MPI runtimes)."""
    from damoc.cluster import trainjob as tjv2

    t = settings.trainjob
    deploy = job_settings(settings, "trainjob")
    args = _staged_worker_args(staging, trust_remote_code)
    if t.ml_policy == "mpi":
        forward = [*(deploy["env"] or {}), *(deploy["secret_env"] or {})]
        command, args = tjv2.mpi_command(forward), ["python", "-m", "damoc.training.worker", *args]
    else:
        command = tjv2.torch_command()
    return tjv2.train_job(
        run_id, candidate, command=command, args=args, runtime=t.runtime, runtime_kind=t.runtime_kind,
        ml_policy=t.ml_policy, nodes=t.nodes, gpus_per_node=t.gpus_per_node, procs_per_node=settings.processes,
        cpu=t.cpu, memory=t.memory, shm_size=t.shm_size, active_deadline_s=t.active_deadline_s, **deploy)


def _trainjob_backend() -> ClusterBackend:
    from damoc.cluster import trainjob as tjv2

    return ClusterBackend(
        "trainjob", build_trainjob, tjv2.submit_job, tjv2.wait_for_job, tjv2.delete_job,
        lambda s: (s.trainjob.nodes, s.trainjob.gpus_per_node, s.trainjob.timeout_s, s.trainjob.poll_s))


def _trainjob(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
              trust_remote_code: bool = False, progress: bool = False, **kw: Any) -> dict[str, Any]:
    return run_cluster_job(_trainjob_backend(), model_path, samples, out_dir, settings,
                           trust_remote_code=trust_remote_code, **kw)


LAUNCHERS.register("trainjob", Launcher(
    "trainjob", "several nodes on Kubeflow Trainer v2: a TrainJob (trainer.kubeflow.org/v1alpha1) per candidate "
    "against training.trainjob.runtime (torch-distributed, deepspeed-distributed, ...), training.trainjob.nodes x "
    "gpus_per_node, staged through training.staging_uri; waited for and deleted", _trainjob))
