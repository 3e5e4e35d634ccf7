"""Load user data (JSONL, CSV, Parquet; local or s3://) into normalised samples, with clear errors.

Files are read in one streaming pass (JSONL and CSV straight from disk or from the S3 response; Parquet batch
by batch), so a pre-check of a whole multi-GB file needs little memory. Every bad row is reported with its
file, row and field, up to `max_errors` of them, instead of stopping at the first one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from damoc import storage
from damoc.data.schema import Sample

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
DEFAULT_MAX_ERRORS = 20
_CSV_FIELD_LIMIT = 2**31 - 1  # a 1 MB cell is a legitimate long document, not an error


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, row and field."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class _RowError(Exception):
    """One bad row; collected (up to a limit) rather than raised to the caller."""


def data_format(uri: str) -> str | None:
    name = uri.lower().rstrip("/")
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".").replace("json", "jsonl").replace("jsonll", "jsonl")
    return None


# --------------------------------------------------------------------------- cells and options

def _cell(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (dict, list, tuple, bool)) or getattr(value, "ndim", 0):
        kind = "true/false" if isinstance(value, bool) else type(value).__name__
        raise _RowError(f"{where} is a {kind} value, not text; write it as a string in the file")
    return str(value)


def _is_missing_cell(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _options(value: Any, output: str, where: str) -> tuple[str, ...]:
    """A row's answer options from a list (JSONL, Parquet) or a JSON list string (CSV)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _RowError(f"{where} is not a list nor a JSON list string: {value[:80]!r}") from None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise _RowError(f"{where} must be a list of at least 2 strings, got {type(value).__name__}")
    if len(value) < 2 or not all(isinstance(o, str) and o.strip() for o in value):
        raise _RowError(f"{where} must be a list of at least 2 non-empty strings, got {list(value)[:6]!r}")
    options = tuple(o.strip() for o in value)
    if len(set(options)) != len(options):
        raise _RowError(f"{where} repeats an option: {list(options)!r}")
    if output.strip() not in options:
        raise _RowError(f"{where}: the row's output {output.strip()!r} is not one of its options {list(options)!r}")
    return options


# --------------------------------------------------------------------------- streaming readers
# Each yields (row_number, record | _RowError); a _RowError is a row that could not even be parsed.

@contextmanager
def _binary(uri: str, cache_dir: str | Path | None) -> Iterator[BinaryIO]:
    """The file's bytes as a stream: a local file, the S3 object's response, or a copy in cache_dir."""
    if storage.is_s3(uri) and cache_dir is not None:
        uri = str(storage.localize(uri, cache_dir))
    if not storage.is_s3(uri) and not storage._local_path(uri).is_file():
        raise DataError(f"{uri}: file not found")
    with storage.open_read(uri) as fh:
        yield fh


@contextmanager
def _seekable_path(uri: str, cache_dir: str | Path | None) -> Iterator[Path]:
    """A local path for formats that need random access (Parquet); an S3 copy is deleted afterwards."""
    if not storage.is_s3(uri):
        local = storage._local_path(uri)
        if not local.is_file():
            raise DataError(f"{uri}: file not found")
        yield local
        return
    if cache_dir is not None:
        yield storage.localize(uri, cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="damoc-s3-") as tmp:
        yield storage.localize(uri, tmp)


def _jsonl_rows(fh: BinaryIO, uri: str, columns: set[str]) -> Iterator[tuple[int, Any]]:
    row = 0
    for line_number, raw in enumerate(fh, start=1):
        if not raw.strip():
            continue
        row += 1
        where = f"{uri}: row {row}" + (f" (line {line_number})" if line_number != row else "")
        try:
            text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            yield row, _RowError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})")
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            yield row, _RowError(f"{where}: cannot parse as JSON: {err.msg} (column {err.colno}); "
                                 "JSON Lines needs one JSON object per line")
            continue
        if not isinstance(record, dict):
            yield row, _RowError(f"{where}: is a JSON {type(record).__name__}, not an object; JSON Lines "
                                 "needs one object per line, e.g. {\"input\": ..., \"output\": ...}")
            continue
        columns.update(record)
        yield row, record


def _csv_rows(fh: BinaryIO, uri: str, columns: set[str]) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    row = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        columns.update(header)
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            row += 1
            if len(cells) > len(header):
                yield row, _RowError(f"{uri}: row {row}: has {len(cells)} fields, the header has {len(header)} "
                                     "(an unquoted comma?)")
                continue
            yield row, dict(zip(header, cells))
    except UnicodeDecodeError as err:
        raise DataError(f"{uri}: after row {row}: not UTF-8 text ({err.reason}); save the file as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{uri}: cannot parse as csv after row {row}: {err}") from None
    finally:
        text.detach()


