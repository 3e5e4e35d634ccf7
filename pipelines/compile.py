"""Compile the pipeline to KFP IR YAML (the file platform teams upload; kept in pipelines/compiled/)."""
from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
COMPILED_NAME = "damoc_pipeline.yaml"


def compile_pipeline(out_dir: str | Path = COMPILED_DIR) -> Path:
    from kfp import compiler

    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    out = Path(out_dir) / COMPILED_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(damoc_pipeline, package_path=str(out))
    return out


if __name__ == "__main__":
    print(compile_pipeline())
