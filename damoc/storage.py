"""Read and write run artefacts that live either on local disk or at `s3://bucket/key`.

Every path in the run config may be local or S3. S3 goes through the `minio` client, whose
endpoint and credentials come only from the environment (never from the config or pipeline
parameters, so they never end up in KFP run metadata):

- endpoint: DAMOC_S3_ENDPOINT, else AWS_ENDPOINT_URL, else MINIO_ENDPOINT; `host:port` or
  `http(s)://host:port`. The scheme decides TLS (no scheme: TLS on); DAMOC_S3_SECURE overrides.
- credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else MINIO_ACCESS_KEY / MINIO_SECRET_KEY
  (optional AWS_SESSION_TOKEN); optional AWS_REGION.

Faults: every request gets a timeout and is retried with exponential back-off on connection errors,
timeouts and 429/5xx answers (settings from the environment, RetrySettings: DAMOC_S3_RETRIES,
DAMOC_S3_BACKOFF_S, DAMOC_S3_BACKOFF_MAX_S, DAMOC_S3_TIMEOUT_S); a 403 or 404 is final at once. Nothing
half-written is taken as complete: a downloaded file appears under its name only when complete, a
downloaded directory is renamed into place when complete, an uploaded directory carries a marker object
(INCOMPLETE_MARKER) from its first file to its last, and readers refuse a prefix that has it.

All failures raise StorageError; messages name the bucket/key but never the credentials.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

import urllib3
from damoc import atomic
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
ENDPOINT_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
ACCESS_KEY_VARS = ("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY")
SECRET_KEY_VARS = ("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY")
_SECRET_VARS = (*ACCESS_KEY_VARS, *SECRET_KEY_VARS, "AWS_SESSION_TOKEN")
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "ResourceNotFound"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Answers worth retrying: throttling (429, S3's 503 SlowDown) and server-side failures.
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Written first and deleted last when a directory is uploaded: a prefix holding it is not complete.
INCOMPLETE_MARKER = ".damoc-upload-incomplete"
_BUCKET_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


# scheme://userinfo@ — the userinfo runs to the last "@" before the host ends (raw or %-encoded passwords alike)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]*@")


def redact_uri(text: str) -> str:
    """`text` with the userinfo (user:password@) of every URI in it removed: what every message showing an
    endpoint or URI passes through."""
    return _USERINFO.sub(r"\1", str(text))


class StorageError(Exception):
    """A path that cannot be read or written; the message names the URI and what to fix (never a password)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(redact_uri(str(message)))


# --------------------------------------------------------------------------- URIs

def is_s3(uri: str) -> bool:
    return str(uri)[:len(S3_SCHEME)].lower() == S3_SCHEME


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key"); the key may be empty (whole bucket)."""
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise StorageError(f"malformed S3 URI {uri!r}: no bucket; expected s3://bucket/key")
    if not 3 <= len(bucket) <= 63 or not set(bucket) <= _BUCKET_CHARS:
        raise StorageError(f"malformed S3 URI {uri!r}: invalid bucket name {bucket!r} "
                           "(3-63 letters, digits, '.', '-')")
    return bucket, key


