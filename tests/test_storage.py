"""damoc.storage against a real S3-protocol server (moto's, on 127.0.0.1 in this process)."""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from damoc import storage
from damoc.storage import StorageError

ACCESS_KEY = "AKIADAMOCTESTKEY0001"
SECRET_KEY = "damoc-s3cr3t-never-print-this-0123456789"
ENV_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "DAMOC_S3_SECURE",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION")


@pytest.fixture(scope="session")
def s3_endpoint(start_moto) -> Iterator[str]:
    with start_moto() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def bucket(clean_env: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    """A fresh bucket on the server, with the environment pointing at it."""
    clean_env.setenv("DAMOC_S3_ENDPOINT", s3_endpoint)
    clean_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    clean_env.setenv("AWS_REGION", "us-east-1")
    name = f"damoc-{uuid.uuid4().hex[:12]}"
    storage.client_from_env().make_bucket(name)
    return name


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _make_checkpoint(root: Path) -> dict[str, bytes]:
    files = {"config.json": b'{"layers": 2}', "tokenizer/vocab.txt": b"a\nb\n",
             "shards/deep/nested/model-00001.bin": os.urandom(4096), "empty.txt": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


# --------------------------------------------------------------------------- URIs and settings

def test_is_s3_and_split():
    assert storage.is_s3("s3://b-1/x") and storage.is_s3("S3://b-1/x")
    assert not storage.is_s3("/data/x.jsonl") and not storage.is_s3("file:///x")
    assert storage.split_s3("s3://my-bucket/a/b/c.jsonl") == ("my-bucket", "a/b/c.jsonl")
    assert storage.split_s3("s3://my-bucket") == ("my-bucket", "")
    assert storage.split_s3("s3://my-bucket/ckpt/") == ("my-bucket", "ckpt/")


@pytest.mark.parametrize("uri", ["s3://", "s3:///x", "s3://a/x", "s3://bad bucket/x", "http://b/x", ""])
def test_malformed_uris(uri: str):
    with pytest.raises(StorageError):
        storage.split_s3(uri)


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "s3://bucket-x", "s3://bucket-x/dir/"])
def test_object_operations_reject_non_object_uris(uri: str, tmp_path: Path):
    with pytest.raises(StorageError):
        storage.download_file(uri, tmp_path / "f")
    with pytest.raises(StorageError):
        storage.read_text(uri)


@pytest.mark.parametrize(("env", "endpoint", "secure"), [
    ({"DAMOC_S3_ENDPOINT": "minio.kubeflow:9000"}, "minio.kubeflow:9000", True),
    ({"DAMOC_S3_ENDPOINT": "http://minio:9000/"}, "minio:9000", False),
    ({"DAMOC_S3_ENDPOINT": "https://s3.example.com"}, "s3.example.com", True),
    ({"DAMOC_S3_ENDPOINT": "https://m:9000", "DAMOC_S3_SECURE": "false"}, "m:9000", False),
    ({"DAMOC_S3_ENDPOINT": "m:9000", "DAMOC_S3_SECURE": "0"}, "m:9000", False),
    ({"AWS_ENDPOINT_URL": "http://aws-style:1"}, "aws-style:1", False),
    ({"MINIO_ENDPOINT": "minio-only:9000", "AWS_ENDPOINT_URL": "http://second:2"}, "second:2", False),
    ({"MINIO_ENDPOINT": "minio-only:9000"}, "minio-only:9000", True),
])
def test_settings_from_env(clean_env, env, endpoint, secure):
    for name, value in env.items():
        clean_env.setenv(name, value)
    clean_env.setenv("MINIO_ACCESS_KEY", ACCESS_KEY)
    clean_env.setenv("MINIO_SECRET_KEY", SECRET_KEY)
    settings = storage.s3_settings_from_env()
    assert (settings.endpoint, settings.secure) == (endpoint, secure)
    assert (settings.access_key, settings.secret_key) == (ACCESS_KEY, SECRET_KEY)
    assert SECRET_KEY not in repr(settings)


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://h:1/path", "http://user:pw@h:1"])
def test_bad_endpoint(clean_env, bad):
    clean_env.setenv("DAMOC_S3_ENDPOINT", bad)
    clean_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(StorageError) as info:
        storage.client_from_env()
    assert "user:pw" not in str(info.value)


