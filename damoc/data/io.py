"""Load user data (JSONL, CSV, Parquet; local or s3://) into normalised samples, with clear errors."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from damoc import storage
from damoc.data.schema import Sample

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, row and field."""


def data_format(uri: str) -> str | None:
    name = uri.lower().rstrip("/")
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".").replace("json", "jsonl").replace("jsonll", "jsonl")
    return None


def _read_frame(local: Path, fmt: str, uri: str) -> pd.DataFrame:
    try:
        if fmt == "jsonl":
            return pd.read_json(local, lines=True, dtype=False)
        if fmt == "csv":
            return pd.read_csv(local, dtype=str, keep_default_na=False)
        return pd.read_parquet(local)
    except ValueError as err:
        raise DataError(f"{uri}: cannot parse as {fmt}: {err}") from None


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _is_missing_cell(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _options(value: Any, output: str, uri: str, row_number: int, column: str) -> tuple[str, ...]:
    """A row's answer options from a list (JSONL, Parquet) or a JSON list string (CSV); DataError if bad."""
    where = f"{uri}: row {row_number}: field '{column}' (options)"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where} is not a list nor a JSON list string: {value[:80]!r}") from None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where} must be a list of at least 2 strings, got {type(value).__name__}")
    if len(value) < 2 or not all(isinstance(o, str) and o.strip() for o in value):
        raise DataError(f"{where} must be a list of at least 2 non-empty strings, got {list(value)[:6]!r}")
    options = tuple(o.strip() for o in value)
    if len(set(options)) != len(options):
        raise DataError(f"{where} repeats an option: {list(options)!r}")
    if output.strip() not in options:
        raise DataError(f"{where}: the row's output {output.strip()!r} is not one of its options {list(options)!r}")
    return options


def load_samples(uri: str, fields: dict[str, str | None], limit: int | None = None,
                 cache_dir: str | Path | None = None, id_prefix: str = "",
                 require_options: bool = False) -> list[Sample]:
    """Read `uri` and map its columns to Sample(instruction, input, output[, options]).

    `fields` maps instruction/input/output (and optionally options) to column names (instruction may be
    None or "": no column). Options: when `fields["options"]` names a column, each row's cell there must be a
    list (or a JSON list string) of >= 2 distinct strings holding the row's output; an empty cell, or a file
    without that column, gives the row no options — unless `require_options` (a multiple-choice task's eval
    data), where every row must have them.
    Missing columns, empty input/output cells and bad options raise DataError naming the file, row and field.
    """
    fmt = data_format(uri)
    if fmt is None:
        raise DataError(f"{uri}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    local = storage.localize(uri, cache_dir)
    if not local.is_file():
        raise DataError(f"{uri}: file not found")
    frame = _read_frame(local, fmt, uri)
    options_col = fields.get("options") or ""
    if require_options and not options_col:
        raise DataError(f"{uri}: this task scores multiple-choice rows, but no options column is configured: "
                        "set data.fields.options to the column holding each row's options")
    if options_col and options_col not in frame.columns and not require_options:
        options_col = ""  # e.g. the training file of a multiple-choice task: plain instruction rows
    wanted = {role: col for role, col in fields.items() if col and (role != "options" or options_col)}
    missing = [f"{role} -> '{col}'" for role, col in wanted.items() if col not in frame.columns]
    if missing:
        raise DataError(f"{uri}: column(s) not found: {', '.join(missing)}; the file has "
                        f"{list(frame.columns)}. Fix data.fields in the config.")
    if limit:
        frame = frame.head(limit)
    samples: list[Sample] = []
    for row_number, row in enumerate(frame.to_dict("records"), start=1):
        values = {role: _cell(row.get(col)) if col else "" for role, col in
                  (("instruction", fields.get("instruction")), ("input", fields["input"]),
                   ("output", fields["output"]))}
        for role in ("input", "output"):
            if not values[role] or not values[role].strip():
                raise DataError(f"{uri}: row {row_number}: field '{fields[role]}' ({role}) is empty; "
                                "every sample needs an input and an output — fix or drop that row")
        options: tuple[str, ...] = ()
        if options_col:
            raw = row.get(options_col)
            if not _is_missing_cell(raw):
                options = _options(raw, values["output"], uri, row_number, options_col)
            elif require_options:
                raise DataError(f"{uri}: row {row_number}: field '{options_col}' (options) is empty; a "
                                "multiple-choice row needs a list of at least 2 options (data.fields.options "
                                "names that column)")
        samples.append(Sample(id=f"{id_prefix}{row_number}", instruction=values["instruction"] or "",
                              input=values["input"], output=values["output"], options=options))
    if not samples:
        raise DataError(f"{uri}: no rows")
    return samples
