"""Content-addressed stage outputs: a rerun reuses every finished stage whose inputs are identical.

An entry's key is the sha256 of: the stage name; the code version (damoc's version, a hash of the damoc
package's .py sources and the versions of the libraries that compute results, so changed code never reuses
stale outputs); the canonical JSON of exactly the config parts the stage reads (with the content of every local
file or directory those parts name); and the content of the stage's input artifacts. Entries live under
`<root>/<stage>/<key>/` (root: $DAMOC_STAGE_CACHE_DIR, else $DAMOC_HOME/stage-cache) and hold the outputs
(`out/<name>`), the stage's result JSON, a manifest of the outputs' files and sizes, and a completion marker;
they are built in a temp sibling and renamed in, so a crash never leaves a half entry that looks complete.
An entry is self-contained: its files are hard links (or copies) of the outputs, never references into the run
that made them, and a model reference (damoc_model_ref.json) to a checkpoint inside the same output is stored
relative to it and pointed at the restoring run's own copy on restore. Cleaning a run's directory therefore
never invalidates an entry; an entry whose files went missing or changed size, or whose model reference dangles,
is ignored (a warning) and the stage runs again. Only results the caller calls cacheable (ok or
skipped, never failed) are stored. Local runs only: `damoc run` switches it on (DAMOC_RESUME=1 for its task
processes); on a cluster KFP's own caching does this job and DAMOC_HOME is ephemeral.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from damoc.paths import damoc_home

T = TypeVar("T")
RESUME_ENV = "DAMOC_RESUME"          # "1": the steps consult and fill the cache (set by the local runner)
ROOT_ENV = "DAMOC_STAGE_CACHE_DIR"   # where entries live; default $DAMOC_HOME/stage-cache
CODE_ENV = "DAMOC_CODE_VERSION"      # the runner's code version, handed to its task processes (one run, one key)
COMPLETE = "COMPLETE"                # written last inside an entry: without it the entry is ignored
RESULT = "result.json"
MANIFEST = "manifest.json"           # {output name: {relative file: size}}: a damaged entry is not restored
_RELATIVE = "relative_to_artifact"   # in an entry's model reference: `source` is inside the output itself
_MEMO_MIN_BYTES = 1 << 20            # files this large are hashed once per (path, size, mtime_ns, inode)
_VOLATILE_RESULT_FILES = ("damoc_result.json",)  # per-candidate results: timings and reuse marks ignored
_MODEL_REF_FILE = "damoc_model_ref.json"          # a reference to a checkpoint: its content counts, not its name
_LIBRARIES = ("torch", "transformers", "peft", "sentence-transformers", "bert-score", "rouge-score")


def enabled(resume: bool | None = None) -> bool:
    """An explicit choice wins; otherwise the environment the local runner sets for its task processes."""
    return resume if resume is not None else os.environ.get(RESUME_ENV) == "1"


@contextlib.contextmanager
def resume_env(on: bool) -> Iterator[None]:
    """DAMOC_RESUME for this process and the task processes it starts (kfp.local inherits the environment)."""
    before = {name: os.environ.get(name) for name in (RESUME_ENV, CODE_ENV)}
    os.environ[RESUME_ENV] = "1" if on else "0"
    if on:  # every task keys its stage with the code the run started with (sources edited mid-run notwithstanding)
        os.environ[CODE_ENV] = code_version()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def cache_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or damoc_home() / "stage-cache")


def clear() -> int:
    """Remove every entry (and the hash memo); returns the number of entries removed."""
    root = cache_root()
    if not root.is_dir():
        return 0
    count = sum(1 for stage in root.iterdir() if stage.is_dir() and not stage.name.startswith(".")
                for entry in stage.iterdir() if (entry / COMPLETE).is_file())
    shutil.rmtree(root, ignore_errors=True)
    return count


# --------------------------------------------------------------------------- hashing

def code_version() -> str:
    """damoc's version + its .py sources + the result-relevant libraries' versions; inside a local run, the one
    the runner computed when it started (DAMOC_CODE_VERSION)."""
    return os.environ.get(CODE_ENV) or _source_version()


@functools.lru_cache(maxsize=1)
def _source_version() -> str:
    import importlib.metadata as md

    import damoc

    try:
        version = getattr(damoc, "__version__", None) or md.version("damoc")
    except md.PackageNotFoundError:
        version = "unknown"  # a source checkout that is not installed: the sources' hash still decides
    digest = hashlib.sha256(f"damoc {version}\n".encode())
    digest.update(sources_digest(("",)).encode())
    for path in _plugin_sources():  # registered methods from outside the package count as code too
        digest.update(f"plugin {path}\0".encode() + path.read_bytes() + b"\0")
    for name in _LIBRARIES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}=={version}\n".encode())
    return digest.hexdigest()


def sources_digest(parts: tuple[str, ...]) -> str:
    """sha256 of the damoc package's .py sources under `parts` (sub-packages or modules relative to the package;
    "" is all of it), each file's path and bytes."""
    import damoc

    package = Path(damoc.__file__).resolve().parent
    digest = hashlib.sha256()
    for part in parts:
        path = package / part
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def _plugin_sources() -> list[Path]:
    """The .py files of the plugin modules (damoc.registry: entry points and $DAMOC_PLUGINS), found unimported."""
    import importlib.metadata as md
    import importlib.util

    from damoc.registry import PLUGIN_ENV, PLUGIN_GROUP

    names = [ep.value.split(":")[0] for ep in md.entry_points(group=PLUGIN_GROUP)]
    names += [n.strip() for n in os.environ.get(PLUGIN_ENV, "").split(",") if n.strip()]
    files: list[Path] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None  # the registry reports an unimportable plugin; here it only cannot be hashed
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        origin = Path(spec.origin)
        files += sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    return files


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; large files via a persistent memo keyed by (path, size, mtime_ns, inode)."""
    st = path.stat()
    if st.st_size < _MEMO_MIN_BYTES:
        return sha256_file(path)
    memo_key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()
    memo = cache_root() / ".hash-memo" / memo_key[:2] / memo_key
    try:
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    except OSError:
        pass
    value = sha256_file(path)
    try:
        from damoc import atomic

        atomic.write_text(memo, value)
    except OSError:
        pass  # a read-only cache only costs the rehash next time
    return value


def _result_digest(path: Path) -> str:
    """A candidate's result so far, without what differs between a run and its resumed rerun (seconds, marks)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return file_digest(path)
    for stage in (doc.get("stages") or {}).values():
        if isinstance(stage, dict):
            stage.pop("seconds", None)
            if isinstance(stage.get("stats"), dict):
                stage["stats"] = {k: v for k, v in stage["stats"].items() if k not in ("reused",)}
    return hashlib.sha256(canonical(doc).encode()).hexdigest()


