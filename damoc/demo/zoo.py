"""The built-in tiny model zoo: a few small causal LMs of different HF architectures, built offline on CPU.

Each candidate is saved as two standard HF checkpoints, `<name>/base` (causal-LM pretraining on generic
text) and `<name>/chat` (base + instruction tuning in the `format_prompt` format), so chat - base is a real
task vector for sparse merging. Two locally trained byte-level BPE tokenizers make the candidates differ
in tokenisation as real model families do. Everything is deterministic given the specs below.

Named suites (SUITES): "default" is the quickstart's four candidates in $DAMOC_HOME/zoo; "bench" adds EXTRA
(more architectures, one that layer pruning does not support) for the selection-fidelity benchmark, in
$DAMOC_HOME/zoo-bench, copying the default candidates from a complete default zoo instead of retraining them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from damoc import atomic
from damoc.paths import damoc_home

MANIFEST = "zoo.json"
MANIFEST_VERSION = 1
# bump when the data generators or the training recipe change: ensure_zoo then rebuilds stale zoos
BUILD_REVISION = 2
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}
# transformers' Qwen2Tokenizer pre-tokenizer regex (see TokenizerSpec.style)
QWEN_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# the prompt format as a chat template, for servers' /v1/chat/completions (system = instruction)
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}### Instruction:\n{{ m['content'] | trim }}\n\n"
    "{% elif m['role'] == 'user' %}### Input:\n{{ m['content'] | trim }}\n\n### Response:\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


@dataclass(frozen=True)
class TokenizerSpec:
    id: str
    vocab_size: int
    corpus_seed: int  # generic_text / generic_instructions seed the tokenizer (and its models) train on
    # "gpt2": GPT-2 byte-level regex, no normalisation. "qwen": NFC + Qwen2's regex (one token per digit,
    # punctuation glued to the next word) and an <|endoftext|> unk token, exactly the pipeline
    # transformers' Qwen2Tokenizer rebuilds: AutoTokenizer always loads qwen2 checkpoints with that class
    style: str = "gpt2"


@dataclass(frozen=True)
class CandidateSpec:
    name: str
    model_type: str
    config: dict[str, Any]
    tokenizer: str
    seed: int
    pretrain_steps: int
    chat_steps: int
    pretrain_lr: float = 3e-3
    chat_lr: float = 3e-3
    batch_size: int = 16
    block_size: int = 128

    @property
    def pretrain_tokens(self) -> int:
        return self.pretrain_steps * self.batch_size * self.block_size


TOKENIZERS: tuple[TokenizerSpec, ...] = (
    TokenizerSpec("bpe2k", vocab_size=2048, corpus_seed=0),
    TokenizerSpec("bpe3k", vocab_size=3000, corpus_seed=1, style="qwen"),
)

# head_dim 64 everywhere (vLLM's CPU kernels need >= 64); widths, depths and budgets differ on purpose so
# the candidates differ in quality after fine-tuning.
_COMMON = {"max_position_embeddings": 512, "tie_word_embeddings": False}
CANDIDATES: tuple[CandidateSpec, ...] = (
    CandidateSpec("tiny-llama", "llama", {**_COMMON, "hidden_size": 128, "num_hidden_layers": 4,
                                          "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 64,
                                          "intermediate_size": 256},
                  tokenizer="bpe2k", seed=11, pretrain_steps=150, chat_steps=460),
    CandidateSpec("tiny-qwen2", "qwen2", {**_COMMON, "hidden_size": 128, "num_hidden_layers": 6,
                                          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
                                          "intermediate_size": 256},
                  tokenizer="bpe3k", seed=12, pretrain_steps=110, chat_steps=420),
    CandidateSpec("tiny-mistral", "mistral", {**_COMMON, "hidden_size": 192, "num_hidden_layers": 4,
                                              "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 64,
                                              "intermediate_size": 384},
                  tokenizer="bpe3k", seed=13, pretrain_steps=110, chat_steps=380),
    CandidateSpec("tiny-neox", "gpt_neox", {**_COMMON, "hidden_size": 128, "num_hidden_layers": 5,
                                            "num_attention_heads": 2, "intermediate_size": 384},
                  tokenizer="bpe2k", seed=14, pretrain_steps=130, chat_steps=420),
)
CHAT_ROWS = 6000

# Extra candidates of the "bench" suite. Capacity and prior vary together so that no candidate dominates
# on every task: a deep-narrow gpt2 (8 layers of width 128), a shallow-wide phi (2 layers of width 256, the
# most parameters; model_type "phi" has no pruning spec: the benchmark's unprunable candidate), both with
# short stages, and a gemma2 (alternating sliding/full attention) with the least pretraining but the longest
# chat stage. head_dim 64 everywhere; each builds in about 2-3 minutes on one thread.
EXTRA: tuple[CandidateSpec, ...] = (
    CandidateSpec("tiny-gpt2", "gpt2", {"n_positions": 512, "tie_word_embeddings": False, "n_embd": 128,
                                        "n_layer": 8, "n_head": 2, "n_inner": 256,
                                        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
                  tokenizer="bpe2k", seed=15, pretrain_steps=110, chat_steps=280),
    CandidateSpec("tiny-phi", "phi", {**_COMMON, "hidden_size": 256, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 512},
                  tokenizer="bpe3k", seed=16, pretrain_steps=100, chat_steps=260),
    CandidateSpec("tiny-gemma2", "gemma2", {**_COMMON, "hidden_size": 128, "num_hidden_layers": 4,
                                            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
                                            "intermediate_size": 384, "query_pre_attn_scalar": 64,
                                            "sliding_window": 64},
                  tokenizer="bpe3k", seed=17, pretrain_steps=50, chat_steps=640),
)
SUITES: dict[str, tuple[CandidateSpec, ...]] = {"default": CANDIDATES, "bench": CANDIDATES + EXTRA}
DEFAULT_SUITE = "default"


def suite_candidates(suite: str = DEFAULT_SUITE) -> tuple[CandidateSpec, ...]:
    """The candidate specs of a named suite."""
    try:
        return SUITES[suite]
    except KeyError:
        raise ValueError(f"unknown zoo suite {suite!r}; available: {', '.join(SUITES)}") from None


def default_zoo_dir(suite: str = DEFAULT_SUITE) -> Path:
    """$DAMOC_HOME/zoo for the default suite, $DAMOC_HOME/zoo-<suite> for the others (else ~/.cache/damoc)."""
    suite_candidates(suite)
    return damoc_home() / ("zoo" if suite == DEFAULT_SUITE else f"zoo-{suite}")


def spec_hash(suite: str = DEFAULT_SUITE) -> str:
    """Fingerprint of every spec of the suite: a zoo built from other specs is rebuilt by ensure_zoo."""
    payload: dict[str, Any] = {"revision": BUILD_REVISION, "tokenizers": [asdict(t) for t in TOKENIZERS],
                               "candidates": [asdict(c) for c in suite_candidates(suite)], "chat_rows": CHAT_ROWS}
    if suite != DEFAULT_SUITE:  # the default payload is unchanged: existing default zoos stay valid
        payload["suite"] = suite
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# tokenizers
def _tokenizer_corpus(spec: TokenizerSpec) -> list[str]:
    from damoc.demo.data import generic_instructions, generic_text
    from damoc.training.prompt import format_prompt

    prompts = [format_prompt(r["instruction"], r["input"]) + r["output"]
               for r in generic_instructions(2000, seed=spec.corpus_seed)]
    return generic_text(150_000, seed=spec.corpus_seed) + prompts


def train_tokenizer(spec: TokenizerSpec):
    """A byte-level BPE trained on the spec's generic corpus, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    specials = dict(SPECIAL_TOKENS)
    if spec.style == "qwen":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials["unk_token"] = "<|endoftext|>"
    elif spec.style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        raise ValueError(f"tokenizer style {spec.style!r}: use 'gpt2' or 'qwen'")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=list(specials.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_tokenizer_corpus(spec), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast


# ----------------------------------------------------------------------------------------------------
# models and training
def make_model(spec: CandidateSpec, tok):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(spec.model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **spec.config)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(cfg)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return model


def _pretrain_blocks(tok, spec: TokenizerSpec, block_size: int, n_tokens: int):
    """The tokenizer's generic corpus as one eos-separated stream cut into (n, block_size) blocks."""
    import torch

    from damoc.demo.data import generic_text

    # ~1.3 tokens per word on this text; generate a little more than needed
    docs = generic_text(int(n_tokens / 1.2), seed=spec.corpus_seed + 100)
    stream: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tok.eos_token_id)
    n_blocks = len(stream) // block_size
    return torch.tensor(stream[: n_blocks * block_size]).view(n_blocks, block_size)


