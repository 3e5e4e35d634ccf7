"""Container images: every base is a build argument (fast), and the built images run (slow, `make test-images`).

The slow part needs the images built here by `make images-local` (Debian's buildah on local bases, no registry)
and podman; `make test-images` does both, then runs this file with DAMOC_TEST_IMAGES=1. Inside each image, as
uid 1000 on a read-only root filesystem with no network: `damoc --help`, every component's import, the training
stack (torch with its CUDA build, deepspeed, peft, transformers); then the quickstart pipeline (2 candidates,
few rows) with every task in its own container through kfp.local.DockerRunner on podman's Docker API.
What only a cluster can show: GPU execution (no GPU here; torch.cuda.is_available() is False in the test).
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
sys.path.insert(0, str(REPO / "tools" / "images"))
import containers  # noqa: E402  (tools/images/containers.py)

DOCKERFILES = ["Dockerfile", "Dockerfile.train", "Dockerfile.rewriter"]
import damoc_components  # noqa: E402

# Every module of the components package (images.py holds names only).
COMPONENT_MODULES = sorted(f"damoc_components.{m.name}" for m in pkgutil.iter_modules(damoc_components.__path__)
                           if m.name != "images")
GPU_TASKS = {"finetune_model", "evaluate_model"}


# ------------------------------------------------------------------ fast: the Dockerfiles and `make images`

@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_base_image_is_a_build_argument(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    first_from = text.index("\nFROM ")
    declared = dict(re.findall(r"^ARG (\w+)=(\S+)$", text[:first_from], re.M))  # global ARGs, before any FROM
    stages: set[str] = set()
    for ref, stage in re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M):
        if ref not in stages:
            arg = re.fullmatch(r"\$\{(\w+)\}", ref)
            assert arg and arg.group(1) in declared, f"{dockerfile}: FROM {ref} is not a build argument"
        if stage:
            stages.add(stage)
    assert declared, dockerfile


def test_make_images_takes_local_bases_and_another_builder():
    cmd = ["make", "-n", "images", "IMAGE_BUILD=buildah bud --isolation chroot", "PUSH=0", "IMAGES=component train",
           "REGISTRY=localhost/x", "TAG=1", "PYTHON_IMAGE=localhost/py:3.11", "CUDA_DEVEL_IMAGE=localhost/py:3.11",
           "CUDA_RUNTIME_IMAGE=localhost/py:3.11", "UV_IMAGE=localhost/uv:1", "TORCH_INDEX_URL=http://127.0.0.1:1/"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "--build-arg PYTHON_IMAGE=localhost/py:3.11" in out and "TORCH_INDEX_URL=http://127.0.0.1:1/" in out
    assert "--build-arg CUDA_DEVEL_IMAGE=localhost/py:3.11" in out and "UV_IMAGE=localhost/uv:1" in out
    assert "--ignorefile docker/Dockerfile.dockerignore" in out and "--ignorefile docker/Dockerfile.train." in out
    assert "-t localhost/x/damoc:1" in out and "-t localhost/x/damoc-train:1" in out
    assert "push" not in out.replace("PUSH=0: not pushed", "") and "Dockerfile.rewriter" not in out


# ------------------------------------------------------------------ slow: build here, run inside

needs_images = pytest.mark.skipif(os.environ.get("DAMOC_TEST_IMAGES") != "1" or shutil.which("podman") is None,
                                  reason="image suite: `make test-images` (builds the images, needs podman)")


@pytest.fixture(scope="module")
def images():
    for image in (containers.COMPONENT_IMAGE, containers.TRAINING_IMAGE):
        if containers.podman("image", "exists", image, check=False).returncode != 0:
            pytest.fail(f"{image} is not built: run `make images-local` (or `make test-images`)")
    return containers.COMPONENT_IMAGE, containers.TRAINING_IMAGE


def _inside(image: str, code: str) -> dict:
    """Run Python `code` (which prints one JSON line last) hardened in `image`; its parsed output."""
    proc = containers.run_hardened(image, ["python", "-c", code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_WHO = ("import json, os, sys\n"
        "try:\n    open('/opt/venv/probe', 'w'); ro = False\nexcept OSError as e:\n    ro = e.errno == 30\n"
        "info = {'uid': os.getuid(), 'gid': os.getgid(), 'read_only_root': ro, 'python': sys.version.split()[0]}\n")


@pytest.mark.slow
@needs_images
def test_component_image_cli_and_every_component_as_uid_1000_read_only(images):
    component, _ = images
    proc = containers.run_hardened(component, ["damoc", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: damoc") and "run" in proc.stdout
    code = _WHO + (
        "import importlib\n"
        f"mods = {COMPONENT_MODULES!r}\n"
        "info['components'] = sorted(n for m in mods for n, o in vars(importlib.import_module(m)).items()"
        " if hasattr(o, 'component_spec'))\n"
        "import damoc_pipelines.damoc_pipeline, torch\n"
        "info['torch'] = torch.__version__\n"
        "print(json.dumps(info))\n")
    info = _inside(component, code)
    expected = sorted(n for m in COMPONENT_MODULES for n, o in vars(importlib.import_module(m)).items()
                      if hasattr(o, "component_spec"))
    assert info["uid"] == 1000 and info["gid"] == 1000 and info["read_only_root"] is True
    assert info["python"].startswith("3.11.") and info["torch"] == "2.13.0+cpu"
    assert info["components"] == expected and len(expected) >= 8


@pytest.mark.slow
@needs_images
def test_training_image_imports_the_stack_and_reports_cuda(images):
    _, training = images
    code = _WHO + (
        "import torch, deepspeed, peft, transformers, kfp, damoc.training, damoc_components.candidate\n"
        "info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),"
        " deepspeed=deepspeed.__version__, peft=peft.__version__, transformers=transformers.__version__,"
        " kfp=kfp.__version__)\n"
        "print(json.dumps(info))\n")
    info = _inside(training, code)
    print("training image:", info)
    assert info["uid"] == 1000 and info["read_only_root"] is True and info["python"].startswith("3.11.")
    assert info["torch"] == "2.13.0+cu130" and re.fullmatch(r"13\.\d+", info["cuda"] or "")
    assert info["cuda_available"] is False  # no GPU here: GPU execution is what only a cluster shows
    assert (info["deepspeed"], info["peft"], info["transformers"], info["kfp"]) == \
        ("0.19.8", "0.21.2", "5.24.0", "2.17.3")


@pytest.mark.slow
@needs_images
def test_quickstart_with_every_task_in_its_container(images, tmp_path):
    component, training = images
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["candidates"] = doc["candidates"][:2]  # the smallest run that still has every task, ranking included
    doc["data"].update(max_train_samples=120, max_eval_samples=10)
    doc["training"].update(epochs=1)
    doc["evaluation"].update(max_new_tokens=16)
    config = tmp_path / "quickstart-small.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "images" / "run_pipeline.py"), str(config),
                           "--out", str(out), "--component-image", component, "--training-image", training],
                          capture_output=True, text=True, timeout=3000)
    assert (out / "containers.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "containers.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "tasks"}),
          *(f"{t['function']:>18} {t['seconds']:>6} s  {t['image']}" for t in summary["tasks"]), sep="\n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tasks = summary["tasks"]
    per_candidate = ["prune_model", "finetune_model", "evaluate_model"]
    expected = ["validate_config", "fingerprint_data", "prepare_data", "filter_data", "compress_data",
                *per_candidate * 2, "rank_candidates"]
    assert sorted(t["function"] for t in tasks) == sorted(expected)
    for t in tasks:
        assert t["exit_code"] == 0 and t["user"] == "1000:1000" and t["read_only"] is True, t
        assert t["image"] == (training if t["function"] in GPU_TASKS else component), t
    selection = json.loads((out / "selection.json").read_text())
    ranked = [r for r in selection["ranking"] if r["status"] == "ok"]
    assert sorted(r["candidate"] for r in ranked) == ["tiny-llama", "tiny-qwen2"]
    assert [r["rank"] for r in sorted(ranked, key=lambda r: r["rank"])] == [1, 2]
    assert selection["selected"] in {"tiny-llama", "tiny-qwen2"}
