"""Compile the pipeline to KFP IR YAML (the file platform teams upload; kept in pipelines/compiled/)."""
from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
COMPILED_NAME = "damoc_pipeline.yaml"


def compile_pipeline(out_dir: str | Path = COMPILED_DIR, resources=None, *, component_image: str | None = None,
                     training_image: str | None = None) -> Path:
    """resources: a damoc.config.ResourcesConfig fixed into the YAML (None: the schema's defaults).

    component_image / training_image: the image of each task family (damoc.cluster.pipeline_images); None keeps
    the one the components were built with ($DAMOC_IMAGE / $DAMOC_TRAINING_IMAGE when first imported, else the
    defaults in damoc_components.images).
    """
    from kfp import compiler

    from damoc.cluster.pipeline_images import set_images
    from damoc_pipelines.damoc_pipeline import build_pipeline

    out = Path(out_dir) / COMPILED_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(resources), package_path=str(out))
    if component_image or training_image:
        out.write_text(set_images(out.read_text(encoding="utf-8"), component=component_image,
                                  training=training_image), encoding="utf-8")
    return out


if __name__ == "__main__":
    print(compile_pipeline())
