"""The run configuration: one YAML file describes a DaMoC (or grid-search) run.

The same schema feeds the CLI, the local runner and the KFP pipeline parameters
(`to_pipeline_arguments` flattens it; `from_pipeline_arguments` rebuilds and re-validates it).
A bad config fails here, before any work starts, with the key and what is wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the file, key and fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


TaskType = Literal["qa_long", "extractive_qa"]
"""qa_long: long-answer domain Q&A scored by (BERTScore F1 + ROUGE-L F1) / 2.
extractive_qa: reading comprehension scored by SQuAD token F1."""

TASK_METRICS: dict[str, str] = {"qa_long": "bertscore_rougel", "extractive_qa": "squad_f1"}


class FieldMapping(_Section):
    """Which column of the data holds each part of a sample."""

    instruction: str | None = Field("instruction", description="column with the task instruction; null if none")
    input: str = Field("input", description="column with the question / input (and context)")
    output: str = Field("output", description="column with the reference answer")


class DataConfig(_Section):
    train: str = Field(..., description="training data: local path or s3://bucket/key (.jsonl, .csv, .parquet)")
    eval: str = Field(..., description="evaluation data: local path or s3:// URI, same format rules")
    task: TaskType = Field("qa_long", description="decides the metric")
    fields: FieldMapping = FieldMapping()
    max_train_samples: int | None = Field(None, ge=1, description="cap on training rows read (first N)")
    max_eval_samples: int | None = Field(200, ge=1, description="cap on evaluation rows (first N)")

    @field_validator("train", "eval")
    @classmethod
    def _supported_format(cls, uri: str) -> str:
        from damoc.data.io import SUPPORTED_SUFFIXES, data_format

        if data_format(uri) is None:
            raise ValueError(f"'{uri}' has no supported suffix; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        return uri


class Candidate(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                      description="unique short name (letters, digits, . _ -)")
    path: str = Field(..., description="chat/instruct checkpoint: local dir, s3:// prefix, or hub id")
    base_path: str | None = Field(None, description="its base checkpoint; enables pruning with sparse merging")
    trust_remote_code: bool = Field(False, description="allow the checkpoint's own Python code (opt-in)")


FilterMethod = Literal["graphcut", "random", "none"]


class FilterConfig(_Section):
    method: FilterMethod = "graphcut"
    ratio: float = Field(0.2, gt=0.0, le=1.0, description="fraction of training samples kept")
    graphcut_lambda: float = Field(0.4, ge=0.0, description="diversity weight; < 0.5 keeps GraphCut monotone")
    embedding_model: str | None = Field(None, description="sentence-transformers dir; default all-MiniLM-L6-v2")
    seed: int = 0


class CompressionConfig(_Section):
    enabled: bool = True
    rate: float = Field(0.6, gt=0.0, le=1.0, description="target fraction of words kept")
    bertscore_threshold: float = Field(0.9, ge=0.0, le=1.0, description="gate: below it the sample is rewritten "
                                       "(or kept uncompressed while rewriting is off)")
    scorer_model: str | None = Field(None, description="small causal LM scoring perplexity; default: the first "
                                     "candidate's base (else chat) checkpoint")
    segment_words: int = Field(200, ge=8, description="words per compression segment (iterative_size)")
    rewrite: bool = Field(False, description="rewrite gate failures with an LLM served by vLLM (later issue)")


class PruningConfig(_Section):
    enabled: bool = True
    threshold: float = Field(0.85, gt=0.0, lt=1.0, description="prune layers whose cos(h_in, h_out) exceeds it")
    merge_keep_fraction: float = Field(0.2, gt=0.0, le=1.0,
                                       description="fraction of task-vector entries kept (by magnitude) when merging")
    calibration_samples: int = Field(32, ge=1)
    max_prune_fraction: float = Field(0.5, ge=0.0, lt=1.0, description="never drop more than this share of layers")


class TrainingConfig(_Section):
    method: Literal["full", "lora"] = "full"
    epochs: float = Field(1.0, gt=0.0)
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=16)
    seed: int = 0
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)


class EvaluationConfig(_Section):
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)


Mode = Literal["damoc", "grid_search"]


class RunConfig(_Section):
    mode: Mode = "damoc"
    data: DataConfig
    candidates: list[Candidate] = Field(..., min_length=1)
    filter: FilterConfig = FilterConfig()
    compression: CompressionConfig = CompressionConfig()
    pruning: PruningConfig = PruningConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> "RunConfig":
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidates: duplicate name(s) {dupes}; every candidate needs its own name")
        return self

    @property
    def metric(self) -> str:
        return TASK_METRICS[self.data.task]

    def scorer_model_path(self) -> str:
        if self.compression.scorer_model:
            return self.compression.scorer_model
        first = self.candidates[0]
        return first.base_path or first.path


def _format_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid run configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see README 'Run configuration')"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _resolve_relative(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make local relative paths in the config relative to the config file, as users expect."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            candidate = base_dir / value
            if candidate.exists():
                return str(candidate.resolve())
        return value

    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "eval"):
            if key in data:
                data[key] = fix(data[key])
    for cand in raw.get("candidates") or []:
        if isinstance(cand, dict):
            for key in ("path", "base_path"):
                if key in cand:
                    cand[key] = fix(cand[key])
    comp = raw.get("compression")
    if isinstance(comp, dict) and comp.get("scorer_model"):
        comp["scorer_model"] = fix(comp["scorer_model"])
    return raw


def parse_config(raw: Any, source: str = "<config>") -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid run configuration in {source}: the top level must be a mapping of keys")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML run configuration. `overrides` maps dotted keys to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(raw, dict):
        raw = _resolve_relative(raw, path.resolve().parent)
        for dotted, value in (overrides or {}).items():
            _set_dotted(raw, dotted, value)
    return parse_config(raw, str(path))


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# ---- KFP pipeline parameters: the config, flattened to typed scalars --------------------------

_SECTIONS = ("data", "filter", "compression", "pruning", "training", "evaluation")


def to_pipeline_arguments(cfg: RunConfig) -> dict[str, Any]:
    """Flatten a config to the pipeline's parameters: section_key (data.fields.x -> data_field_x)."""
    args: dict[str, Any] = {"mode": cfg.mode, "candidates": [c.model_dump(exclude_none=True) for c in cfg.candidates]}
    for section in _SECTIONS:
        for key, value in getattr(cfg, section).model_dump().items():
            if key == "fields":
                for fk, fv in value.items():
                    args[f"data_field_{fk}"] = fv if fv is not None else ""
            else:
                args[f"{section}_{key}"] = value
    if cfg.compression.scorer_model is None:
        args["compression_scorer_model"] = ""
    if cfg.filter.embedding_model is None:
        args["filter_embedding_model"] = ""
    for key in ("data_max_train_samples", "data_max_eval_samples"):
        if args[key] is None:
            args[key] = 0  # 0 = no cap (KFP parameters cannot be null)
    return args


