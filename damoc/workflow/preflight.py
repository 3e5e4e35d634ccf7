"""Cheap checks before any work, shared by `damoc validate`, `damoc run --dry-run` and `damoc run`.

check_references: zoo:// and demo:// names exist (by name: nothing is built), every local candidate checkpoint
(and the scorer model) is a directory with a config.json and tokenizer files. check_checkpoints: those configs
load with transformers' AutoConfig (metadata only, never weights), s3:// checkpoints have a config.json (one
stat, when S3 credentials are set; else a note), hub ids are looked up in the local hub cache only.

pruning_warnings: which candidates a DaMoC stage will not be able to handle. By default (pruning.on_unsupported:
unpruned) such candidates are never dropped: they are trained unpruned and flagged, and the user learns it in
seconds, from `damoc validate`/`damoc run` and the pipeline's first task, instead of from the ranking hours
later. With on_unsupported: fail, a candidate whose architecture pruning does not know stops the run right
there (ConfigError: the config-validation task fails, the CLI exits 2), before any data stage has run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from damoc.config import ConfigError, RunConfig
from damoc.workflow.stage_switches import pruning_enabled
from damoc.workflow.step_runner import error_summary


# Any one of these makes a tokenizer AutoTokenizer can build (fast or slow, BPE, SentencePiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tiktoken.model", "tekken.json")
BUILTIN_SCHEMES = ("zoo://", "demo://")


@dataclass(frozen=True)
class ModelRef:
    """One checkpoint the run will open: the config key that names it, and what it must provide."""

    key: str
    uri: str
    needs_tokenizer: bool
    trust_remote_code: bool = False


def model_refs(cfg: RunConfig) -> list[ModelRef]:
    """Every checkpoint the run opens, once each (training.method: both repeats a candidate's paths)."""
    refs: list[ModelRef] = []
    for cand in cfg.candidates:
        refs.append(ModelRef(f"candidates[{cand.name}].path", cand.path, True, cand.trust_remote_code))
        if cand.base_path:  # pruning merges its weights; the scorer may be it (tokenizer checked then)
            refs.append(ModelRef(f"candidates[{cand.name}].base_path", cand.base_path, False,
                                 cand.trust_remote_code))
    if cfg.compression.enabled and cfg.mode == "damoc":  # null scorer_model: the first candidate's base/chat
        explicit = bool(cfg.compression.scorer_model)
        refs.append(ModelRef("compression.scorer_model", cfg.scorer_model_path(), True,
                             False if explicit else cfg.candidates[0].trust_remote_code))
    seen: dict[str, ModelRef] = {}
    for ref in refs:  # one check per checkpoint; a tokenizer is needed if any use needs it
        old = seen.get(ref.uri)
        if old is None:
            seen[ref.uri] = ref
            continue
        key = old.key
        if ref.needs_tokenizer and not old.needs_tokenizer:  # say why a base checkpoint needs a tokenizer
            key += f" (also {ref.key})"
        seen[ref.uri] = ModelRef(key, old.uri, old.needs_tokenizer or ref.needs_tokenizer,
                                 old.trust_remote_code or ref.trust_remote_code)
    return list(seen.values())


def local_checkpoint(uri: str) -> Path | None:
    """The directory a local checkpoint reference names, or None for s3://, zoo:// and hub ids (org/name).
    The same rule as the tasks' model_sources.resolve_model_source: an existing path, or one that is clearly
    a path (absolute, ./, ../, ~, file://, or more than one '/')."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    local = uri.removeprefix("file://")
    if Path(local).exists() or uri.startswith(("/", ".", "~", "file://")) or uri.count("/") > 1:
        return Path(local).expanduser()
    return None


def _local_problem(ref: ModelRef, path: Path) -> str | None:
    where = f"{ref.key}: {ref.uri}"
    if ref.uri.startswith("~"):  # the tasks open the path as given (model_sources): the shell's ~ is not theirs
        return f"{where}: '~' is not expanded here; give the absolute path ({path})"
    if not path.exists():
        return f"{where}: checkpoint not found (a local directory, s3://bucket/prefix, zoo://NAME or a hub id)"
    if not path.is_dir():
        return f"{where}: is a file; a checkpoint is a directory with config.json"
    config = path / "config.json"
    if not config.is_file():
        return f"{where}: no config.json: not a Hugging Face checkpoint directory"
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{where}: config.json is not valid JSON ({err})"
    if not isinstance(doc, dict):
        return f"{where}: config.json is not a JSON object"
    if ref.needs_tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        return (f"{where}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer with "
                "the model (tokenizer.save_pretrained)")
    return None


def check_references(cfg: RunConfig) -> list[str]:
    """Problems found without importing transformers or touching the network (milliseconds): unknown zoo://
    and demo:// names, and local checkpoints that are missing, lack config.json or tokenizer files."""
    from damoc.demo.builtin import check_builtin_uri

    problems: list[str] = []
    for key, uri in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        try:
            check_builtin_uri(uri)
        except ConfigError as err:
            problems.append(f"{key}: {err}")
    for ref in model_refs(cfg):
        if ref.uri.startswith(BUILTIN_SCHEMES):
            try:
                check_builtin_uri(ref.uri)
            except ConfigError as err:
                problems.append(f"{ref.key}: {err}")
            continue
        path = local_checkpoint(ref.uri)
        problem = _local_problem(ref, path) if path is not None else None
        if problem:
            problems.append(problem)
    for key, uri in (("filter.embedding_model", cfg.filter.embedding_model),
                     ("compression.gate_model", cfg.compression.gate_model)):  # sentence-transformers dirs
        path = local_checkpoint(uri) if uri else None
        if path is not None and not path.is_dir():
            problems.append(f"{key}: {uri}: directory not found (null: the shipped all-MiniLM-L6-v2)")
    return problems


@dataclass
class CheckpointReport:
    problems: list[str]
    notes: list[str]  # what could not be checked here, and why
    s3_unchecked: list[str]  # s3:// references not checked: no S3 credentials in this environment

    def all_notes(self, more_s3: list[str] = ()) -> list[str]:
        """The notes, the s3:// references not checked (these and `more_s3`) folded into one."""
        unchecked = [*self.s3_unchecked, *more_s3]
        return self.notes + ([f"not checked, no S3 endpoint/credentials in this environment (the pipeline's "
                              f"tasks need them): {', '.join(unchecked)}"] if unchecked else [])


def _autoconfig_problem(ref: ModelRef, path: Path) -> str | None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(path), trust_remote_code=ref.trust_remote_code)
    except Exception as err:  # noqa: BLE001 — any reason transformers cannot read it is the user's to fix
        reason = " ".join(str(err).split())[:300]
        return f"{ref.key}: {ref.uri}: transformers cannot load its config.json ({type(err).__name__}: {reason})"
    return None


