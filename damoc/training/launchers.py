"""The registry of training launchers: where and how a candidate's fine-tuning job runs.

- ``in_process``: the HF Trainer in the pipeline task's own process (laptop, CI, one device).
- ``torchrun``: one pod (or machine), ``training.processes`` processes (default: the GPUs visible, else 1):
  ``python -m torch.distributed.run --standalone --nproc_per_node N -m damoc.training.worker ...`` as a
  subprocess, the samples and settings handed over as files in ``.<out>.launch/`` next to the output. Its
  output is streamed to this process's stdout (the task log); a failure raises with the log's tail.
- ``pytorchjob``: several nodes through the Kubeflow Training Operator (``damoc.cluster.training_job``,
  ``kubeflow.org/v1`` PyTorchJob): the model, samples and settings are put under a staging prefix the pods
  can read (``training.staging_uri``, else ``$DAMOC_TRAINING_STAGING_URI``: an ``s3://`` prefix, or a path on a
  volume every pod mounts at the same place), the job (``training.nodes`` replicas x
  ``training.gpus_per_node`` GPUs, ``nprocPerNode`` = ``training.processes`` or the GPUs per node) runs
  ``torchrun -m damoc.training.worker`` against it, is waited for (pod failures surface with their logs) and
  deleted when training ends, fails or is cancelled; the trained model is then copied to the output.

  Settings from the environment, never from pipeline parameters (they end up in KFP run metadata):
  ``DAMOC_TRAINING_NAMESPACE`` (else the pod's own namespace, else ``default``),
  ``DAMOC_TRAINING_SECRET`` (name of a Kubernetes Secret whose keys ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY`` the pods get by ``secretKeyRef``; values are never copied),
  ``DAMOC_TRAINING_SERVICE_ACCOUNT``, ``DAMOC_TRAINING_CPU`` / ``DAMOC_TRAINING_MEMORY`` / ``DAMOC_TRAINING_SHM``
  (per-pod requests and ``/dev/shm`` size; defaults 8 / 64Gi / 16Gi), ``DAMOC_TRAINING_TIMEOUT_S`` (default one
  day), ``DAMOC_RUN_ID`` (else a fresh id) naming the job. The S3 endpoint variables
  (``DAMOC_S3_ENDPOINT``, ``AWS_REGION``, ``DAMOC_S3_SECURE``) are passed on as plain values.
"""
from __future__ import annotations

import collections
import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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


# ---------------------------------------------------------------------------------------------- pytorchjob

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


def build_training_job(settings: Any, run_id: str, candidate: str, staging: str, *,
                       trust_remote_code: bool = False) -> dict[str, Any]:
    """The PyTorchJob for one candidate: torchrun + the worker, reading and writing under ``staging``."""
    from damoc.cluster.training_job import pytorch_job

    image = settings.image or os.environ.get("DAMOC_TRAINING_IMAGE", "").strip()
    if not image:
        raise ValueError("launcher pytorchjob needs a training image: set training.image or $DAMOC_TRAINING_IMAGE")
    args = worker_args(f"{staging}/model", f"{staging}/samples.jsonl", f"{staging}/settings.json",
                       f"{staging}/out/model", f"{staging}/out/stats.json", trust_remote_code=trust_remote_code)
    secret = os.environ.get("DAMOC_TRAINING_SECRET", "").strip() or None
    env = {k: os.environ[k] for k in _PASSED_ENV if os.environ.get(k)}
    job = pytorch_job(
        run_id, candidate, image=image, command=["torchrun", "-m", "damoc.training.worker"], args=args,
        namespace=training_namespace(), workers=settings.nodes - 1, gpus=settings.gpus_per_node,
        cpu=os.environ.get("DAMOC_TRAINING_CPU", "8"), memory=os.environ.get("DAMOC_TRAINING_MEMORY", "64Gi"),
        shm_size=os.environ.get("DAMOC_TRAINING_SHM", "16Gi"), env=env or None, secret_name=secret,
        secret_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
        if secret else None,
        service_account=os.environ.get("DAMOC_TRAINING_SERVICE_ACCOUNT", "").strip() or None)
    if settings.processes:
        job["spec"]["nprocPerNode"] = str(settings.processes)
    return job


def _pytorchjob(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
                trust_remote_code: bool = False, progress: bool = False, run_id: str | None = None,
                candidate: str | None = None, clients: tuple[Any, Any] | None = None,
                poll_s: float = 30.0, sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    import json
    import tempfile
    import time

    from damoc import atomic, storage
    from damoc.cluster.training_job import delete_job, submit_job, wait_for_job
    from damoc.data.records import write_samples

    staging_root = (settings.staging_uri or os.environ.get("DAMOC_TRAINING_STAGING_URI", "")).strip().rstrip("/")
    if not staging_root:
        raise ValueError("launcher pytorchjob needs a staging location the job's pods can read: set "
                         "training.staging_uri or $DAMOC_TRAINING_STAGING_URI (an s3:// prefix)")
    out_dir = Path(out_dir)
    run_id = run_id or os.environ.get("DAMOC_RUN_ID") or uuid.uuid4().hex[:12]
    # Unique per output: the task's output directory identifies the candidate when no name is given.
    candidate = candidate or "c" + hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:10]
    job = build_training_job(settings, run_id, candidate, "", trust_remote_code=trust_remote_code)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    staging = f"{staging_root}/{name}"
    job = build_training_job(settings, run_id, candidate, staging, trust_remote_code=trust_remote_code)

    with tempfile.TemporaryDirectory(prefix="damoc-launch-") as tmp:
        tmp_path = Path(tmp)
        write_samples(samples, tmp_path / "samples.jsonl")
        (tmp_path / "settings.json").write_text(settings.model_dump_json(), encoding="utf-8")
        storage.publish(Path(model_path), f"{staging}/model")
        storage.publish(tmp_path / "samples.jsonl", f"{staging}/samples.jsonl")
        storage.publish(tmp_path / "settings.json", f"{staging}/settings.json")

    custom, core = clients or kubernetes_clients()
    timeout_s = float(os.environ.get("DAMOC_TRAINING_TIMEOUT_S", 24 * 3600))
    started = time.perf_counter()
    submit_job(custom, job)
    try:
        wait_for_job(custom, name, namespace, timeout_s=timeout_s, poll_s=poll_s, core_api=core,
                     **({"sleep": sleep} if sleep else {}))
    finally:  # success, failure, timeout or cancellation: the job and its pods go
        delete_job(custom, name, namespace)
    job_seconds = time.perf_counter() - started
    stats = json.loads(storage.read_text(f"{staging}/out/stats.json"))
    model_local = storage.localize(f"{staging}/out/model")
    with atomic.staged_dir(out_dir) as staged:
        shutil.copytree(model_local, staged, dirs_exist_ok=True)
    stats.update({"launcher": "pytorchjob", "job": name, "namespace": namespace, "nodes": settings.nodes,
                  "gpus_per_node": settings.gpus_per_node, "job_seconds": round(job_seconds, 3),
                  "gpu_hours": round(job_seconds * settings.nodes * settings.gpus_per_node / 3600, 4)})
    return stats


LAUNCHERS.register("pytorchjob", Launcher(
    "pytorchjob", "several nodes: a Kubeflow PyTorchJob (kubeflow.org/v1) per candidate, training.nodes x "
    "training.gpus_per_node, staged through training.staging_uri; waited for and deleted", _pytorchjob))
