"""Where a candidate's checkpoint comes from: a local directory, an s3:// prefix, or a hub id."""
from __future__ import annotations

import tempfile
from pathlib import Path

from damoc import atomic, storage
from damoc.paths import damoc_home
from damoc.workflow.outcome import read_model_ref


SOURCE_FILE = ".damoc-source"  # the remote listing fingerprint a cached copy was downloaded from


def _copied_from(cached: Path) -> str | None:
    try:
        return (cached / SOURCE_FILE).read_text().strip()
    except OSError:
        return None


def model_cache_dir() -> Path:
    return damoc_home() / "models"


def resolve_model_source(uri: str) -> str:
    """A path or hub id that `from_pretrained` accepts. s3:// checkpoints are downloaded first."""
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        # keyed by endpoint too: the same bucket/key on two object stores are two checkpoints
        dest = model_cache_dir() / storage.endpoint_slug() / bucket / key.strip("/")
        # The copy is reused only while the remote listing (keys, ETags, sizes) is the one it was made from:
        # a checkpoint rewritten in place is downloaded again.
        source = storage.listing_fingerprint(uri)
        if (dest / "config.json").is_file() and _copied_from(dest) == source:
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".download-"))
        try:
            storage.download_dir(uri, tmp)
            (tmp / SOURCE_FILE).write_text(source)
            if _copied_from(dest) != source:  # absent or stale (a concurrent download of this version may have won)
                atomic.replace_path(tmp, dest)
        except OSError:
            if _copied_from(dest) != source:  # not a concurrent download of this version that finished first
                raise
        finally:
            atomic.remove_tree(tmp)
        return str(dest)
    local = uri.removeprefix("file://")
    if Path(local).exists():
        return local
    if uri.startswith(("/", ".", "~", "file://")) or uri.count("/") > 1:
        raise FileNotFoundError(f"checkpoint not found: {uri} (a local directory, s3://bucket/prefix, "
                                "or a hub id like org/name)")
    return uri  # a hub id: resolved by transformers on a cluster that can reach the hub


def model_in_artifact(model_dir: Path) -> str:
    """The checkpoint an upstream step produced: its own files, or the source it referred to."""
    ref = read_model_ref(model_dir)
    return resolve_model_source(ref["source"]) if ref else str(model_dir)
