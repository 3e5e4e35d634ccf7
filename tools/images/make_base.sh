#!/usr/bin/env bash
# Local base images for `make images` where no container registry is reachable (docs: docker/README.md):
#   localhost/bookworm-python:3.11  Debian bookworm (minbase) + python3.11, venv, pip, ca-certificates,
#                                   built by mmdebstrap from Debian's packages and `podman import`ed;
#                                   stands in for python:3.11.14-slim-bookworm (component image) and for
#                                   the CUDA bases of the training image (CUDA comes from torch's wheels).
#   localhost/uv:<version>          the uv binary from PyPI's uv wheel (the same static binary as
#                                   ghcr.io/astral-sh/uv), at /uv as in the upstream image.
# Idempotent: an image that exists is kept (FORCE=1 rebuilds). Needs root, mmdebstrap, podman, buildah.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-python:3.11}
UV_VERSION=${UV_VERSION:-0.13.9}
UV_IMAGE=${UV_IMAGE:-localhost/uv:$UV_VERSION}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

exists() { podman image exists "$1" && [[ -z "${FORCE:-}" ]]; }

if exists "$BASE_IMAGE"; then
  echo "base: $BASE_IMAGE exists"
else
  t0=$SECONDS
  # --variant=minbase: essential + apt only; python3-pip brings the wheel/setuptools Debian ships.
  mmdebstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    --aptopt='Acquire::Retries "3"' "$SUITE" "$work/rootfs.tar" "$MIRROR" >"$work/mmdebstrap.log" 2>&1 \
    || { tail -20 "$work/mmdebstrap.log"; exit 1; }
  podman import -q --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' \
    "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
  echo "base: $BASE_IMAGE built in $((SECONDS - t0)) s"
fi

if exists "$UV_IMAGE"; then
  echo "uv: $UV_IMAGE exists"
else
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 -d "$work/uv" "uv==$UV_VERSION"
  python3 -m zipfile -e "$work"/uv/uv-*.whl "$work/uv/x"
  ctr=$(buildah from scratch)
  buildah copy --chmod 0755 "$ctr" "$(find "$work/uv/x" -path '*/scripts/uv' -type f)" /uv >/dev/null
  buildah config --entrypoint '["/uv"]' "$ctr"
  buildah commit -q "$ctr" "$UV_IMAGE" >/dev/null
  buildah rm "$ctr" >/dev/null
  echo "uv: $UV_IMAGE built"
fi
