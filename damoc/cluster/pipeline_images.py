"""The container image of each task family in a compiled pipeline package, read and rewritten.

Two families: `training` (the GPU tasks: fine-tune and evaluate, on the CUDA training image) and
`component` (every other task, on the CPU component image). The compiled package fixes them at compile time
(damoc_components.images); `damoc upload --image-component/--image-training` rewrites a package per family,
so a registry mirror or a new tag needs no recompilation. Kept free of kfp imports: only the YAML changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("component", "training")
TRAINING_TASKS = ("finetune-model", "evaluate-model")
_EXEC_PREFIX = "exec-"


def family_of(executor: str) -> str:
    return "training" if executor.removeprefix(_EXEC_PREFIX) in TRAINING_TASKS else "component"


def _docs(text: str) -> list[Any]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if not docs or "deploymentSpec" not in docs[0]:
        raise ValueError("not a compiled KFP pipeline package (no deploymentSpec in its first document)")
    return docs


def _executors(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["deploymentSpec"].get("executors") or {}


def images(text: str) -> dict[str, str]:
    """{executor name: image} of a compiled package's text."""
    return {name: e["container"]["image"] for name, e in _executors(_docs(text)[0]).items() if "container" in e}


def set_images(text: str, *, component: str | None = None, training: str | None = None) -> str:
    """The package with each family's image replaced (None keeps it); the text is unchanged when nothing is."""
    wanted = {"component": component, "training": training}
    for family, image in wanted.items():
        if image is not None and (not image.strip() or any(c.isspace() for c in image)):
            raise ValueError(f"--image-{family}: {image!r} is not an image reference (e.g. "
                             "registry.example.com/ml/damoc-train:0.1.0)")
    if component is None and training is None:
        return text
    docs = _docs(text)
    for name, executor in _executors(docs[0]).items():
        image = wanted[family_of(name)]
        if image is not None and "container" in executor:
            executor["container"]["image"] = image
    return yaml.safe_dump_all(docs, sort_keys=False)


def rewrite_package(package: Path, out: Path, *, component: str | None = None,
                    training: str | None = None) -> Path:
    """Write the package with the given images to `out` (the input when no image is given)."""
    text = package.read_text(encoding="utf-8")
    new = set_images(text, component=component, training=training)
    if new == text:
        return package
    out.write_text(new, encoding="utf-8")
    return out
