"""The pinned Kubeflow CRDs the tests validate generated objects against (tests/data/crds; $DAMOC_CRD_DIR first)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

#: Where a CRD is looked for: $DAMOC_CRD_DIR, then the copies shipped as test data.
CRD_DIRS = [os.environ.get("DAMOC_CRD_DIR", ""), str(Path(__file__).parent / "data" / "crds")]


def crd_path(file: str) -> Path:
    for folder in filter(None, CRD_DIRS):
        if (Path(folder) / file).exists():
            return Path(folder) / file
    pytest.skip(f"CRD schema {file} not found in {CRD_DIRS}")


def strict(schema: Any) -> Any:
    """The structural schema with unknown fields rejected (what the API server prunes; kubectl --strict)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema
