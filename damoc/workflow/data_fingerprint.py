"""What the user's data files are right now, as one string: the cache key of the tasks that read them.

KFP caches a task on its inputs; a data file rewritten in place keeps the same path parameter, so a scheduled
run would replay last week's data stages. The pipeline's first task (uncached) computes this fingerprint and
hands it to the data-reading task as an input: same content, same key (a cache hit); new content, a new key.
- s3:// objects: ETag and size (one HEAD request each; a prefix: every object's key, ETag and size).
- local files and demo:// data: the content hash (damoc.workflow.stage_cache.fingerprint).
- anything else (no way to tell its content cheaply): a fresh value every time, so it is never cached.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from damoc import storage
from damoc.config import DataConfig

UNCACHEABLE = "uncacheable:"


def _s3_fingerprint(uri: str) -> str:
    bucket, key = storage.split_s3(uri)
    client = storage.client_from_env()
    if key and not key.endswith("/"):
        try:
            stat = client.stat_object(bucket, key)
            return f"s3-object:{stat.etag}:{stat.size}"
        except Exception as err:  # noqa: BLE001 — not an object: perhaps a prefix, listed below
            if "NoSuchKey" not in str(err) and "Not Found" not in str(err) and "404" not in str(err):
                raise storage.StorageError(f"cannot read the ETag of {uri}: {err}") from err
    return "s3-prefix:" + storage.listing_fingerprint(uri)


def file_fingerprint(uri: str) -> str:
    """One data file's (or directory's) fingerprint."""
    if storage.is_s3(uri):
        return _s3_fingerprint(uri)
    from damoc.demo.builtin import DEMO_SCHEME, resolve_uri

    path = Path(resolve_uri(uri) if uri.startswith(DEMO_SCHEME) else uri.removeprefix("file://"))
    if path.exists():
        from damoc.workflow.stage_cache import fingerprint

        return "content:" + fingerprint(path)
    return UNCACHEABLE + uuid.uuid4().hex  # e.g. a hub dataset id, or missing (prepare-data says so)


def data_fingerprint(data: DataConfig) -> str:
    """The fingerprint of the run's training and evaluation data together."""
    parts = {"train": file_fingerprint(data.train), "eval": file_fingerprint(data.eval)}
    if any(v.startswith(UNCACHEABLE) for v in parts.values()):
        return UNCACHEABLE + uuid.uuid4().hex
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
