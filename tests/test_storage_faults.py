"""Object-store faults (issue 12): a flaky HTTP proxy in front of moto drops, delays, cuts short or answers
503 to the first K requests; a fake server answers 403; a closed port stands for a store that is down.

Back-off and timeouts are shrunk through the environment (DAMOC_S3_BACKOFF_S, DAMOC_S3_TIMEOUT_S), so every
test takes well under 10 s.
"""
from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from damoc import storage
from damoc.cli import main
from damoc.storage import RetrySettings, StorageError

ACCESS_KEY = "AKIADAMOCFAULTKEY001"
SECRET_KEY = "damoc-fault-s3cr3t-never-print-0123456789"
ENV_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "DAMOC_S3_SECURE", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
            "DAMOC_S3_RETRIES", "DAMOC_S3_BACKOFF_S", "DAMOC_S3_BACKOFF_MAX_S", "DAMOC_S3_TIMEOUT_S")
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlakyProxy:
    """Forwards HTTP requests to `upstream`; the first `count` requests matching `methods` get `fault`:
    'drop' (connection closed, no answer), 'delay' (answered after `delay` s), '503' (S3 SlowDown),
    'truncate' (a GET's body cut off half-way), '403' (AccessDenied, no upstream needed); `set(match=...)`
    limits faults to paths containing it."""

    def __init__(self, upstream_port: int | None, fault: str = "", count: int = 0, delay: float = 0.0,
                 methods: tuple[str, ...] = ("GET", "PUT", "POST", "DELETE", "HEAD")) -> None:
        self.upstream_port, self.fault, self.count, self.delay, self.methods = (upstream_port, fault, count,
                                                                                delay, methods)
        self.match = ""  # only requests whose path contains this
        self.requests: list[tuple[float, str, str, str]] = []  # (time, method, path, what happened)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    faulted = sum(1 for r in proxy.requests if r[3] != "ok")
                    hit = bool(proxy.fault) and self.command in proxy.methods and proxy.match in self.path and (
                        proxy.fault == "403" or faulted < proxy.count)
                    proxy.requests.append((time.monotonic(), self.command, self.path,
                                           proxy.fault if hit else "ok"))
                if hit and proxy.fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if hit and proxy.fault in ("503", "403"):
                    status, payload = (503, SLOWDOWN) if proxy.fault == "503" else (403, DENIED)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload if self.command != "HEAD" else b"")
                    return
                if hit and proxy.fault == "delay":
                    time.sleep(proxy.delay)
                self._forward(body, truncate=hit and proxy.fault == "truncate")

            def _forward(self, body: bytes, truncate: bool) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                conn.close()
                try:
                    if self.command != "HEAD":
                        self.wfile.write(payload[:len(payload) // 2] if truncate else payload)
                    if truncate:
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:  # the client gave up first (a timeout under test)
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, fault: str, count: int = 0, delay: float = 0.0, methods: tuple[str, ...] | None = None,
            match: str = "") -> None:
        with self._lock:
            self.fault, self.count, self.delay, self.match, self.requests = fault, count, delay, match, []
            if methods:
                self.methods = methods

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def moto_port(start_moto) -> Iterator[int]:
    with start_moto() as port:
        yield port


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # no bucket-location lookup: requests are only ours
    monkeypatch.setenv("DAMOC_S3_RETRIES", "3")
    monkeypatch.setenv("DAMOC_S3_BACKOFF_S", "0.05")
    monkeypatch.setenv("DAMOC_S3_TIMEOUT_S", "2")
    return monkeypatch


@pytest.fixture
def proxy(env: pytest.MonkeyPatch, moto_port: int) -> Iterator[tuple[FlakyProxy, str]]:
    """A proxy (no faults yet) in front of moto, the environment pointing at it, and a fresh bucket."""
    with FlakyProxy(moto_port) as flaky:
        env.setenv("DAMOC_S3_ENDPOINT", f"http://127.0.0.1:{flaky.port}")
        bucket = f"faults-{uuid.uuid4().hex[:10]}"
        storage.client_from_env().make_bucket(bucket)
        yield flaky, bucket


# --------------------------------------------------------------------------- settings

def test_retry_settings_defaults_parsing_and_bad_values(env):
    for name in ("DAMOC_S3_RETRIES", "DAMOC_S3_BACKOFF_S", "DAMOC_S3_TIMEOUT_S"):
        env.delenv(name)
    assert storage.retry_settings_from_env() == RetrySettings(retries=5, backoff_s=0.5, backoff_max_s=8.0,
                                                              timeout_s=60.0)
    assert RetrySettings().sleeps() == [0.0, 1.0, 2.0, 4.0, 8.0]  # ~15 s before a dead store is reported
    assert RetrySettings(retries=6, backoff_s=1.0, backoff_max_s=5.0).sleeps() == [0.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    env.setenv("DAMOC_S3_RETRIES", "0")
    env.setenv("DAMOC_S3_TIMEOUT_S", "2.5")
    assert storage.retry_settings_from_env() == RetrySettings(retries=0, timeout_s=2.5)
    for var, raw in (("DAMOC_S3_RETRIES", "-1"), ("DAMOC_S3_RETRIES", "two"), ("DAMOC_S3_TIMEOUT_S", "0"),
                     ("DAMOC_S3_BACKOFF_S", "inf")):
        env.setenv(var, raw)
        with pytest.raises(StorageError, match=f"^{var}='{raw}': expected"):
            storage.retry_settings_from_env()
        env.delenv(var)


# --------------------------------------------------------------------------- transient faults: retried

def test_503s_are_retried_with_exponential_backoff(proxy):
    flaky, bucket = proxy
    flaky.set("503", count=3)
    storage.write_text(f"s3://{bucket}/a.txt", "hello")
    assert [r[3] for r in flaky.requests] == ["503", "503", "503", "ok"]
    gaps = [b[0] - a[0] for a, b in zip(flaky.requests, flaky.requests[1:])]
    # sleeps 0, 0.1, 0.2 (backoff 0.05 * 2**(k-1), the first retry at once): each wait doubles
    assert gaps[0] < 0.09 and 0.09 <= gaps[1] < 0.5 and 0.19 <= gaps[2] < 0.6
    flaky.set("503", count=2, methods=("GET",))
    assert storage.read_text(f"s3://{bucket}/a.txt") == "hello"


def test_dropped_connections_are_retried(proxy, tmp_path):
    flaky, bucket = proxy
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 64)
    flaky.set("drop", count=2)
    storage.upload_file(src, f"s3://{bucket}/blob.bin")
    assert [r[3] for r in flaky.requests] == ["drop", "drop", "ok"]
    flaky.set("drop", count=2, methods=("GET",))
    out = storage.download_file(f"s3://{bucket}/blob.bin", tmp_path / "got" / "blob.bin")
    assert out.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["blob.bin"]  # no temp file left


def test_a_slow_answer_times_out_and_is_retried(proxy, env):
    flaky, bucket = proxy
    storage.write_text(f"s3://{bucket}/a.txt", "slow")
    env.setenv("DAMOC_S3_TIMEOUT_S", "0.3")
    flaky.set("delay", count=1, delay=1.0, methods=("GET",))
    start = time.monotonic()
    assert storage.read_text(f"s3://{bucket}/a.txt") == "slow"
    assert time.monotonic() - start < 1.0  # the retry did not wait for the slow answer
    assert [r[3] for r in flaky.requests] == ["delay", "ok"]


def test_a_body_cut_off_midway_is_fetched_again_and_never_left_half_written(proxy, tmp_path):
    flaky, bucket = proxy
    data = bytes(range(256)) * 400
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "w.bin").write_bytes(data)
    storage.upload_file(tmp_path / "ckpt" / "w.bin", f"s3://{bucket}/ckpt/w.bin")
    flaky.set("truncate", count=1, methods=("GET",), match="/ckpt/w.bin")
    target = storage.localize(f"s3://{bucket}/ckpt", tmp_path / "cache")
    assert (target / "w.bin").read_bytes() == data
    assert [r[3] for r in flaky.requests if r[1] == "GET" and "w.bin" in r[2]] == ["truncate", "ok"]
    # cut off every time: a clear error, and neither the file nor a temp file is left behind
    flaky.set("truncate", count=100, methods=("GET",), match="/ckpt/w.bin")
    dest = tmp_path / "one" / "w.bin"
    with pytest.raises(StorageError) as err:
        storage.download_file(f"s3://{bucket}/ckpt/w.bin", dest)
    assert str(err.value).startswith(f"download s3://{bucket}/ckpt/w.bin failed: the S3 endpoint "
                                     f"http://127.0.0.1:{flaky.port} did not answer")
    assert list(dest.parent.iterdir()) == []