def _s3_problem(ref: ModelRef, unchecked: list[str]) -> str | None:
    from damoc import storage

    try:
        storage.s3_settings_from_env()
    except storage.StorageError:
        unchecked.append(ref.key)
        return None
    try:
        if not storage.exists(ref.uri.rstrip("/") + "/config.json"):
            return f"{ref.key}: {ref.uri}: no config.json under this prefix: not a checkpoint"
    except storage.StorageError as err:
        return f"{ref.key}: {err}"
    return None


def _hub_note(ref: ModelRef) -> str | None:
    from transformers import AutoConfig

    try:  # the local hub cache only: a check never waits on the network
        AutoConfig.from_pretrained(ref.uri, local_files_only=True, trust_remote_code=ref.trust_remote_code)
    except Exception:  # noqa: BLE001 — not cached: the task that opens it downloads it (or fails there)
        return (f"{ref.key}: {ref.uri}: a hub id not in the local hub cache: not checked (the tasks download "
                "it; offline they cannot)")
    return None


def check_checkpoints(cfg: RunConfig) -> CheckpointReport:
    """The checks that read a checkpoint's metadata (seconds: transformers is imported once): AutoConfig on
    local checkpoints, a config.json stat on s3:// ones, the hub cache for hub ids. zoo:// names are checked
    by check_references; the zoo is built by damoc itself, and complete or rebuilt."""
    report = CheckpointReport([], [], [])
    for ref in model_refs(cfg):
        if ref.uri.startswith(BUILTIN_SCHEMES):
            continue
        if ref.uri.startswith("s3://"):
            problem = _s3_problem(ref, report.s3_unchecked)
        elif (path := local_checkpoint(ref.uri)) is not None:
            problem = _autoconfig_problem(ref, path)
        else:
            note = _hub_note(ref)
            problem = None
            if note:
                report.notes.append(note)
        if problem:
            report.problems.append(problem)
    return report


def pruning_warnings(cfg: RunConfig) -> list[str]:
    """One line per candidate that will be trained unpruned (reads config.json only; no weights).

    Raises ConfigError naming the candidate, its architecture and the supported list when
    pruning.on_unsupported is "fail" and a candidate's architecture cannot be pruned.
    """
    if not pruning_enabled(cfg):
        return []
    from damoc.pruning.architectures import UnsupportedArchitectureError, check_architecture

    warnings = []
    for cand in cfg.candidates:
        if cfg.pruning.needs_base and not cand.base_path:
            warnings.append(f"candidates[{cand.name}]: no base_path, so it will be trained unpruned (flagged) "
                            "while pruned rivals lose layers")
            continue
        if cand.path.startswith("zoo://"):
            continue  # the built-in zoo: every architecture in it is known (and it may not be built yet)
        try:
            check_architecture(cand.path, trust_remote_code=cand.trust_remote_code)
        except UnsupportedArchitectureError as err:
            if cfg.pruning.on_unsupported == "fail":
                message = " ".join(str(err).split())  # the whole message (supported list, remote-code hint)
                raise ConfigError(f"candidates[{cand.name}]: cannot be pruned: {message} "
                                  "(pruning.on_unsupported: fail; set it to unpruned to train such a candidate "
                                  "with all its layers, flagged)") from None
            warnings.append(f"candidates[{cand.name}]: {error_summary(err)}; it will be trained unpruned (flagged)")
        except ValueError as err:
            warnings.append(f"candidates[{cand.name}]: {error_summary(err)}; it will be trained unpruned (flagged)")
        except Exception as err:  # noqa: BLE001 — unreachable store etc.: the prune task will say more
            warnings.append(f"candidates[{cand.name}]: could not check its architecture ({type(err).__name__})")
    return warnings
