"""Planted-secret scan (issue 12 acceptance): a full local run with its data and one candidate's checkpoints on
an S3 server (moto), distinctive planted S3 credentials and rewriter API key in the environment, and the
rewriter actually called (a fake OpenAI-compatible server that records the key it receives). Afterwards every
file of the run's output (selection.json, report.md, logs, artifacts, the kfp.local pipeline root), the
captured stdout/stderr and the compiled pipeline YAML are searched for the planted values, raw and in base64.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ACCESS_KEY = "AKIAPLANTEDQ7X3ZK9W2"
SECRET_KEY = "plAnted/Secr3t+Kq7Zx9Lm2Wv4Rt6Yp8Nb0Jc1Hd"
API_KEY = "sk-planted-rewriter-7f3c9a1e5b2d4c6e8a0b"
SECRETS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "DAMOC_REWRITER_API_KEY": API_KEY}


def needles() -> dict[str, bytes]:
    """Each planted value raw, base64 (standard and URL-safe, at the three alignments a value can have inside
    a longer base64 text: the stable middle part), and the access:secret pair as HTTP basic auth."""
    out: dict[str, bytes] = {}
    for name, value in SECRETS.items():
        raw = value.encode()
        out[name] = raw
        for shift in range(3):
            for alt, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
                encoded = encode(b"\0" * shift + raw)[4:-4]  # drop the characters that depend on neighbours
                out[f"{name} ({alt}, offset {shift})"] = encoded
    out["basic auth"] = base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode())
    return out


def scan(paths: list[Path], texts: dict[str, str]) -> list[str]:
    """'where: which secret' for every planted value found in the files (symlinks not followed twice) and texts."""
    found, patterns = [], needles()
    seen: set[Path] = set()
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            data = real.read_bytes()
            found += [f"{path}: {name}" for name, needle in patterns.items() if needle in data]
    for where, text in texts.items():
        found += [f"{where}: {name}" for name, needle in patterns.items() if needle in text.encode()]
    return found


def test_needles_find_planted_values_in_every_form(tmp_path):
    """The scanner itself: a file holding a secret raw, in base64 inside a longer blob, or as basic auth is found."""
    (tmp_path / "a.log").write_text(f"token={API_KEY}\n")
    (tmp_path / "b.json").write_bytes(b'{"blob": "' + base64.b64encode(b"xy" + SECRET_KEY.encode() + b"z") + b'"}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_bytes(b"Authorization: Basic " +
                                             base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()))
    (tmp_path / "clean.txt").write_text("AKIA... nothing here")
    found = scan([tmp_path], {"stdout": f"key {ACCESS_KEY[:10]}", "stderr": ""})
    assert any(f.endswith("a.log: DAMOC_REWRITER_API_KEY") for f in found)
    assert any("b.json: AWS_SECRET_ACCESS_KEY (b64, offset" in f for f in found)
    assert any(f.endswith("c.txt: basic auth") for f in found)
    assert not any("clean.txt" in f or f.startswith("stdout") for f in found)


class FakeOpenAI:
    """An OpenAI-compatible chat endpoint that answers every request and records the Authorization headers."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 — http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.auth.append(self.headers.get("Authorization", ""))
                body = json.dumps({"choices": [{"message": {"content": "A short rewritten answer."}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def moto_endpoint(start_moto) -> Iterator[str]:
    with start_moto() as port:
        yield f"http://127.0.0.1:{port}"


def test_no_planted_secret_in_any_output_of_a_full_s3_run(tmp_path, zoo_dir, moto_endpoint, monkeypatch):
    from damoc import storage
    from damoc.demo.builtin import demo_data_dir
    from damoc.paths import damoc_home

    for name in ("AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {"DAMOC_S3_ENDPOINT": moto_endpoint, "AWS_REGION": "us-east-1", **SECRETS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = f"scan-{uuid.uuid4().hex[:10]}"
    storage.client_from_env().make_bucket(bucket)
    for split in ("train", "eval"):
        storage.upload_file(demo_data_dir("qa_long") / f"{split}.jsonl", f"s3://{bucket}/data/{split}.jsonl")
    for kind in ("chat", "base"):
        storage.upload_dir(zoo_dir / "tiny-llama" / kind, f"s3://{bucket}/models/tiny-llama/{kind}")
    rewriter = FakeOpenAI()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": f"s3://{bucket}/data/train.jsonl", "eval": f"s3://{bucket}/data/eval.jsonl",
                 "task": "qa_long", "max_train_samples": 40, "max_eval_samples": 6},
        "candidates": [
            {"name": "tiny-llama", "path": f"s3://{bucket}/models/tiny-llama/chat",
             "base_path": f"s3://{bucket}/models/tiny-llama/base"},
            {"name": "tiny-qwen2", "path": str(zoo_dir / "tiny-qwen2" / "chat")}],
        "filter": {"method": "graphcut", "ratio": 0.5},
        # a gate nothing passes: every sample goes to the rewriter, which gets the planted API key
        "compression": {"rate": 0.6, "bertscore_threshold": 0.999, "scorer_model": str(zoo_dir / "tiny-llama" / "base"),
                        "rewrite": True, "rewriter": "openai", "rewrite_rounds": 1,
                        "rewriter_options": {"openai": {"base_url": rewriter.url, "max_retries": 0}}},
        "pruning": {"threshold": 0.5, "max_prune_fraction": 0.25},
        "training": {"epochs": 1, "batch_size": 16, "max_length": 96},
        "evaluation": {"max_new_tokens": 8}}))
    out = tmp_path / "out"
    try:
        run = subprocess.run([sys.executable, "-m", "damoc.cli", "run", str(cfg), "--out", str(out)], cwd=REPO,
                             env=os.environ.copy(), capture_output=True, text=True, timeout=1200)
        compiled = subprocess.run([sys.executable, "-m", "damoc.cli", "compile", "--config", str(cfg), "--out",
                                   str(tmp_path / "compiled")], cwd=REPO, env=os.environ.copy(),
                                  capture_output=True, text=True, timeout=300)
    finally:
        rewriter.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    selection = json.loads((out / "selection.json").read_text())
    assert {r["candidate"]: r["status"] for r in selection["ranking"]} == {"tiny-llama": "ok", "tiny-qwen2": "ok"}
    assert rewriter.auth and set(rewriter.auth) == {f"Bearer {API_KEY}"}  # the key was really in use
    scanned = [out / "runs", out / "selection.json", out / "report.md", tmp_path / "compiled",
               REPO / "pipelines" / "compiled"]
    n_files = sum(1 for root in scanned for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
    assert n_files > 20 and (out / "pipeline_root").exists()
    assert scan(scanned, {"stdout": run.stdout, "stderr": run.stderr + compiled.stdout + compiled.stderr}) == []
    for sub in ("models", "s3-cache"):  # the run's copies of this throw-away endpoint's checkpoints
        shutil.rmtree(damoc_home() / sub / storage.endpoint_slug(), ignore_errors=True)
