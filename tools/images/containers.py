"""Run the locally built images with Debian's podman (no Docker engine here; docker/README.md, "Building here").

Plain `podman run` fails on these machines (crun: setrlimit / cgroups hybrid mode); what works is the runc
runtime with a containers.conf that sets no default ulimits. `service()` starts podman's Docker-compatible API
on a unix socket, which is what Docker SDK clients (kfp.local.DockerRunner) speak.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".cache" / "images"
REGISTRY = os.environ.get("REGISTRY", "localhost/damoc-project")
TAG = os.environ.get("TAG", "0.1.0")
COMPONENT_IMAGE = f"{REGISTRY}/damoc:{TAG}"
TRAINING_IMAGE = f"{REGISTRY}/damoc-train:{TAG}"
# What a hardened pod gets: a non-root numeric user, a read-only root filesystem, writable emptyDirs only
# where the images expect them (/tmp, HOME), no network.
HARDENED = ["--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/home/damoc",
            "--network", "none"]


def containers_conf() -> Path:
    STATE.mkdir(parents=True, exist_ok=True)
    conf = STATE / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return conf


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "--runtime", "runc", *args], env=env(), capture_output=True, text=True,
                          timeout=timeout, check=check)


def run_hardened(image: str, command: Sequence[str], extra: Sequence[str] = (),
                 timeout: float = 600) -> subprocess.CompletedProcess:
    """`command` in `image` as uid 1000 on a read-only root filesystem (not checked: the caller asserts)."""
    return podman("run", "--rm", *HARDENED, *extra, image, *command, timeout=timeout, check=False)


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


@contextlib.contextmanager
def service(sock: Path | None = None) -> Iterator[str]:
    """podman's Docker-compatible API on a unix socket; yields its DOCKER_HOST (stopped by pid on exit)."""
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: run `make images-local` (it installs Debian's podman)")
    sock = sock or STATE / "podman.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    log = open(STATE / "podman-service.log", "w")
    proc = subprocess.Popen(["podman", "--runtime", "runc", "system", "service", "--time=0", f"unix://{sock}"],
                            env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start; see {log.name}")
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        sock.unlink(missing_ok=True)
