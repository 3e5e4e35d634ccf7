"""Container image used by every DaMoC component (built from docker/Dockerfile)."""

DAMOC_IMAGE = "ghcr.io/damoc-project/damoc:0.1.0"
