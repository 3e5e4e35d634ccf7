"""A pruned checkpoint is a normal checkpoint that the real vLLM OpenAI server (CPU, its own venv:
tools/vllm/make_venv.sh) serves: the zoo's tiny-llama chat (head_dim 64, 4 layers; vLLM-CPU needs head_dim >= 64)
pruned by the damoc method (against its base) and by LaCo, each served, and vLLM's greedy continuation of a
prompt must equal the one transformers computes on the same pruned checkpoint, token for token and in
log-probability. A server that
read the layer count or the renumbered layers wrongly would continue differently. Slow: one cold start
(~60 s) per checkpoint; run by `make test-vllm`."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "vllm"))

pytestmark = pytest.mark.slow
PROMPT = "### Instruction:\nAnswer the medical question.\n\n### Input:\nWhat is a fever?\n\n### Response:\n"
NEW_TOKENS = 8


def _hf_greedy(model_dir: Path, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    """Plain argmax decoding with full forwards (no cache, no EOS stop): the reference continuation and the
    log-probability of each chosen token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids, logprobs = list(prompt_ids), []
    with torch.inference_mode():
        for _ in range(NEW_TOKENS):
            log_softmax = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            ids.append(int(log_softmax.argmax()))
            logprobs.append(float(log_softmax[ids[-1]]))
    return ids[len(prompt_ids):], logprobs


def _vllm_greedy(server, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    body = json.dumps({"model": server.model, "prompt": prompt_ids, "max_tokens": NEW_TOKENS, "temperature": 0,
                       "ignore_eos": True, "return_token_ids": True, "logprobs": 0}).encode()
    request = urllib.request.Request(server.base_url + "/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        choice = json.loads(response.read())["choices"][0]
    return list(choice["token_ids"]), [float(v) for v in choice["logprobs"]["token_logprobs"]]


def _prune(method: str, zoo_dir: Path, out: Path) -> dict:
    from damoc.pruning.laco import LacoSettings, laco_prune_checkpoint
    from damoc.pruning.prune import prune_checkpoint

    chat, base = zoo_dir / "tiny-llama" / "chat", zoo_dir / "tiny-llama" / "base"
    texts = [PROMPT + "A raised body temperature.", PROMPT.replace("a fever", "a cough") + "A reflex."]
    if method == "damoc":
        return prune_checkpoint(str(chat), str(base), texts, out, rule="fraction", target_fraction=0.25,
                                device="cpu")
    return laco_prune_checkpoint(str(chat), texts, out, device="cpu",
                                 settings=LacoSettings(layers_per_merge=2, threshold=-1.0, lowest_layer=1))


@pytest.mark.parametrize("method", ["damoc", "laco"])
def test_vllm_serves_a_pruned_checkpoint(method, zoo_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from serve import VLLMServer

    if os.environ.get("DAMOC_SKIP_VLLM"):
        pytest.skip("DAMOC_SKIP_VLLM set")
    out = tmp_path / f"pruned-{method}"
    stats = _prune(method, zoo_dir, out)
    assert stats["num_layers_before"] == 4 and stats["num_layers_after"] == 3
    assert AutoConfig.from_pretrained(out).head_dim >= 64
    prompt_ids = AutoTokenizer.from_pretrained(out)(PROMPT)["input_ids"]
    expected, expected_logprobs = _hf_greedy(out, prompt_ids)

    server = VLLMServer(str(out), max_model_len=512,
                        startup_timeout_s=float(os.environ.get("DAMOC_VLLM_STARTUP_S", "400")))
    server.start()
    try:
        assert isinstance(server.complete("What is a fever?", max_tokens=8), str)  # the chat endpoint too
        served, served_logprobs = _vllm_greedy(server, prompt_ids)
    finally:
        server.stop()
    assert server.proc.poll() is not None  # stopped by pid
    print(method, stats["pruned_layers"], "hf", expected, expected_logprobs, "vllm", served, served_logprobs)
    assert served == expected
    # the same numbers, not just the same argmax: a model with a layer too many or too few would differ here
    assert served_logprobs == pytest.approx(expected_logprobs, abs=2e-3)