def _object_key(uri: str) -> tuple[str, str]:
    """Like split_s3, but the URI must name one object (non-empty key, no trailing '/')."""
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{uri}: expected an object key (s3://bucket/path/to/file), got a prefix")
    return bucket, key


def _dir_prefix(key: str) -> str:
    # "ckpt" must list ckpt/..., not also ckpt2/...
    return key if not key or key.endswith("/") else key + "/"


def _local_path(uri: str | Path) -> Path:
    text = str(uri)
    return Path(text[len(FILE_SCHEME):] if text.startswith(FILE_SCHEME) else text)


# --------------------------------------------------------------------------- client

@dataclass(frozen=True)
class S3Settings:
    """Connection settings read from the environment; the secrets are kept out of repr()."""

    endpoint: str
    secure: bool
    region: str | None
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _parse_endpoint(raw: str) -> tuple[str, bool]:
    """`host:port` or `http(s)://host:port[/]` -> (host:port, secure). Credentials are refused first, and
    no message echoes them."""
    if "@" in raw:  # user:password@ (or an encoded one): say so without echoing the value
        raise StorageError(f"S3 endpoint {redact_uri(raw).split('@')[-1]!r} must not contain credentials "
                           "(user:password@); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
    if "://" not in raw:
        host, secure = raw.rstrip("/"), True
    else:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https"):
            raise StorageError(f"S3 endpoint {raw!r}: scheme must be http or https")
        if parts.path not in ("", "/") or parts.query:
            raise StorageError(f"S3 endpoint {raw!r}: must be host[:port] without a path")
        host, secure = parts.netloc, parts.scheme == "https"
    if "@" in host:  # don't echo it: it may hold user:password
        raise StorageError("S3 endpoint must not contain credentials; set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY instead")
    if not host or "/" in host:
        raise StorageError(f"S3 endpoint {raw!r}: expected host:port or http(s)://host:port")
    return host, secure


def _secure_override(secure: bool) -> bool:
    raw = os.environ.get("DAMOC_S3_SECURE", "").strip().lower()
    if not raw:
        return secure
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise StorageError(f"DAMOC_S3_SECURE={raw!r}: use true or false")


def s3_settings_from_env() -> S3Settings:
    """Read endpoint and credentials from the environment, or say exactly which variables to set."""
    endpoint = _first_env(ENDPOINT_VARS)
    access_key = _first_env(ACCESS_KEY_VARS)
    secret_key = _first_env(SECRET_KEY_VARS)
    missing = [" or ".join(names) for names, value in
               ((ENDPOINT_VARS, endpoint), (ACCESS_KEY_VARS, access_key), (SECRET_KEY_VARS, secret_key))
               if not value]
    if missing:
        example = "" if endpoint else " (e.g. DAMOC_S3_ENDPOINT=http://minio-service.kubeflow:9000)"
        raise StorageError("s3:// paths need the S3 endpoint and credentials in the environment; "
                           f"set {'; '.join(missing)}{example}")
    host, secure = _parse_endpoint(endpoint)
    return S3Settings(endpoint=host, secure=_secure_override(secure),
                      region=os.environ.get("AWS_REGION") or None, access_key=access_key,
                      secret_key=secret_key, session_token=os.environ.get("AWS_SESSION_TOKEN") or None)


@dataclass(frozen=True)
class RetrySettings:
    """How hard to try the object store (deployment settings, so environment variables, not run config).

    retries: extra attempts after the first (DAMOC_S3_RETRIES, default 5); backoff_s: the back-off base
    (DAMOC_S3_BACKOFF_S, default 0.5): the k-th retry waits backoff_s * 2**(k-1) seconds (the first retry
    none), at most backoff_max_s (DAMOC_S3_BACKOFF_MAX_S, default 8); timeout_s: connect and read timeout
    of each request (DAMOC_S3_TIMEOUT_S, default 60). Defaults: a dead endpoint is reported after ~15 s of
    back-off (plus up to 6 timeouts if it does not even refuse connections).
    """

    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 60.0

    def sleeps(self) -> list[float]:
        """The waits before each retry (what urllib3's Retry does with these settings)."""
        return [0.0 if k == 1 else min(self.backoff_max_s, self.backoff_s * 2 ** (k - 1))
                for k in range(1, self.retries + 1)]


_RETRY_VARS = {"retries": "DAMOC_S3_RETRIES", "backoff_s": "DAMOC_S3_BACKOFF_S",
               "backoff_max_s": "DAMOC_S3_BACKOFF_MAX_S", "timeout_s": "DAMOC_S3_TIMEOUT_S"}


def retry_settings_from_env() -> RetrySettings:
    values: dict[str, float | int] = {}
    for name, var in _RETRY_VARS.items():
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        kind = int if name == "retries" else float
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if not (value >= 0 if kind is int else 0 < value < float("inf")):
            need = "a whole number >= 0" if kind is int else "a number of seconds > 0"
            raise StorageError(f"{var}={raw!r}: expected {need}")
        values[name] = value
    return RetrySettings(**values)


def http_client(retry: RetrySettings) -> urllib3.PoolManager:
    """minio's default pool (CA bundle, 10 connections) with our timeouts and retry policy."""
    import certifi

    return urllib3.PoolManager(
        timeout=Timeout(connect=retry.timeout_s, read=retry.timeout_s), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=retry.retries, connect=retry.retries, read=retry.retries, status=retry.retries,
                      other=0, backoff_factor=retry.backoff_s, backoff_max=retry.backoff_max_s,
                      status_forcelist=RETRY_STATUSES,
                      # every S3 call made here is idempotent (PUT/DELETE of a whole key), POST included
                      allowed_methods=None,
                      # a server's Retry-After could stall a task for hours: our bounded back-off instead
                      respect_retry_after_header=False, raise_on_status=True))


def client_from_env() -> Minio:
    settings = s3_settings_from_env()
    try:
        return Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
                     session_token=settings.session_token, secure=settings.secure, region=settings.region,
                     http_client=http_client(retry_settings_from_env()))
    except ValueError as err:
        raise StorageError(f"S3 endpoint {settings.endpoint!r}: {_scrub(str(err))}") from None