# --------------------------------------------------------------------------- persistent faults: one clear error

def test_store_down_retries_then_one_clear_error_in_bounded_time(env, tmp_path):
    port = _free_port()  # nothing listens there
    env.setenv("DAMOC_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        storage.read_text("s3://some-bucket/data/train.jsonl")
    elapsed = time.monotonic() - start
    text = str(err.value)
    assert text.startswith(f"read s3://some-bucket/data/train.jsonl failed: the S3 endpoint "
                           f"http://127.0.0.1:{port} did not answer (connection failed (")
    assert "4 attempts, 2 s timeout each" in text and "DAMOC_S3_RETRIES" in text and "\n" not in text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    assert 0.3 <= elapsed < 3.0  # back-off 0 + 0.1 + 0.2 s: retried, and bounded


def test_persistent_503_gives_one_clear_error_after_the_retries(proxy):
    flaky, bucket = proxy
    flaky.set("503", count=100)
    with pytest.raises(StorageError) as err:
        storage.write_text(f"s3://{bucket}/b.txt", "x")
    assert str(err.value).startswith(f"write s3://{bucket}/b.txt failed: the S3 endpoint "
                                     f"http://127.0.0.1:{flaky.port} did not answer (too many 503 error responses")
    assert len(flaky.requests) == 4  # 1 + DAMOC_S3_RETRIES


def test_wrong_credentials_fail_at_once_with_one_line_and_exit_2(env, tmp_path, capsys):
    with FlakyProxy(None, fault="403") as denied:
        env.setenv("DAMOC_S3_ENDPOINT", f"http://127.0.0.1:{denied.port}")
        with pytest.raises(StorageError) as err:
            storage.read_text("s3://team-data/train.jsonl")
        assert str(err.value) == ("read s3://team-data/train.jsonl failed: AccessDenied: check AWS_ACCESS_KEY_ID "
                                  "/ AWS_SECRET_ACCESS_KEY and the bucket policy")
        assert len(denied.requests) == 1  # a 403 is final: no retry wasted on it
        denied.set("403")
        cfg = tmp_path / "run.yaml"
        cfg.write_text(yaml.safe_dump({
            "data": {"train": "s3://team-data/train.jsonl", "eval": "s3://team-data/eval.jsonl",
                     "fields": {"instruction": "", "input": "question", "output": "answer"}},
            "candidates": [{"name": "a", "path": "org/model-a"}]}))  # a hub id: preflight notes it, S3 data fails
        start = time.monotonic()
        assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
        # fails at once: the bound scales with an oversubscribed machine's load (the test suite shares cores)
        assert time.monotonic() - start < 5 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        assert len(denied.requests) == 2  # one request per data file, none retried
    err_text = capsys.readouterr().err
    assert "s3://team-data/train.jsonl failed: AccessDenied: check AWS_ACCESS_KEY_ID" in err_text
    assert "s3://team-data/eval.jsonl failed: AccessDenied" in err_text
    assert "Traceback" not in err_text and SECRET_KEY not in err_text and ACCESS_KEY not in err_text
    assert not (tmp_path / "out" / "runs").exists()


# --------------------------------------------------------------------------- nothing half-written taken as complete

def test_an_interrupted_directory_upload_is_never_read_as_complete(proxy, tmp_path, monkeypatch):
    flaky, bucket = proxy
    uri = f"s3://{bucket}/models/a"
    old, new = tmp_path / "old", tmp_path / "new"
    for root, tag in ((old, b"old"), (new, b"new")):
        for name in ("config.json", "model-1.bin", "model-2.bin"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(tag + name.encode())
    storage.publish(old, uri)
    assert not storage.exists(f"{uri}/{storage.INCOMPLETE_MARKER}")

    real_files = storage._local_files

    def files_then_crash(src_dir: Path):  # the upload dies after its first file
        first = real_files(src_dir)[:1]
        return first + [(src_dir / "gone.bin", "gone.bin")]

    monkeypatch.setattr(storage, "_local_files", files_then_crash)
    with pytest.raises(StorageError, match="gone.bin"):
        storage.publish(new, uri)
    with pytest.raises(StorageError, match=f"^{uri}: incomplete: an upload to it did not finish"):
        storage.localize(uri, tmp_path / "cache")
    assert not (tmp_path / "cache" / bucket / "models" / "a").exists()  # nothing half-copied either

    monkeypatch.setattr(storage, "_local_files", real_files)
    storage.publish(new, uri)  # the rerun completes it
    got = storage.localize(uri, tmp_path / "cache")
    assert {p.name: p.read_bytes() for p in got.iterdir()} == {
        "config.json": b"newconfig.json", "model-1.bin": b"newmodel-1.bin", "model-2.bin": b"newmodel-2.bin"}