def _parquet_rows(path: Path, uri: str, columns: set[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        columns.update(pf.schema_arrow.names)
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{uri}: cannot parse as parquet: {err}") from None


# --------------------------------------------------------------------------- one pass over a file

class _Scan:
    def __init__(self, max_errors: int) -> None:
        self.max_errors = max_errors
        self.errors: list[str] = []
        self.bad_rows = 0
        self.rows = 0
        self.columns: set[str] = set()

    def add(self, message: str) -> None:
        self.bad_rows += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)


def _rows(uri: str, fmt: str, cache_dir: str | Path | None, columns: set[str]) -> Iterator[tuple[int, Any]]:
    if fmt == "parquet":
        with _seekable_path(uri, cache_dir) as path:
            yield from _parquet_rows(path, uri, columns)
        return
    with _binary(uri, cache_dir) as fh:
        yield from (_jsonl_rows if fmt == "jsonl" else _csv_rows)(fh, uri, columns)


def _sample(record: dict[str, Any], row: int, uri: str, fields: dict[str, str | None], options_col: str,
            require_options: bool, id_prefix: str) -> Sample:
    values: dict[str, str | None] = {}
    for role in ("instruction", "input", "output"):
        col = fields.get(role)
        values[role] = _cell(record.get(col), f"{uri}: row {row}: field '{col}' ({role})") if col else ""
    for role in ("input", "output"):
        if not values[role] or not values[role].strip():
            raise _RowError(f"{uri}: row {row}: field '{fields[role]}' ({role}) is empty; "
                            "every sample needs an input and an output — fix or drop that row")
    options: tuple[str, ...] = ()
    if options_col:
        raw = record.get(options_col)
        if not _is_missing_cell(raw):
            options = _options(raw, values["output"], f"{uri}: row {row}: field '{options_col}' (options)")
        elif require_options:
            raise _RowError(f"{uri}: row {row}: field '{options_col}' (options) is empty; a multiple-choice row "
                            "needs a list of at least 2 options (data.fields.options names that column)")
    return Sample(id=f"{id_prefix}{row}", instruction=values["instruction"] or "", input=values["input"] or "",
                  output=values["output"] or "", options=options)


def _scan(uri: str, fields: dict[str, str | None], limit: int | None, cache_dir: str | Path | None,
          id_prefix: str, require_options: bool, max_errors: int, keep: bool) -> tuple[list[Sample], _Scan]:
    fmt = data_format(uri)
    if fmt is None:
        raise DataError(f"{uri}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    options_col = fields.get("options") or ""
    if require_options and not options_col:
        raise DataError(f"{uri}: this task scores multiple-choice rows, but no options column is configured: "
                        "set data.fields.options to the column holding each row's options")
    scan = _Scan(max(1, max_errors))
    wanted = {role: col for role, col in fields.items() if col and role != "options"}
    if require_options:
        wanted["options"] = options_col
    samples: list[Sample] = []
    header_checked = fmt == "jsonl"  # JSONL has no header: its columns are the union of the rows' keys
    rows = _rows(uri, fmt, cache_dir, scan.columns)
    try:
        _consume(rows, scan, uri, fields, options_col, require_options, id_prefix, limit, wanted, header_checked,
                 samples if keep else None)
    finally:
        rows.close()  # an early stop (limit) closes the file or the S3 response now
    _check_columns(uri, wanted, scan.columns)
    if scan.bad_rows:
        raise _aggregate(uri, scan)
    if not scan.rows:
        raise DataError(f"{uri}: no rows")
    return samples, scan


def _consume(rows: Iterator[tuple[int, Any]], scan: _Scan, uri: str, fields: dict[str, str | None],
             options_col: str, require_options: bool, id_prefix: str, limit: int | None, wanted: dict[str, str],
             header_checked: bool, samples: list[Sample] | None) -> None:
    for row, record in rows:
        if not header_checked:
            _check_columns(uri, wanted, scan.columns)
            header_checked = True
        if limit and row > limit:
            break
        scan.rows = row
        if isinstance(record, _RowError):
            scan.add(str(record))
            continue
        try:
            sample = _sample(record, row, uri, fields, options_col, require_options, id_prefix)
        except _RowError as err:
            scan.add(str(err))
            continue
        if samples is not None and not scan.bad_rows:
            samples.append(sample)


def _check_columns(uri: str, wanted: dict[str, str], columns: set[str]) -> None:
    if not columns:
        return
    missing = [f"{role} -> '{col}'" for role, col in wanted.items() if col not in columns]
    if missing:
        raise DataError(f"{uri}: column(s) not found: {', '.join(missing)}; the file has "
                        f"{sorted(columns)[:20]}. Fix data.fields in the config.")


def _aggregate(uri: str, scan: _Scan) -> DataError:
    if scan.bad_rows == 1:
        return DataError(scan.errors[0], scan.errors)
    shown = len(scan.errors)
    more = f"; the first {shown} are listed" if shown < scan.bad_rows else ""
    lines = "\n".join(f"  {e}" for e in scan.errors)
    return DataError(f"{uri}: {scan.bad_rows} bad rows of {scan.rows}{more} — fix or drop them:\n{lines}",
                     scan.errors)


def load_samples(uri: str, fields: dict[str, str | None], limit: int | None = None,
                 cache_dir: str | Path | None = None, id_prefix: str = "",
                 require_options: bool = False, max_errors: int = DEFAULT_MAX_ERRORS) -> list[Sample]:
    """Read `uri` and map its columns to Sample(instruction, input, output[, options]).

    `fields` maps instruction/input/output (and optionally options) to column names (instruction may be
    None or "": no column). Options: when `fields["options"]` names a column, each row's cell there must be a
    list (or a JSON list string) of >= 2 distinct strings holding the row's output; an empty cell, or a file
    without that column, gives the row no options — unless `require_options` (a multiple-choice task's eval
    data), where every row must have them.
    Missing columns, unparseable rows (a JSONL line that is not an object), empty input/output cells, nested
    or true/false text cells and bad options raise one DataError listing every bad row (up to `max_errors`)
    with the file, row and field. s3:// files are streamed (Parquet: a temporary copy, deleted afterwards)
    unless `cache_dir` is given, where the object is kept.
    """
    return _scan(uri, fields, limit, cache_dir, id_prefix, require_options, max_errors, keep=True)[0]


def validate_data(uri: str, fields: dict[str, str | None], limit: int | None = None,
                  require_options: bool = False, max_errors: int = DEFAULT_MAX_ERRORS) -> int:
    """Check every row the run would read (the first `limit`, or all) in one streaming pass without keeping
    them; returns the row count, or raises DataError listing each bad row (up to `max_errors`)."""
    return _scan(uri, fields, limit, None, "", require_options, max_errors, keep=False)[1].rows
