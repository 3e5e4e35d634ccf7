"""Built-in sources for runs on a laptop or CI box: `zoo://NAME[/base]` and `demo://TASK/{train,eval}.jsonl`.

They resolve to the local zoo and demo data under $DAMOC_HOME (default ~/.cache/damoc), built on first use.
On a cluster, point the config at real checkpoints and data (local path in the image, s3://, hub id).
"""
from __future__ import annotations

from pathlib import Path

from damoc.config import ConfigError, RunConfig, did_you_mean
from damoc.paths import damoc_home

ZOO_SCHEME, DEMO_SCHEME = "zoo://", "demo://"
DEMO_SIZES = {"train": 3000, "eval": 300}


def _generator_version() -> str:
    """Hash of the demo generator's source: a changed generator never reuses stale cached data."""
    import hashlib

    import damoc.demo.data as demo

    return hashlib.sha256(Path(demo.__file__).read_bytes()).hexdigest()[:10]


def demo_data_dir(task: str) -> Path:
    from damoc.demo.data import write_demo

    out = damoc_home() / "demo" / f"{task}-{_generator_version()}"
    if not ((out / "train.jsonl").is_file() and (out / "eval.jsonl").is_file()):
        write_demo(task, out, n_train=DEMO_SIZES["train"], n_eval=DEMO_SIZES["eval"], seed=0)
    return out


def zoo_names() -> list[str]:
    """The names zoo:// accepts: the default suite's candidates (known without building the zoo)."""
    from damoc.demo.zoo import DEFAULT_SUITE, suite_candidates

    return [spec.name for spec in suite_candidates(DEFAULT_SUITE)]


def check_builtin_uri(uri: str) -> None:
    """Raise ConfigError for a zoo:// or demo:// reference that names nothing (by name only: nothing is built)."""
    if uri.startswith(ZOO_SCHEME):
        names = zoo_names()
        name, _, variant = uri.removeprefix(ZOO_SCHEME).partition("/")
        if name not in names:
            hint = did_you_mean(ZOO_SCHEME + name, [ZOO_SCHEME + n for n in names])
            raise ConfigError(f"{uri}: no such zoo model{hint}; available: "
                              f"{', '.join(ZOO_SCHEME + n for n in names)} (append /base for the base checkpoint)")
        if variant not in ("", "chat", "base"):
            raise ConfigError(f"{uri}: unknown zoo variant '{variant}'{did_you_mean(variant, ('base', 'chat'))}; "
                              f"use {ZOO_SCHEME}{name} (chat) or {ZOO_SCHEME}{name}/base")
    elif uri.startswith(DEMO_SCHEME):
        from damoc.demo.data import TASKS

        task, _, split = uri.removeprefix(DEMO_SCHEME).partition("/")
        if task not in TASKS or split not in ("train.jsonl", "eval.jsonl"):
            hint = did_you_mean(task, TASKS) if task not in TASKS else ""
            raise ConfigError(f"{uri}: expected demo://TASK/train.jsonl or demo://TASK/eval.jsonl{hint}, "
                              f"TASK one of {', '.join(TASKS)}")


def resolve_uri(uri: str) -> str:
    check_builtin_uri(uri)
    if uri.startswith(ZOO_SCHEME):
        from damoc.demo.zoo import default_zoo_dir, ensure_zoo, load_manifest

        name, _, variant = uri.removeprefix(ZOO_SCHEME).partition("/")
        zoo = ensure_zoo(default_zoo_dir())
        entries = {c["name"]: c for c in load_manifest(zoo)["candidates"]}
        if name not in entries:  # a zoo built by an older damoc without this candidate
            raise ConfigError(f"{uri}: not in the zoo at {zoo}; rebuild it: damoc zoo build --force")
        rel = entries[name]["base_path"] if variant == "base" else entries[name]["path"]
        return str(zoo / rel)
    if uri.startswith(DEMO_SCHEME):
        task, _, split = uri.removeprefix(DEMO_SCHEME).partition("/")
        return str(demo_data_dir(task) / split)
    return uri


def resolve_builtins(cfg: RunConfig) -> RunConfig:
    """A copy of `cfg` with every zoo:// and demo:// reference replaced by a local path."""
    data = cfg.data.model_copy(update={"train": resolve_uri(cfg.data.train), "eval": resolve_uri(cfg.data.eval)})
    candidates = [c.model_copy(update={"path": resolve_uri(c.path),
                                       "base_path": resolve_uri(c.base_path) if c.base_path else None})
                  for c in cfg.candidates]
    compression = cfg.compression
    if compression.scorer_model:
        compression = compression.model_copy(update={"scorer_model": resolve_uri(compression.scorer_model)})
    return cfg.model_copy(update={"data": data, "candidates": candidates, "compression": compression})
