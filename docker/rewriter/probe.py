"""Startup/readiness probe of the vLLM rewriter: one real completion, not just /health.

vLLM answers /health with 200 before a request can succeed (e.g. a model whose kernels fail on the
first forward pass), so the probe posts a 1-token completion to /v1/completions and requires a choice
back. Standard library only; the API key is read from VLLM_API_KEY (the same Secret the server uses).

    python3 /opt/damoc/bin/probe.py [--port 8000] [--model NAME] [--timeout 20]
Exit 0 = serving, 1 = not (yet).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=int(os.environ.get("VLLM_PORT", "8000")))
    p.add_argument("--model", default=os.environ.get("DAMOC_REWRITER_MODEL_NAME", "rewriter"))
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args(argv)
    body = json.dumps({"model": args.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{args.port}/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    key = os.environ.get("VLLM_API_KEY", "")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            choices = json.loads(resp.read()).get("choices") or []
    except (urllib.error.URLError, OSError, ValueError) as err:
        print(f"not ready: {type(err).__name__}: {getattr(err, 'code', '') or err}", file=sys.stderr)
        return 1
    if not choices:
        print("not ready: completion returned no choices", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