def _pretrain_batches(blocks, steps: int, batch_size: int, seed: int) -> Iterator[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(blocks), generator=g)
                       for _ in range(math.ceil(steps * batch_size / len(blocks)))])
    for step in range(steps):
        x = blocks[order[step * batch_size:(step + 1) * batch_size]]
        yield {"input_ids": x, "labels": x}


def _chat_examples(tok, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per row: loss only on the response and its eos."""
    from damoc.training.prompt import format_prompt

    prompts = tok([format_prompt(r["instruction"], r["input"]) for r in rows], add_special_tokens=False)["input_ids"]
    answers = tok([r["output"] for r in rows], add_special_tokens=False)["input_ids"]
    return [(p + a + [tok.eos_token_id], [-100] * len(p) + a + [tok.eos_token_id])
            for p, a in zip(prompts, answers)]


def _chat_batches(examples, steps: int, batch_size: int, pad_id: int, seed: int) -> Iterator[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picked = [examples[i] for i in torch.randint(len(examples), (batch_size,), generator=g).tolist()]
        width = max(len(ids) for ids, _ in picked)
        ids = torch.full((batch_size, width), pad_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (x, y) in enumerate(picked):  # right padding: positions are unaffected
            ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _train(model, batches: Iterator[dict], steps: int, lr: float, desc: str, progress: bool,
           position: int = 0) -> float:
    """AdamW with linear warm-up and cosine decay to 10%; returns the mean loss of the last 20 steps."""
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses: list[float] = []
    bar = tqdm(batches, total=steps, desc=desc, disable=not progress, leave=False, position=position)
    for batch in bar:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail)


def _save(model, tok, out: Path) -> None:
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _check_tokenizer_roundtrip(path: Path, tok) -> None:
    """AutoTokenizer picks its class from the model type (qwen2 -> Qwen2Tokenizer, which rebuilds its own
    pipeline): make sure what users load encodes exactly as the tokenizer the model was trained with."""
    from transformers import AutoTokenizer

    from damoc.demo.data import generate, generic_instructions
    from damoc.training.prompt import format_prompt

    loaded = AutoTokenizer.from_pretrained(path)
    rows = generic_instructions(20, seed=7) + [r for task in ("qa_long", "extractive_qa")
                                               for r in generate(task, n_train=10, n_eval=0)[0]]
    texts = [format_prompt(r["instruction"], r["input"]) + r["output"] for r in rows] + ["Caf\u00e9 \u2013 12,5 \uff11"]
    same = (len(loaded) == len(tok) and loaded.eos_token_id == tok.eos_token_id
            and loaded.pad_token_id == tok.pad_token_id and loaded.bos_token_id == tok.bos_token_id
            and loaded(texts, add_special_tokens=True)["input_ids"] == tok(texts, add_special_tokens=True)["input_ids"])
    if not same:
        raise RuntimeError(f"{path}: {type(loaded).__name__} from AutoTokenizer does not match the training tokenizer")


def _build_candidate(spec: CandidateSpec, root: Path, progress: bool, position: int = 0) -> dict[str, Any]:
    """Pretrain, save base, instruction-tune, save chat. Runs in a worker process on one thread."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from damoc.demo.data import generic_instructions

    t0 = time.perf_counter()
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    torch.set_num_threads(1)  # one thread per candidate: robust when the cores are shared, and deterministic
    tok_spec = next(t for t in TOKENIZERS if t.id == spec.tokenizer)
    tok = PreTrainedTokenizerFast.from_pretrained(root / "tokenizers" / spec.tokenizer)
    model = make_model(spec, tok)
    blocks = _pretrain_blocks(tok, tok_spec, spec.block_size, spec.pretrain_tokens)
    base_loss = _train(model, _pretrain_batches(blocks, spec.pretrain_steps, spec.batch_size, spec.seed),
                       spec.pretrain_steps, spec.pretrain_lr, f"{spec.name} base", progress, position)
    _save(model, tok, root / spec.name / "base")
    _check_tokenizer_roundtrip(root / spec.name / "base", tok)
    examples = _chat_examples(tok, generic_instructions(CHAT_ROWS, seed=0))
    chat_loss = _train(model, _chat_batches(examples, spec.chat_steps, spec.batch_size, tok.pad_token_id, spec.seed),
                       spec.chat_steps, spec.chat_lr, f"{spec.name} chat", progress, position)
    _save(model, tok, root / spec.name / "chat")
    return {"name": spec.name, "model_type": spec.model_type, "tokenizer": spec.tokenizer,
            "path": f"{spec.name}/chat", "base_path": f"{spec.name}/base",
            "num_layers": model.config.num_hidden_layers, "params": sum(p.numel() for p in model.parameters()),
            "hidden_size": model.config.hidden_size, "vocab_size": len(tok),
            "pretrain_tokens": spec.pretrain_tokens, "chat_steps": spec.chat_steps,
            "base_loss": round(base_loss, 4), "chat_loss": round(chat_loss, 4),
            "build_seconds": round(time.perf_counter() - t0, 1)}


def _estimated_cost(spec: CandidateSpec) -> float:
    """Rough training FLOPs, to start the most expensive candidates first (shortest overall build)."""
    c = spec.config
    vocab = next(t.vocab_size for t in TOKENIZERS if t.id == spec.tokenizer)
    h = c.get("hidden_size", c.get("n_embd"))  # gpt2 names its dimensions n_embd / n_layer / n_inner
    layers = c.get("num_hidden_layers", c.get("n_layer"))
    inner = c.get("intermediate_size", c.get("n_inner")) or 4 * h
    per_token = layers * (4 * h * h + 3 * h * inner) + vocab * h
    return per_token * (spec.pretrain_tokens + spec.chat_steps * spec.batch_size * 40)


def _remove_dead_builds(out_dir: Path) -> None:
    """Delete temporary build dirs left by killed builders (their pid no longer runs)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.building-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------------
# public API
def _copy_from_default(specs: tuple[CandidateSpec, ...], tmp: Path,
                       out_dir: Path | None = None) -> tuple[dict[str, dict], dict[str, int]]:
    """Copy the tokenizers and every candidate of `specs` whose spec is a default one from a complete default
    zoo (its spec_hash covers exactly those specs) into tmp: (manifest entries by name, vocab sizes by
    tokenizer id). Nothing is copied when the default zoo is absent, incomplete or stale."""
    src = default_zoo_dir(DEFAULT_SUITE).resolve()
    reused = [s for s in specs if s in CANDIDATES]
    if not reused or not _is_complete(src, DEFAULT_SUITE):
        return {}, {}
    # not while a default build replaces it; ensure_zoo already holds that lock when out_dir is the default dir
    with contextlib.nullcontext() if out_dir is not None and Path(out_dir).resolve() == src else _build_lock(src):
        if not _is_complete(src, DEFAULT_SUITE):
            return {}, {}
        manifest = load_manifest(src)
        entries = {c["name"]: c for c in manifest["candidates"]}
        if {t["id"] for t in manifest["tokenizers"]} != {t.id for t in TOKENIZERS}:
            return {}, {}
        shutil.copytree(src / "tokenizers", tmp / "tokenizers")
        for spec in reused:
            shutil.copytree(src / spec.name, tmp / spec.name)
        return ({s.name: {**entries[s.name], "copied_from": str(src)} for s in reused},
                {t["id"]: t["vocab_size"] for t in manifest["tokenizers"]})


def build_zoo(out_dir: Path, progress: bool = True, suite: str = DEFAULT_SUITE) -> Path:
    """Build every candidate of the suite into a temporary sibling of out_dir, then rename it into place, so
    an interrupted build never looks complete. Replaces an existing out_dir. A non-default suite copies its
    default candidates (and the tokenizers) from a complete default zoo instead of retraining them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    specs = suite_candidates(suite)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.perf_counter()
    try:
        copied, vocab_sizes = _copy_from_default(specs, tmp, out_dir) if suite != DEFAULT_SUITE else ({}, {})
        if not vocab_sizes:
            for t in TOKENIZERS:  # trained once here, loaded by every worker: all its models share it exactly
                tok = train_tokenizer(t)
                tok.save_pretrained(tmp / "tokenizers" / t.id)
                vocab_sizes[t.id] = len(tok)
        # candidates in parallel, one single-threaded process per core: tiny matmuls scale badly across
        # threads, and multi-threaded torch slows down sharply when other jobs share the cores
        order = sorted((s for s in specs if s.name not in copied), key=_estimated_cost, reverse=True)
        results = dict(copied)
        if order:
            workers = max(1, min(len(order), os.cpu_count() or 1))
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {spec.name: pool.submit(_build_candidate, spec, tmp, progress, i % workers)
                           for i, spec in enumerate(order)}
                results.update({name: f.result() for name, f in futures.items()})
        entries = [results[spec.name] for spec in specs]
        manifest = {"version": MANIFEST_VERSION, "suite": suite, "spec_hash": spec_hash(suite), "candidates": entries,
                    "tokenizers": [{**asdict(t), "vocab_size": vocab_sizes[t.id], "path": f"tokenizers/{t.id}"}
                                   for t in TOKENIZERS],
                    "build_seconds": round(time.perf_counter() - started, 1)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        atomic.replace_path(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        for e in entries:
            how = "copied" if e["name"] in copied else f"{e['build_seconds']:.0f}s"
            print(f"zoo: {e['name']:<13} {e['model_type']:<9} {e['params']:>9,} params  base loss "
                  f"{e['base_loss']:.3f}  chat loss {e['chat_loss']:.3f}  {how}", flush=True)
        print(f"zoo: built {len(entries) - len(copied)} candidates ({len(copied)} copied from the default zoo) "
              f"in {manifest['build_seconds']:.0f}s -> {out_dir}" if copied else
              f"zoo: built {len(entries)} candidates in {manifest['build_seconds']:.0f}s -> {out_dir}", flush=True)
    return out_dir


def load_manifest(zoo_dir: Path) -> dict:
    """The zoo's zoo.json; paths in it are relative to zoo_dir."""
    path = Path(zoo_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no zoo manifest; build the zoo with `damoc zoo build`") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}")
    return manifest


def _is_complete(zoo_dir: Path, suite: str = DEFAULT_SUITE) -> bool:
    try:
        manifest = load_manifest(zoo_dir)
    except (FileNotFoundError, ValueError):
        return False
    if manifest.get("spec_hash") != spec_hash(suite):
        return False
    return all((zoo_dir / c[key] / "config.json").is_file()
               for c in manifest["candidates"] for key in ("path", "base_path"))


@contextlib.contextmanager
def _build_lock(zoo_dir: Path) -> Iterator[None]:
    """Serialises builders across processes (parallel test runs, pipeline steps) on one zoo directory."""
    zoo_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(zoo_dir.parent / f".{zoo_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_zoo(out_dir: Path | None = None, progress: bool = True, suite: str = DEFAULT_SUITE) -> Path:
    """The complete zoo of the suite at out_dir (default: default_zoo_dir(suite)), building it first if
    absent or stale."""
    zoo_dir = Path(out_dir or default_zoo_dir(suite)).resolve()
    if _is_complete(zoo_dir, suite):
        return zoo_dir
    with _build_lock(zoo_dir):
        if not _is_complete(zoo_dir, suite):  # another process may have finished it while we waited
            build_zoo(zoo_dir, progress=progress, suite=suite)
    return zoo_dir
