"""Real vLLM (CPU) as the rewriter: a cached separate venv (tools/vllm/make_venv.sh, ~3.5 GB once), the OpenAI
server on 127.0.0.1 with a tiny zoo chat model, a real completion before use, compression with rewriting
through it, and the server stopped by its pid also when the test fails. Slow: cold start ~60 s."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "vllm"))

pytestmark = pytest.mark.slow
# The tiny zoo model has 512 positions and a 3k-vocab tokenizer: the default prompt (~550 tokens with one
# example) does not fit, so this test uses a short instruction and no examples.
SHORT_PROMPT = ("Shorten the example, same meaning, at most {tolerance:.0%} over the stated words. Reply as "
                "[Question] ... [Answer] ...")


@pytest.fixture(scope="module")
def vllm_server(zoo_dir):
    from serve import VLLMServer

    if os.environ.get("DAMOC_SKIP_VLLM"):
        pytest.skip("DAMOC_SKIP_VLLM set")
    server = VLLMServer(str(zoo_dir / "tiny-llama" / "chat"), max_model_len=512,
                        startup_timeout_s=float(os.environ.get("DAMOC_VLLM_STARTUP_S", "400")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert server.proc.poll() is not None  # stopped by pid


def test_real_vllm_completion_and_rewriting(vllm_server, zoo_dir):
    from damoc.compression import compress_dataset
    from damoc.data.schema import Sample

    assert isinstance(vllm_server.complete("What is a fever?", max_tokens=16), str)
    samples = [Sample(f"v{i}", "Answer the medical question.",
                      f"What should patient {i} with a mild headache do?",
                      "Rest, drink fluids, and take a mild pain reliever.") for i in range(4)]
    out, stats = compress_dataset(samples, scorer_model=str(zoo_dir / "tiny-llama" / "chat"), rate=0.4,
                                  bertscore_threshold=0.99, rewriter="openai", rewrite_rounds=2, rewrite_examples=0,
                                  rewrite_system_prompt=SHORT_PROMPT,
                                  rewriter_options={"base_url": vllm_server.base_url, "model": vllm_server.model,
                                                    "timeout_s": 60, "max_tokens": 64, "concurrency": 4},
                                  gate_failure="best_attempt")
    assert len(out) == 4 and [o.id for o in out] == [s.id for s in samples]
    assert stats["rewrite_rounds"] and stats["rewrite_rounds"][0]["tried"] == 4
    assert stats["rewrite_rounds"][0]["no_reply"] == 0  # every request got a real answer
    assert stats["rewritten"] + stats["still_failing"] + stats["passed_gate"] == 4
    print(stats["rewrite_rounds"], stats["gate_pass_rate"], stats["token_ratio"])


def test_server_stopped_by_pid_on_failure(zoo_dir, tmp_path):
    """A server whose body raises is still stopped (context manager): checked with a bogus model dir, which
    must fail fast and leave no process behind."""
    from serve import VLLMServer

    server = VLLMServer(str(tmp_path / "missing"), startup_timeout_s=120)
    with pytest.raises((RuntimeError, TimeoutError)):
        server.start()
    assert server.proc.poll() is not None