def fingerprint(path: str | Path) -> str:
    """Content hash of a file or directory (relative paths, sizes, bytes); a missing path hashes its name."""
    path = Path(path)
    if path.is_file():
        if path.name in _VOLATILE_RESULT_FILES:
            return _result_digest(path)
        if path.name == _MODEL_REF_FILE:
            return _model_ref_digest(path)
        return file_digest(path)
    if not path.is_dir():
        return "missing:" + str(path)
    digest = hashlib.sha256(b"dir\0")
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path).as_posix()
        size = "-" if child.name in _VOLATILE_RESULT_FILES + (_MODEL_REF_FILE,) else child.stat().st_size
        digest.update(f"{rel}\0{size}\0{fingerprint(child)}\n".encode())
    return digest.hexdigest()


def _model_ref_digest(path: Path) -> str:
    """A step that kept its input model refers to it: the referred checkpoint's content is what counts. A
    checkpoint inside the same artifact counts by its place in it, not by the run directory it lies in."""
    try:
        source = json.loads(path.read_text(encoding="utf-8"))["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return file_digest(path)
    inside = _inside(Path(str(source)), path.parent)
    if inside is not None:
        return hashlib.sha256(f"ref-inside\0{inside}\0{fingerprint(path.parent / inside)}".encode()).hexdigest()
    return hashlib.sha256(f"ref\0{source}\0{_local_content(source) or ''}".encode()).hexdigest()


def _inside(source: Path, artifact: Path) -> str | None:
    """`source` relative to `artifact` (posix) when it lies inside it, else None."""
    if not source.is_absolute():
        return None
    try:
        rel = source.resolve().relative_to(artifact.resolve()).as_posix()
    except (ValueError, OSError):
        return None
    return rel if rel not in ("", ".") else None


def _local_content(value: str) -> str | None:
    """The fingerprint of a string that names an existing local path (file:// or with a separator), else None.

    s3:// and hub names are keyed by their name only: they are not re-checked (see docs/reliability.md)."""
    if "\n" in value or len(value) > 4096 or "://" in value.removeprefix("file://"):
        return None
    local = value.removeprefix("file://")
    if os.sep not in local or not os.path.exists(local):
        return None
    return fingerprint(local)


def _with_contents(value: Any) -> Any:
    """Config parts with every local path they name replaced by (path, content hash)."""
    if isinstance(value, dict):
        return {str(k): _with_contents(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_contents(v) for v in value]
    if isinstance(value, str):
        content = _local_content(value)
        return value if content is None else {"path": value, "content": content}
    return value


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)


def key_document(stage: str, parts: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> dict[str, Any]:
    """What a stage's key covers (kept as key.json in its entry, to see why two runs did or did not match)."""
    return {"stage": stage, "code": code_version(), "config": _with_contents(dict(parts)),
            "inputs": {name: fingerprint(path) for name, path in sorted(inputs.items())}}


def _key(key_doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(key_doc).encode()).hexdigest()


def stage_key(stage: str, parts: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> str:
    return _key(key_document(stage, parts, inputs))


# --------------------------------------------------------------------------- entries

def _link_or_copy(src: str, dst: str) -> str:
    """Hard links (an entry costs no space while the run's copy lives); a copy across filesystems.

    Every writer in damoc replaces files by rename (damoc.atomic), so a linked file is never edited in place."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _place(src: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dest))


def _warn(text: str) -> None:
    print(f"warning: stage cache: {text}", file=sys.stderr)


@dataclass
class Cached(Generic[T]):
    value: T
    reused: bool
    key: str | None = None


def run_cached(stage: str, *, parts: Mapping[str, Any], inputs: Mapping[str, str | Path],
               outputs: Mapping[str, Path], run: Callable[[], T], dump: Callable[[T], str],
               load: Callable[[str], T], cacheable: Callable[[T], bool], resume: bool | None = None) -> Cached[T]:
    """Restore the stage's outputs and result from a complete entry with the same key, or run it and store them.

    The cache never fails a run: an unreadable or incomplete entry is ignored (the stage runs), and an entry that
    cannot be written is only warned about."""
    if not enabled(resume):
        return Cached(run(), False)
    try:
        key_doc = key_document(stage, parts, inputs)
        key = _key(key_doc)
    except OSError as err:
        _warn(f"{stage}: inputs could not be hashed ({err}); running it without the cache")
        return Cached(run(), False)
    entry = cache_root() / stage / key
    damaged = False
    if (entry / COMPLETE).is_file():
        try:
            value = load((entry / RESULT).read_text(encoding="utf-8"))
            _check_entry(entry, outputs, canonical(key_doc["config"]))
            for name, dest in outputs.items():
                _place(entry / "out" / name, Path(dest))
                _point_model_ref(Path(dest))
            return Cached(value, True, key)
        except Exception as err:  # noqa: BLE001 — a damaged entry means running the stage, nothing worse
            _warn(f"{stage}: entry {key[:12]} unusable ({type(err).__name__}: {err}); running the stage again")
            damaged = True  # the new outputs replace it
            for dest in map(Path, outputs.values()):  # no half-restored output under the stage's own
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest, ignore_errors=True)
                else:
                    dest.unlink(missing_ok=True)
    value = run()
    if cacheable(value):
        try:
            _store(entry, outputs, dump(value), key_doc, replace=damaged)
        except OSError as err:
            _warn(f"{stage}: could not store the outputs ({err})")
    return Cached(value, False, key)


def _files(root: Path) -> dict[str, int]:
    """{relative path: size} of every file under `root` (a file: itself, as "")."""
    if root.is_file():
        return {"": root.stat().st_size}
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _ref_source(ref: Path) -> dict[str, Any] | None:
    doc = json.loads(ref.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) and isinstance(doc.get("source"), str) else None


def _check_entry(entry: Path, outputs: Mapping[str, Path], named: str) -> None:
    """Raise when the entry cannot be restored whole: a file missing or of another size, a dangling reference.

    named: the stage's config as keyed; a reference to a path it names (the candidate's own checkpoint) is what
    the stage would write again, gone or not: only references to anything else can dangle."""
    manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    for name in outputs:
        src = entry / "out" / name
        if not src.exists():
            raise FileNotFoundError(f"{src} missing")
        if _files(src) != manifest.get(name):
            raise ValueError(f"out/{name}: its files differ from the manifest (deleted or truncated)")
        ref = src / _MODEL_REF_FILE
        doc = _ref_source(ref) if src.is_dir() and ref.is_file() else None
        if doc is None:
            continue
        source = doc["source"]
        if doc.get(_RELATIVE):
            if not (src / source).exists():
                raise FileNotFoundError(f"out/{name}: its model reference {source!r} is not in the entry")
        elif (os.path.isabs(source.removeprefix("file://")) and not os.path.exists(source.removeprefix("file://"))
              and json.dumps(source) not in named):
            raise FileNotFoundError(f"out/{name}: its model reference points to {source}, which no longer exists")


def _relative_model_ref(src: Path, stored: Path) -> None:
    """In the entry, a reference to a checkpoint inside the output is kept relative to the output."""
    ref = stored / _MODEL_REF_FILE
    if not (stored.is_dir() and ref.is_file()):
        return
    doc = _ref_source(ref)
    inside = _inside(Path(doc["source"]), src) if doc else None
    if inside is not None:
        ref.unlink()  # a hard link of the run's file: write the entry's own
        ref.write_text(json.dumps({"source": inside, _RELATIVE: True}, indent=2), encoding="utf-8")


def _point_model_ref(dest: Path) -> None:
    """A restored output refers to its own copy of the checkpoint (an absolute path, as the steps write it)."""
    ref = dest / _MODEL_REF_FILE
    if not (dest.is_dir() and ref.is_file()):
        return
    doc = _ref_source(ref)
    if doc and doc.get(_RELATIVE):
        from damoc import atomic

        atomic.write_text(ref, json.dumps({"source": str(dest.resolve() / doc["source"])}, indent=2))


def _store(entry: Path, outputs: Mapping[str, Path], result_json: str, key_doc: dict[str, Any], *,
           replace: bool = False) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "out").mkdir(parents=True)
        for name, src in outputs.items():
            if not Path(src).exists():
                return  # nothing complete to keep
            _place(Path(src), tmp / "out" / name)
            _relative_model_ref(Path(src), tmp / "out" / name)
        manifest = {name: _files(tmp / "out" / name) for name in outputs}
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
        (tmp / RESULT).write_text(result_json, encoding="utf-8")
        (tmp / "key.json").write_text(json.dumps(key_doc, indent=1, sort_keys=True, default=str), encoding="utf-8")
        (tmp / COMPLETE).write_text(entry.name, encoding="utf-8")  # last: the entry is whole from here on
        if (entry / COMPLETE).is_file() and not replace:
            return  # a concurrent run stored the same key first
        from damoc import atomic

        atomic.replace_path(tmp, entry)  # also replaces an incomplete leftover under this key
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
