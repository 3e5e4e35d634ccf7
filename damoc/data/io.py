"""Load user data (JSONL, CSV, Parquet; local or s3://) into normalised samples, with clear errors."""
from __future__ import annotations

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


def load_samples(uri: str, fields: dict[str, str | None], limit: int | None = None,
                 cache_dir: str | Path | None = None, id_prefix: str = "") -> list[Sample]:
    """Read `uri` and map its columns to Sample(instruction, input, output).

    `fields` maps instruction/input/output to column names (instruction may be None: no column).
    Missing columns and empty input/output cells raise DataError naming the file, row and field.
    """
    fmt = data_format(uri)
    if fmt is None:
        raise DataError(f"{uri}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    local = storage.localize(uri, cache_dir)
    if not local.is_file():
        raise DataError(f"{uri}: file not found")
    frame = _read_frame(local, fmt, uri)
    wanted = {role: col for role, col in fields.items() if col}
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
        samples.append(Sample(id=f"{id_prefix}{row_number}", instruction=values["instruction"] or "",
                              input=values["input"], output=values["output"]))
    if not samples:
        raise DataError(f"{uri}: no rows")
    return samples
