"""Atomic writes: readers see the old content or the whole new content, never half of it.

Files: write a temp sibling, fsync, `os.replace` (atomic on POSIX). Directories: Linux has no portable
atomic directory swap, so the old directory is parked under a sibling name, the new one renamed in, and the
parked one deleted afterwards; at every instant either the old or the new complete directory exists under
a known name (a crash in between leaves the old one parked, never nothing).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def sibling(path: Path, tag: str) -> Path:
    """A unique hidden name next to `path` (same filesystem, so a later rename is atomic)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path, "partial")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def replace_path(staged: str | Path, dest: str | Path) -> None:
    """Move a complete `staged` file or directory to `dest` (same filesystem), replacing what is there."""
    staged, dest = Path(staged), Path(dest)
    if staged.is_file() or not dest.exists() or dest.is_file():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)  # a file replacing a directory: nothing atomic is possible
        os.replace(staged, dest)
        return
    parked = sibling(dest, "old")
    os.rename(dest, parked)
    try:
        os.rename(staged, dest)
    except BaseException:
        os.rename(parked, dest)  # put the old one back: nothing lost
        raise
    shutil.rmtree(parked, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty temp sibling directory; on success it replaces `dest`, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(dest, "partial")
    tmp.mkdir()
    try:
        yield tmp
        replace_path(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_tree(path: str | Path) -> None:
    """Delete a scratch directory if present (never raises for a missing one)."""
    shutil.rmtree(path, ignore_errors=True)