# --------------------------------------------------------------------------- error handling

def _scrub(text: str) -> str:
    """Mask any credential value that a library may have put into an error text."""
    for name in _SECRET_VARS:
        value = os.environ.get(name, "").strip()
        if len(value) >= 4:
            text = text.replace(value, "***")
    return redact_uri(text)


def _s3_error_message(action: str, uri: str, err: S3Error) -> str:
    code = err.code or "error"
    if code == "NoSuchBucket":
        hint = f"bucket '{err.bucket_name or split_s3(uri)[0]}' does not exist"
    elif code in _NOT_FOUND_CODES:
        hint = "no such object"
    elif code in _AUTH_CODES:
        hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
    else:
        hint = err.message or ""
    return f"{action} {uri} failed: {code}: {hint}"


@contextmanager
def _wrapped(action: str, uri: str) -> Iterator[None]:
    """Turn minio, HTTP and OS failures into StorageError naming the URI (never the secrets)."""
    try:
        yield
    except StorageError:
        raise
    except S3Error as err:
        raise StorageError(_scrub(_s3_error_message(action, uri, err))) from None
    except urllib3.exceptions.HTTPError as err:
        raise StorageError(_scrub(_unreachable_message(action, uri, err))) from None
    except (MinioException, OSError, ValueError) as err:
        raise StorageError(_scrub(f"{action} {uri} failed: {type(err).__name__}: {err}")) from None


def _endpoint_url() -> str:
    try:
        settings = s3_settings_from_env()
    except StorageError:
        return "(endpoint not set)"
    return f"{'https' if settings.secure else 'http'}://{settings.endpoint}"


def _reason(err: BaseException) -> str:
    """A short cause: 'timed out', 'connection refused', 'too many 503 error responses'."""
    reason = getattr(err, "reason", None) or err
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # before TimeoutError: it subclasses it
        return f"connection failed ({str(reason).rsplit(': ', 1)[-1]})"
    if isinstance(reason, urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.ResponseError):
        return str(reason)
    return f"{type(reason).__name__}: {reason}"


def _unreachable_message(action: str, uri: str, err: urllib3.exceptions.HTTPError) -> str:
    try:
        retry = retry_settings_from_env()
        tries = f"{retry.retries + 1} attempts, {retry.timeout_s:g} s timeout each"
    except StorageError:
        tries = "retries"
    return (f"{action} {uri} failed: the S3 endpoint {_endpoint_url()} did not answer ({_reason(err)}; "
            f"{tries}); check that it is up, DAMOC_S3_ENDPOINT and DAMOC_S3_SECURE "
            "(retries: DAMOC_S3_RETRIES, DAMOC_S3_TIMEOUT_S)")


def _is_not_found(err: S3Error) -> bool:
    return err.code in _NOT_FOUND_CODES


# --------------------------------------------------------------------------- local helpers

def _copy_file(src: Path, dst: Path) -> None:
    # Indirection so tests can inject a failure in the middle of a directory copy.
    shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _stage_copy(src: Path, dest: Path) -> Path:
    """Copy `src` to a temp sibling of `dest` (same filesystem, so the final rename is atomic)."""
    staged = atomic.sibling(dest, "tmp")
    try:
        if src.is_dir():
            shutil.copytree(src, staged, copy_function=_copy_file)
        else:
            _copy_file(src, staged)
    except BaseException:
        _remove(staged)
        raise
    return staged


