"""Run the very same pipeline function on this machine through kfp.local (no cluster, no GPU)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from damoc.config import RunConfig
from damoc.config_params import to_pipeline_arguments


def run_local(cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Execute the pipeline with kfp.local's SubprocessRunner; returns the selection document.

    Task artifacts stay under OUT/pipeline_root (inspectable); selection.json and report.md are written
    to OUT by the rank task. A previous run's results in OUT are only replaced when this run succeeds.
    """
    from kfp import local

    from damoc_pipelines.damoc_pipeline import damoc_pipeline

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / "pipeline_root"
    shutil.rmtree(root, ignore_errors=True)  # artifacts of an earlier run: the results files are kept
    # kfp.local refuses a workspace path containing "kfp-workspace" and deletes it after the run.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(out / "workspace"), raise_on_error=True)
    staging = out / ".staging"
    damoc_pipeline(**to_pipeline_arguments(cfg), output_uri=str(staging))
    for name in ("selection.json", "report.md"):
        (staging / name).replace(out / name)
    shutil.rmtree(staging, ignore_errors=True)
    return json.loads((out / "selection.json").read_text())
