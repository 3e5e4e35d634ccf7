"""The run configuration as KFP pipeline parameters, derived from the schema in damoc.config.

Each section of the config is one pipeline parameter holding a JSON object (a KFP struct): the KFP UI shows
one JSON box per section, prefilled with the section's defaults, and a description listing every key with
its type, default and meaning. KFP parameters cannot hold null, so a null value is left out; every nullable
setting defaults to null (a test keeps that true), which makes leaving it out lossless. `mode` is a plain string and `candidates` a JSON list. Nothing here repeats a
default or a key: adding a setting to the schema adds it to the pipeline.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from damoc.config import SECTIONS, RunConfig, parse_config

# Parameters of a run that are not part of the config (where results go, which Secret holds S3 credentials).
RUN_PARAMETERS: dict[str, tuple[type, Any, str]] = {
    "output_uri": (str, "", "where selection.json and report.md are also written (s3://bucket/prefix or a "
                   "path); empty: only the KFP artifacts"),
    "s3_secret_name": (str, "s3-credentials", "Kubernetes Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                       "and DAMOC_S3_ENDPOINT (optional; never pass credentials as parameters)"),
    "api_key_secret_name": (str, "damoc-api-keys", "Kubernetes Secret with DAMOC_REWRITER_API_KEY (compression "
                            "rewriter) and OPENAI_API_KEY (alpagasus judge endpoint); optional, mounted only into "
                            "the filter and compress tasks"),
}
REQUIRED_DATA_KEYS = ("train", "eval")
# Sections applied when the pipeline is compiled, never pipeline parameters (kfp.local cannot resolve
# parameters in resource fields inside a ParallelFor): `damoc compile --config run.yaml`.
COMPILE_TIME_SECTIONS = ("resources",)
PIPELINE_FIELDS = tuple(name for name in RunConfig.model_fields if name not in COMPILE_TIME_SECTIONS)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def section_model(section: str) -> type[BaseModel]:
    return RunConfig.model_fields[section].annotation  # type: ignore[return-value]


def section_defaults(section: str) -> dict[str, Any]:
    """Default value of one section as a JSON object; required keys (data.train/eval) are empty strings."""
    model = section_model(section)
    if section == "data":
        doc = model.model_validate({k: "x.jsonl" for k in REQUIRED_DATA_KEYS}).model_dump(mode="json")
        return _drop_nulls(doc | {k: "" for k in REQUIRED_DATA_KEYS})
    return _drop_nulls(model().model_dump(mode="json"))


def pipeline_defaults() -> dict[str, Any]:
    """Every pipeline parameter with a default: mode, the sections, and the run parameters."""
    out: dict[str, Any] = {"mode": RunConfig.model_fields["mode"].default}
    out.update({s: section_defaults(s) for s in SECTIONS})
    out.update({name: default for name, (_, default, _) in RUN_PARAMETERS.items()})
    return out


def to_pipeline_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The config as pipeline arguments: {mode, candidates, data, filter, ...} (JSON-compatible values)."""
    return _drop_nulls(cfg.model_dump(mode="json", exclude=set(COMPILE_TIME_SECTIONS)))


def from_pipeline_arguments(args: dict[str, Any]) -> RunConfig:
    """Inverse of `to_pipeline_arguments` (used inside the pipeline's first task); re-validates everything."""
    raw = {key: args[key] for key in PIPELINE_FIELDS if key in args}
    data = dict(raw.get("data") or {})
    for key in REQUIRED_DATA_KEYS:  # the UI default is "": report it as missing, not as a bad file name
        if data.get(key) == "":
            data.pop(key)
    raw["data"] = data
    return parse_config(raw, "pipeline parameters")


def _type_name(annotation: Any) -> str:
    from typing import Literal, get_args, get_origin

    if get_origin(annotation) is Literal:
        return " | ".join(map(str, get_args(annotation)))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "null")


def key_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, description) for every key of a section, nested sections expanded."""
    rows: list[tuple[str, str, Any, str]] = []
    try:
        instance: dict[str, Any] | None = model().model_dump(mode="json")  # defaults after validation
    except Exception:  # noqa: BLE001 — a model with required keys: use the declared defaults
        instance = None
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += key_rows(annotation, f"{prefix}{name}.")
            continue
        if field.is_required():
            default: Any = "required"
        elif instance is not None:
            default = instance[name]
        else:
            default = field.default_factory() if field.default_factory else field.default
        rows.append((prefix + name, _type_name(annotation), default, field.description or ""))
    return rows


def _choices(section: str) -> str:
    """Registered names a section's keys accept (listed in the UI help text)."""
    from damoc.evaluation.tasks import TASKS
    from damoc.filtering import FILTERS
    from damoc.training.launchers import LAUNCHERS

    if section == "data":
        return f" Task types: {', '.join(TASKS.names())}."
    if section == "filter":
        return f" Methods: {', '.join(FILTERS.names())}."
    if section == "training":
        return f" Launchers: {', '.join(LAUNCHERS.names())}."
    return ""


def _fmt_default(value: Any) -> str:
    import json

    return value if value == "required" else json.dumps(value)


def parameter_descriptions() -> dict[str, str]:
    """One help text per pipeline parameter (the KFP UI shows it beside the field)."""
    out = {
        "mode": RunConfig.model_fields["mode"].description or "",
        "candidates": "JSON list of candidates, each {name, path, base_path?, trust_remote_code?}: "
                      + "; ".join(f"{k} ({t}, {_fmt_default(d)}): {desc}"
                                  for k, t, d, desc in key_rows(RunConfig.model_fields["candidates"]
                                                                .annotation.__args__[0])),
    }
    for section in SECTIONS:
        field = RunConfig.model_fields[section]
        keys = "; ".join(f"{k} ({t}, default {_fmt_default(d)}): {desc}" for k, t, d, desc in
                         key_rows(section_model(section)))
        out[section] = f"{field.description}. JSON object with keys: {keys}.{_choices(section)}"
    out.update({name: desc for name, (_, _, desc) in RUN_PARAMETERS.items()})
    return out


def pipeline_docstring(summary: str) -> str:
    """A Google-style docstring; KFP's compiler turns its Args section into parameter descriptions."""
    lines = [summary, "", "Args:"]
    for name, text in parameter_descriptions().items():
        lines.append(f"    {name}: {' '.join(text.split())}")
    return "\n".join(lines) + "\n"
