"""`helm test` check of the vLLM rewriter: the Service answers a real completion, and only with the API key.

Runs in the component image (standard library only): GET <url>/models must list the served model, POST
<url>/completions must return a choice, and the same request without the key must be refused (401/403).
    python -c "<this file>" --url http://<svc>.<ns>.svc:8000/v1 --model rewriter   (key: $DAMOC_REWRITER_API_KEY)
Exit 0 = all three hold; 1 = the first that failed is printed.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def call(url, key, body=None, timeout=60.0):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def main(argv):
    p = argparse.ArgumentParser(prog="rewriter-test")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    key = os.environ.get("DAMOC_REWRITER_API_KEY", "")
    base = a.url.rstrip("/")
    try:
        code, models = call(f"{base}/models", key, timeout=a.timeout)
        served = [m.get("id") for m in models.get("data") or []]
        if code != 200 or a.model not in served:
            print(f"FAIL: GET {base}/models answered {code} with models {served}, not {a.model!r}")
            return 1
        body = {"model": a.model, "prompt": "Reply with OK.", "max_tokens": 4, "temperature": 0}
        code, out = call(f"{base}/completions", key, body, timeout=a.timeout)
        choices = out.get("choices") or []
        if code != 200 or not choices:
            print(f"FAIL: POST {base}/completions answered {code} with {len(choices)} choice(s)")
            return 1
        code, _ = call(f"{base}/completions", "", body, timeout=a.timeout)
        if code not in (401, 403):
            print(f"FAIL: a request without the API key was answered {code}, not refused")
            return 1
    except (urllib.error.URLError, OSError, ValueError) as err:
        print(f"FAIL: {base} unreachable: {type(err).__name__}: {err}")
        return 1
    print(f"OK: {a.model} at {base} completed {choices[0].get('text', '')!r}; unauthenticated requests refused")
    return 0


sys.exit(main(sys.argv[1:]))