def from_pipeline_arguments(args: dict[str, Any]) -> RunConfig:
    """Inverse of `to_pipeline_arguments` (used inside the pipeline's first task)."""
    raw: dict[str, Any] = {"mode": args["mode"], "candidates": args["candidates"]}
    for section in _SECTIONS:
        raw[section] = {}
    raw["data"]["fields"] = {}
    for key, value in args.items():
        if key.startswith("data_field_"):
            raw["data"]["fields"][key.removeprefix("data_field_")] = value or None
            continue
        for section in _SECTIONS:
            if key.startswith(section + "_"):
                raw[section][key.removeprefix(section + "_")] = value
                break
    for key in ("max_train_samples", "max_eval_samples"):
        if raw["data"].get(key) == 0:
            raw["data"][key] = None
    for section, key in (("compression", "scorer_model"), ("filter", "embedding_model")):
        if raw[section].get(key) == "":
            raw[section][key] = None
    return parse_config(raw, "pipeline parameters")


def pipeline_defaults() -> dict[str, Any]:
    """Default values of every section key, as pipeline parameter defaults."""
    stub = RunConfig(data=DataConfig(train="train.jsonl", eval="eval.jsonl"),
                     candidates=[Candidate(name="c", path="p")])
    args = to_pipeline_arguments(stub)
    for key in ("mode", "candidates", "data_train", "data_eval"):
        args.pop(key)
    return args
