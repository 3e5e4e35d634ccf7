#!/usr/bin/env bash
# Build the component and training images where no container registry or Docker engine is reachable
# (docker/README.md, "Building here"): Debian's buildah builds `make images` on local bases.
#   1. podman, buildah, runc, mmdebstrap from Debian (apt-get, if missing; needs root)
#   2. local bases: localhost/bookworm-python:3.11, localhost/uv:<v> (tools/images/make_base.sh)
#   3. torch's +cpu wheel: served on 127.0.0.1 from TORCH_WHEEL_DIR when it lies on disk (as pip's
#      find-links here), else the PyTorch CPU index
#   4. make images IMAGE_BUILD="buildah bud --isolation chroot --layers" PUSH=0 IMAGES="$IMAGES"
# Timings go to stdout ("build <image>: N s"). Layers stay cached in containers-storage between runs.
# Env: REGISTRY (localhost/damoc-project), TAG (0.1.0), IMAGES ("component train"), TORCH_WHEEL_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
REGISTRY=${REGISTRY:-localhost/damoc-project}
TAG=${TAG:-0.1.0}
IMAGES=${IMAGES:-component train}
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-python:3.11}
UV_IMAGE=${UV_IMAGE:-localhost/uv:0.13.9}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}

if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null \
   || ! command -v runc >/dev/null; then
  echo "installing podman buildah runc mmdebstrap (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap >/dev/null
fi
BASE_IMAGE=$BASE_IMAGE UV_IMAGE=$UV_IMAGE tools/images/make_base.sh

# torch +cpu: a one-package index (pip reads the directory listing of /torch/) on a loopback port.
torch_index=https://download.pytorch.org/whl/cpu
wheel=$(ls "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
if [[ -n "$wheel" ]]; then
  idx=$(mktemp -d)
  mkdir "$idx/torch" && ln -s "$wheel" "$idx/torch/"
  # A fixed port: the index URL is a build argument, and a changed value would miss the layer cache.
  port=${TORCH_INDEX_PORT:-18731}
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$idx" >/dev/null 2>&1 &
  server=$!
  sleep 1; kill -0 "$server" 2>/dev/null || { echo "port $port busy: set TORCH_INDEX_PORT" >&2; exit 1; }
  trap 'kill "$server" 2>/dev/null; rm -rf "$idx"' EXIT
  torch_index=http://127.0.0.1:$port/
fi

# RUN steps trust the host's CA store (a TLS-inspecting egress proxy adds its CA there); it is mounted
# for the build only, never copied into an image.
build="buildah bud --isolation chroot --layers --format oci -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
for image in $IMAGES; do
  t0=$SECONDS
  nice -n 10 make --no-print-directory "image-$image" IMAGE_BUILD="$build" PUSH=0 REGISTRY="$REGISTRY" TAG="$TAG" \
    PYTHON_IMAGE="$BASE_IMAGE" TORCH_INDEX_URL="$torch_index" \
    CUDA_DEVEL_IMAGE="$BASE_IMAGE" CUDA_RUNTIME_IMAGE="$BASE_IMAGE" UV_IMAGE="$UV_IMAGE" \
    TRAIN_BUILD_ARGS="--build-arg DS_PREBUILD_OPS=0"
  echo "build $image: $((SECONDS - t0)) s"
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$REGISTRY/" || true
