#!/usr/bin/env python3
"""Run a DaMoC config's pipeline with every task in its container image (kfp.local.DockerRunner on podman).

    python tools/images/run_pipeline.py CONFIG --out DIR [--set key=value ...]

The same pipeline function `damoc run` executes, but each task is a container of the image its component names
(components/images.py: the component image for the CPU tasks, the training image for fine-tune and evaluate),
started through podman's Docker-compatible API as a hardened pod would run it: uid 1000, read-only root
filesystem, tmpfs /tmp and HOME, no network, HF offline. Host folders mounted: the run's folder (its output_uri),
pipeline root and workspace (read-write, same paths) and DIR/inputs (a readable copy of the host DAMOC_HOME's zoo
and demo data, which the config resolves to; read-only); DAMOC_HOME inside is on the tmpfs HOME, as a pod's emptyDir.
Writes DIR/selection.json (the rank task's) and DIR/containers.json: one entry per task container
(component function, image, exit code, seconds). Exit 0 when every task succeeded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "images"))
import containers  # noqa: E402  (tools/images/containers.py)

# Docker SDK for kfp.local's DockerRunner: not a project dependency; `make test-images` puts it here.
SDK = REPO / ".cache" / "docker-sdk"


def _task_function(command: list[str]) -> str:
    for flag, value in zip(command, command[1:]):
        if flag == "--function_to_execute":
            return value
    return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--component-image", default=containers.COMPONENT_IMAGE)
    ap.add_argument("--training-image", default=containers.TRAINING_IMAGE)
    args = ap.parse_args(argv)

    # components/images.py reads these when the components are imported (below).
    os.environ["DAMOC_IMAGE"] = args.component_image
    os.environ["DAMOC_TRAINING_IMAGE"] = args.training_image
    if SDK.is_dir():
        sys.path.insert(0, str(SDK))
    import docker  # noqa: F401  (fail here, clearly, if the SDK is missing)
    from kfp import local
    from kfp.local import docker_task_handler

    from damoc.config import load_config
    from damoc.config_params import to_pipeline_arguments
    from damoc.demo.builtin import resolve_builtins
    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    out = args.out.resolve()
    run_dir = out / "run"
    # Folders kfp.local makes on the host must be writable by the containers' uid 1000 (rootful podman maps it
    # to host uid 1000): the host side creates them group/world-writable.
    os.umask(0)
    # The inputs, as a pod's model/data volume: the built-in zoo and demo data copied from the host's
    # DAMOC_HOME (the zoo's weights are mode 0600 there, unreadable for uid 1000), readable by all.
    host_home = Path(os.environ.get("DAMOC_HOME", REPO / ".cache" / "damoc")).resolve()
    home = out / "inputs"
    for part in ("zoo", "demo"):
        if (host_home / part).is_dir():
            shutil.copytree(host_home / part, home / part, dirs_exist_ok=True)
    for path in [home, *home.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.environ["DAMOC_HOME"] = str(home)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = resolve_builtins(load_config(args.config, overrides))  # zoo:// demo:// -> paths under inputs/
    (run_dir / "pipeline_root").mkdir(parents=True, exist_ok=True)

    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "HOME": "/home/damoc", "TMPDIR": "/tmp",
           # as in a pod: DAMOC_HOME (embedding cache, ...) is ephemeral; the zoo/demo inputs are a read-only mount
           "DAMOC_HOME": "/home/damoc/.cache/damoc"}
    runner = local.DockerRunner(
        user="1000:1000", read_only=True, network_mode="none", environment=env,
        tmpfs={"/tmp": "rw,exec,size=4g", "/home/damoc": "rw,exec,size=2g"},
        mounts=[docker.types.Mount(target=str(home), source=str(home), type="bind", read_only=True),
                # the rank task writes selection.json and the reports to output_uri = the run's folder
                docker.types.Mount(target=str(run_dir), source=str(run_dir), type="bind", read_only=False)])

    record: list[dict] = []

    def run_container(client, image, command, volumes, **kw) -> int:
        """kfp.local's run_docker_container without auto_remove: with podman's API an auto-removed container
        is gone before its exit code (and the end of its log) can be read, which kfp.local counts as success."""
        t0 = time.monotonic()
        if not client.images.list(name=image):
            raise RuntimeError(f"image {image} is not here: build it with `make images-local`")
        container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                          volumes=volumes, **kw)
        try:
            for line in container.logs(stream=True, follow=True):
                print(line.decode(errors="replace"), end="")
            code = container.wait()["StatusCode"]
        finally:
            container.remove(force=True)
        record.append({"function": _task_function(list(command)), "image": image, "exit_code": code,
                       "seconds": round(time.monotonic() - t0, 1), "user": kw.get("user"),
                       "read_only": kw.get("read_only"), "network_mode": kw.get("network_mode")})
        return code

    docker_task_handler.run_docker_container = run_container
    t0 = time.monotonic()
    ok = False
    with containers.service() as docker_host:
        os.environ["DOCKER_HOST"] = docker_host
        local.init(runner=runner, pipeline_root=str(run_dir / "pipeline_root"), workspace_root=str(out / "ws"),
                   raise_on_error=True)
        try:
            damoc_pipeline(**to_pipeline_arguments(cfg), output_uri=str(run_dir))
            ok = True
        finally:
            summary = {"ok": ok, "seconds": round(time.monotonic() - t0, 1), "tasks": record,
                       "component_image": args.component_image, "training_image": args.training_image}
            (out / "containers.json").write_text(json.dumps(summary, indent=2))
    selection = run_dir / "selection.json"
    if selection.exists():
        (out / "selection.json").write_text(selection.read_text())
    print(f"{len(record)} task containers, {summary['seconds']} s; {out / 'containers.json'}")
    return 0 if ok and all(t["exit_code"] == 0 for t in record) else 1


if __name__ == "__main__":
    sys.exit(main())