def test_missing_env_names_variables(clean_env, tmp_path: Path):
    with pytest.raises(StorageError) as info:
        storage.localize("s3://bucket-x/data.jsonl", tmp_path)
    message = str(info.value)
    for name in ("DAMOC_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in message
    clean_env.setenv("DAMOC_S3_ENDPOINT", "http://127.0.0.1:1")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID") as info:
        storage.read_text("s3://bucket-x/a.txt")
    assert SECRET_KEY not in str(info.value) and "DAMOC_S3_ENDPOINT" not in str(info.value)
    assert "MINIO_ACCESS_KEY" in str(info.value)


# --------------------------------------------------------------------------- transfers

def test_file_round_trip(bucket: str, tmp_path: Path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(10_000))
    uri = f"s3://{bucket}/runs/1/in.bin"
    storage.upload_file(src, uri)
    out = storage.download_file(uri, tmp_path / "out" / "sub" / "in.bin")
    assert out.read_bytes() == src.read_bytes()
    assert storage.exists(uri) and not storage.exists(f"s3://{bucket}/runs/1/other.bin")


def test_large_file_uses_multipart(bucket: str, tmp_path: Path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    uri = f"s3://{bucket}/big/big.bin"
    storage.upload_file(src, uri)
    stat = storage.client_from_env().stat_object(bucket, "big/big.bin")
    assert "-" in stat.etag  # multipart ETags are "<md5>-<parts>"
    assert storage.download_file(uri, tmp_path / "big.out").read_bytes() == src.read_bytes()


def test_dir_round_trip(bucket: str, tmp_path: Path):
    files = _make_checkpoint(tmp_path / "ckpt")
    assert storage.upload_dir(tmp_path / "ckpt", f"s3://{bucket}/models/ckpt") == len(files)
    storage.write_text(f"s3://{bucket}/models/ckpt2/decoy.txt", "must not be downloaded")
    out = storage.download_dir(f"s3://{bucket}/models/ckpt", tmp_path / "out")
    assert _tree(out) == files
    with pytest.raises(StorageError, match="no objects"):
        storage.download_dir(f"s3://{bucket}/models/none", tmp_path / "none")


def test_download_dir_refuses_escaping_keys(bucket: str, tmp_path: Path):
    import boto3  # the minio client itself refuses '..' keys, other writers don't

    s3 = boto3.client("s3", endpoint_url=os.environ["DAMOC_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    s3.put_object(Bucket=bucket, Key="ckpt/ok.txt", Body=b"ok")
    s3.put_object(Bucket=bucket, Key="ckpt/../../evil.txt", Body=b"evil")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    if "ckpt/../../evil.txt" not in keys:
        pytest.skip(f"server normalised the key: {keys}")
    dest = tmp_path / "a" / "b"
    with pytest.raises(StorageError, match="escape"):
        storage.download_dir(f"s3://{bucket}/ckpt", dest)
    assert not (tmp_path / "evil.txt").exists() and not dest.exists()


def test_text_round_trip(bucket: str, tmp_path: Path):
    uri = f"s3://{bucket}/reports/summary.md"
    storage.write_text(uri, "héllo\nwörld")
    assert storage.read_text(uri) == "héllo\nwörld"
    local = tmp_path / "deep" / "x.txt"
    storage.write_text(str(local), "one")
    storage.write_text(f"file://{local}", "two")
    assert storage.read_text(str(local)) == "two"
    assert [p.name for p in local.parent.iterdir()] == ["x.txt"]  # no temp files left


# --------------------------------------------------------------------------- localize

def test_localize_local_path_is_unchanged(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text("{}")
    assert storage.localize(str(path)) == path
    assert storage.localize(f"file://{path}", tmp_path / "cache") == path
    assert not (tmp_path / "cache").exists()


def test_localize_file_vs_prefix(bucket: str, tmp_path: Path):
    storage.write_text(f"s3://{bucket}/data/train.jsonl", '{"q": 1}\n')
    files = _make_checkpoint(tmp_path / "ckpt")
    storage.upload_dir(tmp_path / "ckpt", f"s3://{bucket}/models/base")
    cache = tmp_path / "cache"

    local_file = storage.localize(f"s3://{bucket}/data/train.jsonl", cache)
    assert local_file.is_file() and local_file.read_text() == '{"q": 1}\n'
    assert local_file.is_relative_to(cache)

    for uri in (f"s3://{bucket}/models/base", f"s3://{bucket}/models/base/"):
        local_dir = storage.localize(uri, cache)
        assert local_dir.is_dir() and _tree(local_dir) == files


def test_localize_default_cache_is_under_damoc_home_per_endpoint(bucket: str, tmp_path: Path, clean_env):
    storage.write_text(f"s3://{bucket}/data/train.jsonl", '{"q": 1}\n')
    clean_env.setenv("DAMOC_HOME", str(tmp_path / "home"))
    clean_env.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    default = storage.localize(f"s3://{bucket}/data/train.jsonl")  # default cache: $DAMOC_HOME, not a temp dir
    assert default.read_text() == '{"q": 1}\n'
    assert default.is_relative_to(tmp_path / "home" / "s3-cache" / storage.endpoint_slug())
    assert "127.0.0.1" in storage.endpoint_slug() and list((tmp_path / "tmp").iterdir()) == []


def test_localize_refreshes_prefix_copy(bucket: str, tmp_path: Path):
    uri, cache = f"s3://{bucket}/models/m", tmp_path / "cache"
    storage.write_text(f"{uri}/old.bin", "old")
    first = storage.localize(uri, cache)
    storage.publish(_write(tmp_path / "v2" / "new.bin", "new").parent, uri)
    assert _tree(storage.localize(uri, cache)) == {"new.bin": b"new"} and first.is_dir()


def test_localize_missing_names_bucket_and_key(bucket: str, tmp_path: Path):
    with pytest.raises(StorageError) as info:
        storage.localize(f"s3://{bucket}/nope/missing.jsonl", tmp_path)
    assert bucket in str(info.value) and "nope/missing.jsonl" in str(info.value)
    with pytest.raises(StorageError) as info:
        storage.download_file(f"s3://{bucket}/nope/missing.jsonl", tmp_path / "x")
    assert bucket in str(info.value) and "nope/missing.jsonl" in str(info.value)


# --------------------------------------------------------------------------- publish

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_publish_local_dir_replaces(tmp_path: Path):
    dest = tmp_path / "out" / "results"
    _write(dest / "old.txt", "old")
    _write(tmp_path / "new" / "a.txt", "A")
    _write(tmp_path / "new" / "sub" / "b.txt", "B")
    assert storage.publish(tmp_path / "new", str(dest)) == str(dest)
    assert _tree(dest) == {"a.txt": b"A", "sub/b.txt": b"B"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["results"]  # no temp/old siblings
    fresh = tmp_path / "elsewhere" / "deep" / "results"
    storage.publish(tmp_path / "new", f"file://{fresh}")
    assert _tree(fresh) == _tree(dest)


def test_publish_local_dir_failure_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dest = tmp_path / "out" / "results"
    _write(dest / "old.txt", "old")
    for i in range(5):
        _write(tmp_path / "new" / f"f{i}.txt", str(i))
    copied: list[Path] = []

    def flaky_copy(src: Path, dst: Path) -> None:
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        copied.append(Path(src))
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(storage, "_copy_file", flaky_copy)
    with pytest.raises(StorageError, match="No space left"):
        storage.publish(tmp_path / "new", str(dest))
    assert _tree(dest) == {"old.txt": b"old"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["results"]


def test_publish_local_file_and_errors(tmp_path: Path):
    src = _write(tmp_path / "metrics.json", "{}")
    dest = tmp_path / "a" / "b" / "metrics.json"
    storage.publish(src, str(dest))
    assert dest.read_text() == "{}"
    storage.publish(dest, str(dest))  # publishing a file onto itself is a no-op
    assert dest.read_text() == "{}"
    with pytest.raises(StorageError, match="does not exist"):
        storage.publish(tmp_path / "missing", str(tmp_path / "x"))
    with pytest.raises(StorageError, match="inside"):
        storage.publish(tmp_path / "a", str(tmp_path / "a" / "b" / "copy"))


def test_publish_s3_dir_drops_stale_objects(bucket: str, tmp_path: Path):
    uri = f"s3://{bucket}/runs/r1/model"
    _write(tmp_path / "v1" / "shard-1.bin", "1")
    _write(tmp_path / "v1" / "shard-2.bin", "2")
    _write(tmp_path / "v2" / "shard-1.bin", "one")
    assert storage.publish(tmp_path / "v1", uri) == uri
    storage.publish(tmp_path / "v2", uri)
    assert _tree(storage.download_dir(uri, tmp_path / "got")) == {"shard-1.bin": b"one"}
    file_uri = f"s3://{bucket}/runs/r1/metrics.json"
    storage.publish(_write(tmp_path / "m.json", "{}"), file_uri)
    assert storage.read_text(file_uri) == "{}"


# --------------------------------------------------------------------------- errors and secrets

def test_errors_name_bucket_key_and_hide_secrets(bucket: str, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    missing_bucket = f"nobucket-{uuid.uuid4().hex[:8]}"
    attempts = [
        lambda: storage.read_text(f"s3://{bucket}/no/such.txt"),
        lambda: storage.download_file(f"s3://{bucket}/no/such.bin", tmp_path / "x"),
        lambda: storage.read_text(f"s3://{missing_bucket}/k.txt"),
        lambda: storage.upload_file(_write(tmp_path / "u.txt", "u"), f"s3://{missing_bucket}/k.txt"),
        lambda: storage.localize(f"s3://{missing_bucket}/k", tmp_path),
        lambda: storage.download_dir(f"s3://{bucket}/empty", tmp_path / "d"),
    ]
    messages = []
    for attempt in attempts:
        with pytest.raises(StorageError) as info:
            attempt()
        messages.append(str(info.value))
    assert bucket in messages[0] and "no/such.txt" in messages[0]
    assert bucket in messages[1] and "no/such.bin" in messages[1]
    assert all(missing_bucket in m and "NoSuchBucket" in m for m in messages[2:5])
    assert not storage.exists(f"s3://{missing_bucket}/k")
    for text in [*messages, caplog.text]:
        assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_scrub_masks_credentials(bucket: str):
    assert storage._scrub(f"sig {SECRET_KEY} by {ACCESS_KEY}") == "sig *** by ***"


# ---- the stages' use of storage: data, checkpoints and results through s3:// -------------------------


def test_training_data_loads_from_s3_parquet(bucket: str, tmp_path: Path) -> None:
    import pandas as pd

    from damoc.data.io import load_samples

    local = tmp_path / "train.parquet"
    pd.DataFrame([{"q": f"question {i}", "a": f"answer {i}"} for i in range(3)]).to_parquet(local)
    storage.upload_file(local, f"s3://{bucket}/data/train.parquet")
    samples = load_samples(f"s3://{bucket}/data/train.parquet", {"instruction": None, "input": "q", "output": "a"},
                           cache_dir=tmp_path / "cache")
    assert [(s.input, s.output) for s in samples] == [(f"question {i}", f"answer {i}") for i in range(3)]


def test_checkpoint_from_s3_downloads_once_and_loads(bucket: str, tmp_path: Path, clean_env, tiny_pair) -> None:
    from transformers import AutoModelForCausalLM

    from damoc.workflow.model_sources import resolve_model_source

    clean_env.setenv("DAMOC_HOME", str(tmp_path / "home"))
    storage.upload_dir(tiny_pair[1], f"s3://{bucket}/models/chat")
    local = resolve_model_source(f"s3://{bucket}/models/chat")
    assert Path(local).is_relative_to(tmp_path / "home")
    assert AutoModelForCausalLM.from_pretrained(local).config.model_type == "llama"
    assert resolve_model_source(f"s3://{bucket}/models/chat") == local  # cached, not downloaded again


def test_results_publish_to_s3(bucket: str, tmp_path: Path) -> None:
    import json

    from damoc.config import parse_config
    from damoc.results import CandidateResult
    from damoc.workflow.rank_step import rank_step

    cfg = parse_config({"data": {"train": "t.jsonl", "eval": "e.jsonl"}, "candidates": [{"name": "a", "path": "x"}]})
    result = CandidateResult(candidate="a", score=0.25)
    rank_step(cfg, [result], [], 0.0, tmp_path / "s.json", tmp_path / "r.md", f"s3://{bucket}/runs/1")
    assert json.loads(storage.read_text(f"s3://{bucket}/runs/1/selection.json"))["selected"] == "a"
    assert storage.read_text(f"s3://{bucket}/runs/1/report.md").startswith("# DaMoC selection")
