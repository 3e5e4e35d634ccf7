"""Init container of the vLLM rewriter: copy a model directory from s3:// into the serving volume.

    python3 /opt/damoc/bin/fetch_model.py s3://bucket/models/rewriter /models/rewriter

S3 endpoint and credentials come from the environment (DAMOC_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, from a Secret), as everywhere in DaMoC. A complete earlier copy (marker file
present) is kept, so a restarted pod does not download again.
"""
from __future__ import annotations

import sys
from pathlib import Path

MARKER = ".damoc-fetched"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fetch_model.py s3://bucket/prefix DEST_DIR", file=sys.stderr)
        return 2
    source, dest = argv[0].rstrip("/"), Path(argv[1])
    marker = dest / MARKER
    if marker.is_file() and marker.read_text().strip() == source:
        print(f"model already present in {dest} (from {source})")
        return 0
    from damoc import storage

    if not storage.is_s3(source):
        print(f"error: {source!r} is not an s3:// URI", file=sys.stderr)
        return 2
    try:
        storage.download_dir(source, dest)
    except Exception as err:  # noqa: BLE001 - one line in the pod's termination message
        print(f"error: fetching {source} failed: {err}", file=sys.stderr)
        return 1
    marker.write_text(source + "\n")
    files = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"fetched {source} -> {dest} ({files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
