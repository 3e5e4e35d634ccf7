"""Container image of every DaMoC component (built from docker/Dockerfile).

One setting: `DAMOC_IMAGE` in the environment at compile time (e.g. a private registry mirror) overrides the
default; the committed compiled pipeline uses the default.
"""
import os

DEFAULT_IMAGE = "ghcr.io/damoc-project/damoc:0.1.0"
DAMOC_IMAGE = os.environ.get("DAMOC_IMAGE") or DEFAULT_IMAGE
