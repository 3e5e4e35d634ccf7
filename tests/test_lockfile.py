"""The hashed lock files (requirements/*.lock, `make lock`) agree with pyproject.toml and the image lists.

No network: each lock records the sha256 of the requirement lines it was resolved from; a change to
pyproject.toml's dependencies (or docker/requirements-train.txt) without `make lock` fails here, and so does a
lock whose pins do not satisfy the declared requirements or that lacks hashes.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
_spec = importlib.util.spec_from_file_location("damoc_lock_tool", REPO / "tools" / "images" / "lock.py")
lock_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_tool)

_BLOCK = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)((?:[ \t]*\\\n[ \t]+--hash=\S+)*)", re.M)


def parse_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """{canonical name: (version, {sha256 hex})} of a `uv pip compile --generate-hashes` file."""
    out = {}
    for name, version, hashes in _BLOCK.findall(text):
        out[canonicalize_name(name)] = (version, set(re.findall(r"--hash=sha256:([0-9a-f]{64})", hashes)))
    return out


def _lock(name: str) -> tuple[str, dict[str, tuple[str, set[str]]]]:
    text = (LOCKS / name).read_text()
    return text, parse_lock(text)


def _declared(name: str) -> list[Requirement]:
    lines = lock_tool.lock_inputs(REPO)[name]
    return [Requirement(ln.split("] ", 1)[1] if ln.startswith("[") else ln) for ln in lines]


@pytest.mark.parametrize("name", ["damoc.lock", "test.lock", "train.lock"])
def test_lock_matches_its_inputs(name):
    text, locked = _lock(name)
    recorded = re.search(r"^# inputs-sha256: ([0-9a-f]{64})$", text, re.M)
    assert recorded, f"requirements/{name} has no inputs-sha256 header: run `make lock`"
    assert recorded.group(1) == lock_tool.inputs_digest(lock_tool.lock_inputs(REPO)[name]), (
        f"requirements/{name} was made from other requirements than pyproject.toml/docker lists now "
        "declare: run `make lock` and commit the result")
    # Every requirement line of the lock is an exact pin with at least one sha256 hash.
    top = [ln for ln in text.splitlines() if ln[:1].isalnum()]
    assert len(top) == len(locked) > 20
    assert all(hashes for _, hashes in locked.values()), [n for n, (_, h) in locked.items() if not h]
    # Every declared requirement is in the lock, at a version it allows (extras' own deps included).
    for req in _declared(name):
        key = canonicalize_name(req.name)
        assert key in locked, f"requirements/{name} lacks {req.name}"
        version = Version(locked[key][0])
        assert req.specifier.contains(version, prereleases=True), f"{name}: {req.name}=={version} vs {req}"


def test_install_and_test_locks_agree():
    _, runtime = _lock("damoc.lock")
    _, test = _lock("test.lock")
    assert runtime.keys() <= test.keys()
    assert {n: v for n, (v, _) in runtime.items()} == {n: test[n][0] for n in runtime}
    assert {"pytest", "moto"} <= test.keys() - runtime.keys()
    assert "pytest" not in runtime and "kfp" in runtime


def test_torch_builds():
    """CPU locks take torch's +cpu build (no CUDA libraries); the training lock the CUDA build from PyPI."""
    _, runtime = _lock("damoc.lock")
    _, train = _lock("train.lock")
    assert runtime["torch"][0] == "2.13.0+cpu" and not any(n.startswith("nvidia-") for n in runtime)
    assert train["torch"][0] == "2.13.0" and "nvidia-cublas" in train and "nvidia-nccl-cu13" in train
    assert {"kfp", "deepspeed", "setuptools"} <= train.keys() and "kfp-kubernetes" not in train
    # Shared packages run the same versions in every image.
    for n in runtime.keys() & train.keys() - {"torch"}:
        assert runtime[n][0] == train[n][0], f"{n}: damoc.lock {runtime[n][0]}, train.lock {train[n][0]}"


def test_lock_covers_installed_dependency_closure():
    """Against the installed venv's metadata: every dependency of a locked package is locked too."""
    import importlib.metadata as md
    from packaging.markers import default_environment

    _, test = _lock("test.lock")
    env = {**default_environment(), "python_version": "3.11", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64"}
    missing = []
    for name in test:
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker and not r.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(r.name) not in test:
                missing.append(f"{name} -> {r}")
    assert not missing, missing


def test_make_install_uses_the_locks_with_hashes():
    for target, lock in (("install", "damoc.lock"), ("install-test", "test.lock")):
        proc = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"pip install .*--require-hashes .*-r requirements/{lock}", proc.stdout), proc.stdout
    for dockerfile, lock in (("Dockerfile", "damoc.lock"), ("Dockerfile.train", "train.lock")):
        text = (REPO / "docker" / dockerfile).read_text()
        assert f"COPY requirements/{lock} " in text and text.count("--require-hashes") >= 2


def test_parse_lock_reads_multi_hash_blocks():
    sample = ("a-b==1.0 \\\n    --hash=sha256:" + "0" * 64 + " \\\n    --hash=sha256:" + "1" * 64 +
              "\n    # via x\nc==2.0+cpu \\\n    --hash=sha256:" + "2" * 64 + "\nd==3\n")
    assert parse_lock(sample) == {"a-b": ("1.0", {"0" * 64, "1" * 64}), "c": ("2.0+cpu", {"2" * 64}),
                                  "d": ("3", set())}