def _safe_join(root: Path, relative: str, uri: str) -> Path:
    """root/relative, refusing object keys that would land outside root ('..', absolute)."""
    parts = PurePosixPath(relative).parts
    if not relative or ".." in parts or PurePosixPath(relative).is_absolute():
        raise StorageError(f"{uri}: refusing object key {relative!r}: it would escape {root}")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise StorageError(f"{uri}: refusing object key {relative!r}: it would escape {root}")
    return target


# --------------------------------------------------------------------------- S3 transfers

def _fetch_object(client: Minio, bucket: str, key: str, dest: Path) -> None:
    """Stream one object into a temp sibling of dest, renamed to dest only when complete.

    The request itself is retried by the HTTP client; a body cut off mid-way (connection dropped, read
    timeout) is fetched again from the start, with the same back-off. The temp file never outlives the call.
    """
    uri = f"s3://{bucket}/{key}"
    retry = retry_settings_from_env()
    with _wrapped("download", uri):
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.sibling(dest, "download")
    try:
        for attempt in range(retry.retries + 1):
            with _wrapped("download", uri):
                response = client.get_object(bucket, key)
            try:
                with tmp.open("wb") as fh:
                    for chunk in response.stream(1 << 20):
                        fh.write(chunk)
                break
            except urllib3.exceptions.HTTPError as err:  # the body stopped short (length is enforced)
                if attempt == retry.retries:
                    raise StorageError(_scrub(_unreachable_message("download", uri, err))) from None
                time.sleep(retry.sleeps()[attempt])
            finally:
                response.close()
                response.release_conn()
        with _wrapped("download", uri):
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_file(uri: str, dest: Path) -> Path:
    bucket, key = _object_key(uri)
    dest = Path(dest)
    _fetch_object(client_from_env(), bucket, key, dest)
    return dest


def upload_file(src: Path, uri: str) -> None:
    bucket, key = _object_key(uri)
    src = Path(src)
    if not src.is_file():
        raise StorageError(f"upload to {uri} failed: {src} is not a file")
    with _wrapped("upload", uri):
        client_from_env().fput_object(bucket, key, str(src))  # multipart above 5 MiB parts


def _list_keys(client: Minio, bucket: str, prefix: str, uri: str) -> list[str]:
    with _wrapped("list", uri):
        # Keys ending in '/' are "folder" markers written by some tools, not files.
        return [obj.object_name for obj in client.list_objects(bucket, prefix=prefix, recursive=True)
                if obj.object_name and not obj.object_name.endswith("/")]


def listing_fingerprint(uri_prefix: str) -> str:
    """A hash of every object's key, ETag and size under the prefix (one LIST request): it changes when any
    object is added, removed or rewritten, so a cached copy can tell it is stale without downloading."""
    bucket, key = split_s3(uri_prefix)
    prefix = _dir_prefix(key)
    client = client_from_env()
    with _wrapped("list", uri_prefix):
        entries = sorted((obj.object_name[len(prefix):], obj.etag or "", obj.size or 0)
                         for obj in client.list_objects(bucket, prefix=prefix, recursive=True)
                         if obj.object_name and not obj.object_name.endswith("/"))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def download_dir(uri_prefix: str, dest_dir: Path) -> Path:
    """Download every object under the prefix into dest_dir, keeping relative paths."""
    bucket, key = split_s3(uri_prefix)
    prefix, dest_dir = _dir_prefix(key), Path(dest_dir)
    client = client_from_env()
    keys = _list_keys(client, bucket, prefix, uri_prefix)
    if not keys:
        raise StorageError(f"{uri_prefix}: no objects under bucket '{bucket}' prefix '{prefix}'")
    if prefix + INCOMPLETE_MARKER in keys:
        raise StorageError(f"{uri_prefix}: incomplete: an upload to it did not finish ({INCOMPLETE_MARKER} is "
                           "present); rerun the step that writes it")
    # Validate every key before writing anything, so a hostile listing leaves no partial download.
    targets = [(k, _safe_join(dest_dir, k[len(prefix):], uri_prefix)) for k in keys]
    for object_key, target in targets:
        _fetch_object(client, bucket, object_key, target)
    return dest_dir


