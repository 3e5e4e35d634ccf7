"""Shared fixtures: small checkpoints built offline in seconds (random weights, locally trained tokenizer).

Stage tests that need *trained* behaviour use the demo zoo (`zoo_dir`), built once per machine into
.cache/zoo by `damoc zoo build` (the Makefile does it before the tests).
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Same default as the CLI (see damoc.cli._default_threads): set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))

REPO = Path(__file__).resolve().parents[1]

_CORPUS = [
    "the patient reported a mild headache and was given rest and fluids",
    "what is the capital of the northern province and how large is it",
    "answer the question using the context given below in one short sentence",
    "a river flows through the old town past the market and the bridge",
    "the treatment reduces fever within two days in most adults",
] * 40


def _train_tokenizer(out_dir: Path, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    _train_tokenizer(out)
    return out


def build_random_pair(out_dir: Path, tokenizer_dir: Path, model_type: str = "llama", layers: int = 6,
                      seed: int = 0) -> tuple[Path, Path]:
    """A base checkpoint with random weights and a 'chat' one = base + small random task vector."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    if model_type == "gpt_neox":
        cfg = AutoConfig.for_model("gpt_neox", hidden_size=128, num_hidden_layers=layers, num_attention_heads=2,
                                   intermediate_size=256, max_position_embeddings=256, **common)
    elif model_type == "gpt2":
        cfg = AutoConfig.for_model("gpt2", n_embd=128, n_layer=layers, n_head=2, n_positions=256, **common)
    else:
        cfg = AutoConfig.for_model(model_type, hidden_size=128, num_hidden_layers=layers, num_attention_heads=2,
                                   num_key_value_heads=2 if model_type != "qwen2" else 1, intermediate_size=256,
                                   max_position_embeddings=256, head_dim=64, **common)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(cfg)
    base_dir, chat_dir = out_dir / "base", out_dir / "chat"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.01 * torch.randn_like(p))
    base.save_pretrained(chat_dir)
    tok.save_pretrained(chat_dir)
    return base_dir, chat_dir


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tiny_tokenizer_dir) -> tuple[Path, Path]:
    """(base_dir, chat_dir) of a 6-layer random Llama."""
    return build_random_pair(tmp_path_factory.mktemp("pair"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """The demo zoo; built on first use (the Makefile builds it before the tests run)."""
    from damoc.demo.zoo import default_zoo_dir, ensure_zoo

    return ensure_zoo(default_zoo_dir())


@pytest.fixture(scope="session", autouse=True)
def _session_stage_cache(tmp_path_factory):
    """`damoc run` resumes from the stage cache by default: tests start from an empty one of their own, so they
    exercise the stages instead of reusing outputs from an earlier session (or filling the shared DAMOC_HOME)."""
    os.environ.setdefault("DAMOC_STAGE_CACHE_DIR", str(tmp_path_factory.mktemp("stage-cache")))


@contextlib.contextmanager
def _moto_server() -> Iterator[int]:
    """A real S3-protocol server (moto) on a free 127.0.0.1 port for the duration of the block."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield port
    finally:
        server.stop()


@pytest.fixture(scope="session")
def start_moto():
    """`with start_moto() as port:` — a fresh moto S3 server (each test module gets its own, empty one)."""
    return _moto_server


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: with 2+ threads on a shared, loaded CPU, thread sync costs ~100x the compute."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _task_starts_allowed_again():
    """A stopped run leaves pipelines.local_runner refusing new task processes (in a CLI process, kfp.local's
    loop threads must not go on after Ctrl-C); tests share one process, so each test starts allowed."""
    yield
    import sys

    runner = sys.modules.get("damoc_pipelines.local_runner")
    if runner is not None and runner._refusing.is_set():
        import subprocess

        from kfp.local import subprocess_task_handler

        runner._refusing.clear()
        subprocess_task_handler.subprocess = subprocess
