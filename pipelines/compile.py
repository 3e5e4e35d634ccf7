"""Compile the pipeline to KFP IR YAML (the file platform teams upload; kept in pipelines/compiled/)."""
from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
COMPILED_NAME = "damoc_pipeline.yaml"


def compile_pipeline(out_dir: str | Path = COMPILED_DIR, resources=None) -> Path:
    """resources: a damoc.config.ResourcesConfig fixed into the YAML (None: the schema's defaults)."""
    from kfp import compiler

    from damoc_pipelines.damoc_pipeline import build_pipeline

    out = Path(out_dir) / COMPILED_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(resources), package_path=str(out))
    return out


if __name__ == "__main__":
    print(compile_pipeline())