def _local_files(src_dir: Path) -> list[tuple[Path, str]]:
    return [(path, path.relative_to(src_dir).as_posix())
            for path in sorted(src_dir.rglob("*")) if path.is_file()]


def upload_dir(src_dir: Path, uri_prefix: str) -> int:
    """Upload every file under src_dir to the prefix, keeping relative paths; returns the count."""
    keys = _upload_dir_keys(Path(src_dir), uri_prefix)
    _clear_marker(uri_prefix)
    return len(keys)


def _clear_marker(uri_prefix: str) -> None:
    bucket, key = split_s3(uri_prefix)
    with _wrapped("finish upload to", uri_prefix):
        client_from_env().remove_object(bucket, _dir_prefix(key) + INCOMPLETE_MARKER)


def _upload_dir_keys(src_dir: Path, uri_prefix: str) -> set[str]:
    bucket, key = split_s3(uri_prefix)
    if not src_dir.is_dir():
        raise StorageError(f"upload to {uri_prefix} failed: {src_dir} is not a directory")
    prefix, client = _dir_prefix(key), client_from_env()
    # The marker goes first: until the caller deletes it (after the last file), readers refuse the prefix.
    with _wrapped("upload", f"{S3_SCHEME}{bucket}/{prefix}{INCOMPLETE_MARKER}"):
        client.put_object(bucket, prefix + INCOMPLETE_MARKER, BytesIO(b""), 0)
    uploaded: set[str] = set()
    for path, relative in _local_files(src_dir):
        object_key = prefix + relative
        with _wrapped("upload", f"s3://{bucket}/{object_key}"):
            client.fput_object(bucket, object_key, str(path))
        uploaded.add(object_key)
    return uploaded


def _remove_stale(uri_prefix: str, keep: set[str]) -> None:
    """Delete objects under the prefix that the latest upload did not write (e.g. old shards)."""
    from minio.deleteobjects import DeleteObject

    bucket, key = split_s3(uri_prefix)
    client = client_from_env()
    marker = _dir_prefix(key) + INCOMPLETE_MARKER
    stale = [k for k in _list_keys(client, bucket, _dir_prefix(key), uri_prefix) if k not in keep and k != marker]
    if not stale:
        return
    with _wrapped("delete stale objects under", uri_prefix):
        errors = list(client.remove_objects(bucket, [DeleteObject(k) for k in stale]))
    if errors:
        raise StorageError(f"delete stale objects under {uri_prefix} failed for "
                           f"{[e.name for e in errors][:5]}")


# --------------------------------------------------------------------------- high level

def _has_object(client: Minio, bucket: str, key: str) -> bool:
    try:
        client.stat_object(bucket, key)
        return True
    except S3Error as err:
        if _is_not_found(err):
            return False
        raise


def _s3_kind(uri: str) -> str | None:
    """'file' if an object has exactly this key, 'dir' if objects live under it as a prefix, else None."""
    bucket, key = split_s3(uri)
    client = client_from_env()
    with _wrapped("stat", uri):
        if key and not key.endswith("/") and _has_object(client, bucket, key):
            return "file"
        first = next(iter(client.list_objects(bucket, prefix=_dir_prefix(key), recursive=True)), None)
    return "dir" if first is not None else None


def endpoint_slug() -> str:
    """The configured S3 endpoint as a directory name: caches of two object stores never mix."""
    settings = s3_settings_from_env()
    text = f"{'https' if settings.secure else 'http'}_{settings.endpoint}"
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def s3_cache_dir() -> Path:
    from damoc.paths import damoc_home

    return damoc_home() / "s3-cache" / endpoint_slug()


