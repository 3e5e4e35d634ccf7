"""Mirror training checkpoints to the artifact store, so a run whose disk is gone resumes.

A preempted pod loses its local scratch (``.<out>.trainer/run-<fingerprint>/``); with
``training.checkpoint_uri`` every checkpoint the Trainer writes is also put at
``<checkpoint_uri>/<run fingerprint 16>/checkpoint-<step>/`` (an ``s3://`` prefix or a local / shared-volume
path), and a rerun whose scratch has none downloads the newest complete one first, so the Trainer resumes.

Nothing half-written is taken as complete: an S3 upload carries ``storage.INCOMPLETE_MARKER`` from its first
object to its last (``storage.publish``), and deleting an old checkpoint puts the marker back first; a local
copy is staged under a hidden name and renamed in, a local delete renames it out first. A checkpoint also
needs the Trainer's ``trainer_state.json`` (what resuming reads) to count.
"""
from __future__ import annotations

import re
import shutil
from io import BytesIO
from pathlib import Path

from transformers import TrainerCallback

from damoc import atomic, storage

TRAINER_STATE = "trainer_state.json"
KEEP = 2  # the last checkpoint, and the one before in case the last is torn (as the local save_total_limit)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def run_uri(checkpoint_uri: str, fingerprint: str) -> str:
    """Where one training run's checkpoints go: ``<checkpoint_uri>/<fingerprint[:16]>``."""
    return f"{checkpoint_uri.rstrip('/')}/{fingerprint[:16]}"


def _step(name: str) -> int | None:
    match = _CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- listing

def remote_checkpoints(uri: str) -> dict[int, bool]:
    """{step: complete} of the checkpoints under a run URI (nothing there: {})."""
    if storage.is_s3(uri):
        return _s3_checkpoints(uri)
    root = storage._local_path(uri)
    if not root.is_dir():
        return {}
    found: dict[int, bool] = {}
    for child in root.iterdir():  # hidden staging/parked copies never match checkpoint-<n>
        step = _step(child.name)
        if step is not None and child.is_dir():
            found[step] = (child / TRAINER_STATE).is_file()
    return found


def _s3_checkpoints(uri: str) -> dict[int, bool]:
    bucket, key = storage.split_s3(uri)
    prefix = storage._dir_prefix(key)
    files: dict[int, set[str]] = {}
    for object_key in storage._list_keys(storage.client_from_env(), bucket, prefix, uri):
        top, _, rest = object_key[len(prefix):].partition("/")
        step = _step(top)
        if step is not None and rest:
            files.setdefault(step, set()).add(rest)
    return {step: TRAINER_STATE in names and storage.INCOMPLETE_MARKER not in names
            for step, names in files.items()}


# --------------------------------------------------------------------------- push, prune, pull

def push(local_checkpoint: Path, uri: str) -> str:
    """Upload (or copy) one local checkpoint directory to ``<uri>/<its name>``; returns that URI."""
    target = f"{uri}/{Path(local_checkpoint).name}"
    # publish: S3 marker first and last, stale objects of an earlier torn upload dropped; local: staged + rename.
    return storage.publish(Path(local_checkpoint), target)


def prune(uri: str, keep: int = KEEP) -> list[int]:
    """Delete all but the `keep` newest complete checkpoints (and torn ones older than those); returns the steps."""
    found = remote_checkpoints(uri)
    kept = sorted((s for s, complete in found.items() if complete), reverse=True)[:keep]
    if len(kept) < keep:
        return []
    doomed = sorted(s for s in found if s < kept[-1])
    for step in doomed:
        _delete(f"{uri}/checkpoint-{step}")
    return doomed


def remove_all(uri: str) -> None:
    """Delete every checkpoint of a run (after its model is saved, as the local scratch is)."""
    for step in sorted(remote_checkpoints(uri)):
        _delete(f"{uri}/checkpoint-{step}")


def _delete(checkpoint_uri: str) -> None:
    if not storage.is_s3(checkpoint_uri):
        path = storage._local_path(checkpoint_uri)
        parked = atomic.sibling(path, "deleting")
        with storage._wrapped("delete", checkpoint_uri):
            path.rename(parked)  # gone from the listing at once; then removed at leisure
        shutil.rmtree(parked, ignore_errors=True)
        return
    from minio.deleteobjects import DeleteObject

    bucket, key = storage.split_s3(checkpoint_uri)
    prefix, client = storage._dir_prefix(key), storage.client_from_env()
    marker = prefix + storage.INCOMPLETE_MARKER
    with storage._wrapped("delete", checkpoint_uri):
        # The marker first: a checkpoint deleted half-way is never taken as complete.
        client.put_object(bucket, marker, BytesIO(b""), 0)
        keys = [k for k in storage._list_keys(client, bucket, prefix, checkpoint_uri) if k != marker]
        errors = list(client.remove_objects(bucket, [DeleteObject(k) for k in keys]))
        if errors:
            raise storage.StorageError(f"delete {checkpoint_uri} failed for {[e.name for e in errors][:5]}")
        client.remove_object(bucket, marker)


def pull_latest(uri: str, local_run_dir: Path) -> int | None:
    """Download the newest complete checkpoint under `uri` into ``local_run_dir/checkpoint-<step>``.

    Returns its step, or None when there is none. The copy is staged beside the target and renamed in,
    so ``get_last_checkpoint`` never sees a partial one.
    """
    complete = [s for s, ok in remote_checkpoints(uri).items() if ok]
    if not complete:
        return None
    step = max(complete)
    source, target = f"{uri}/checkpoint-{step}", Path(local_run_dir) / f"checkpoint-{step}"
    if storage.is_s3(source):
        storage.download_dir_whole(source, target)
    else:  # a staged copy renamed in, as any local publish
        storage.publish(storage._local_path(source), str(target))
    return step


# --------------------------------------------------------------------------- the Trainer callback

class CheckpointSync(TrainerCallback):
    """After each checkpoint save: world process zero mirrors it to `uri` and prunes the older ones."""

    def __init__(self, uri: str, keep: int = KEEP) -> None:
        self.uri, self.keep = uri, keep
        self.pushed: list[int] = []

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its part (RNG state, ZeRO shards) before the upload
        if state.is_world_process_zero:
            push(Path(args.output_dir) / f"checkpoint-{state.global_step}", self.uri)
            prune(self.uri, self.keep)
            self.pushed.append(state.global_step)
        return control