def localize(uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local path for `uri`: local paths as they are; S3 objects/prefixes downloaded to cache_dir
    (default: $DAMOC_HOME/s3-cache/ENDPOINT; the caller owns what it puts there).

    An S3 URI is a file if an object has exactly that key, otherwise a directory prefix (checkpoints).
    """
    if not is_s3(uri):
        return _local_path(uri)
    bucket, key = split_s3(uri)
    kind = _s3_kind(uri)
    if kind is None:
        raise StorageError(f"{uri}: nothing found (no object with key '{key}' and no objects "
                           f"under that prefix in bucket '{bucket}')")
    # No cache_dir: a cache under $DAMOC_HOME, refreshed on every call (never a temp folder left behind).
    root = Path(cache_dir) if cache_dir is not None else s3_cache_dir()
    relative = f"{bucket}/{key.rstrip('/')}".rstrip("/")
    target = _safe_join(root, relative, uri)
    if kind == "file":
        return download_file(uri, target)
    return download_dir_whole(uri, target)


def download_dir_whole(uri_prefix: str, target: Path) -> Path:
    """download_dir beside `target`, then swapped in by one rename: a stale earlier copy never mixes with the
    new files, and a failed download leaves the earlier copy (or nothing) in place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = atomic.sibling(target, "tmp")
    try:
        download_dir(uri_prefix, staged)
        with _wrapped("localize", uri_prefix):
            atomic.replace_path(staged, target)
    finally:
        _remove(staged)
    return target


def publish(local: Path, uri: str) -> str:
    """Put a local file or directory at `uri` (S3 upload, or local copy replacing what was there)."""
    local = Path(local)
    if not local.exists():
        raise StorageError(f"publish to {uri} failed: {local} does not exist")
    if is_s3(uri):
        if local.is_dir():
            # Upload first, then drop objects the new version no longer has, then the marker: readers never
            # see a gap, and never take a half-uploaded directory as complete.
            _remove_stale(uri, _upload_dir_keys(local, uri))
            _clear_marker(uri)
        else:
            upload_file(local, uri)
        return uri
    _publish_local(local, _local_path(uri), uri)
    return uri


def _publish_local(src: Path, dest: Path, uri: str) -> None:
    if dest.exists() and dest.resolve() == src.resolve():
        return  # already written in place
    if src.is_dir() and dest.resolve().is_relative_to(src.resolve()):
        raise StorageError(f"publish to {uri} failed: destination is inside the source {src}")
    with _wrapped("publish to", uri):
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = _stage_copy(src, dest)
        try:
            atomic.replace_path(staged, dest)
        finally:
            _remove(staged)


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return _local_path(uri).exists()
    try:
        kind = _s3_kind(uri)
    except StorageError as err:
        if "NoSuchBucket" in str(err):
            return False
        raise
    return kind is not None


def read_text(uri: str) -> str:
    if not is_s3(uri):
        with _wrapped("read", uri):
            return _local_path(uri).read_text(encoding="utf-8")
    bucket, key = _object_key(uri)
    with _wrapped("read", uri):
        response = client_from_env().get_object(bucket, key)
        try:
            return response.read().decode("utf-8")
        finally:
            response.close()
            response.release_conn()


class _ChunkReader(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks (an HTTP response body, read as it arrives)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


@contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    """A binary stream of a local file or an S3 object (streamed from the response, not copied to disk).

    A connection dropped mid-stream raises StorageError naming the URI; other errors raised by the reader
    (e.g. the caller's own parse errors) pass through unchanged.
    """
    if not is_s3(uri):
        with _wrapped("read", uri):
            fh = _local_path(uri).open("rb")
        with fh:
            yield fh
        return
    bucket, key = _object_key(uri)
    with _wrapped("read", uri):
        response = client_from_env().get_object(bucket, key)
    try:
        yield io.BufferedReader(_ChunkReader(response.stream(1 << 16)), buffer_size=1 << 16)
    except urllib3.exceptions.HTTPError as err:
        raise StorageError(_scrub(f"read {uri} failed mid-stream: {type(err).__name__}: {err}; nothing was "
                                  "kept, retry when the S3 endpoint is reachable")) from None
    finally:
        response.close()
        response.release_conn()


def write_text(uri: str, text: str) -> None:
    data = text.encode("utf-8")
    if not is_s3(uri):
        with _wrapped("write", uri):
            atomic.write_bytes(_local_path(uri), data)
        return
    bucket, key = _object_key(uri)
    with _wrapped("write", uri):
        client_from_env().put_object(bucket, key, BytesIO(data), len(data),
                                     content_type="text/plain; charset=utf-8")
