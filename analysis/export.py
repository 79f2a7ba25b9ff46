"""Write tables to a directory as JSON Lines, CSV or Parquet files.

Each table becomes one file named after it (``sessions.jsonl``,
``transactions.csv``, ...). Exporters take any mapping of table name to
DataFrame, so later tables (alerts) are written without a change here; the
cell encoding follows each column's dtype.

Formats:
- JSON Lines (default) is lossless and pure ASCII: one object per row, keys in
  column order, non-ASCII and control characters as JSON ``\\u`` escapes, so
  the file is safe to ``cat``. Timestamps are ISO 8601 UTC strings with all
  nine fraction digits (``2024-01-02T03:04:05.123456789Z``), lists are JSON
  arrays and missing values are ``null``.
- CSV is for people and spreadsheets, and lossy: lists are joined with ``,``
  (a missing element is an empty string), missing values are empty cells,
  booleans are ``true``/``false``, text has control characters escaped and a
  leading quote before formula characters (see ``analysis.escape``). Files
  are UTF-8 with a header row and ``\\n`` line ends.
- Parquet (needs pyarrow) is lossless and typed: timestamps in ns UTC, lists
  as list columns.

Every file is written under a temporary name in the target directory and
renamed only when all of them are complete, so an interrupted run leaves
either the previous files or the new ones, never a truncated file.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.rowfiles import (
    ExportError,
    Format,
    csv_text,
    encode_row,
    iso_timestamp,
    json_line,
    open_text,
    prepare_directory,
    replace_all,
    require_format,
    reserve_temporary,
)
from analysis.schema import TABLES, Column, Kind

__all__ = [
    "ExportError",
    "Format",
    "iso_timestamp",
    "json_line",
    "prepare_directory",
    "require_format",
    "write_tables",
]


def write_tables(
    frames: Mapping[str, pd.DataFrame],
    directory: str | os.PathLike[str],
    fmt: Format = Format.JSONL,
) -> list[Path]:
    """Write each frame to ``directory/<name>.<fmt>``; return the paths."""
    require_format(fmt)
    target = prepare_directory(directory)
    written: list[tuple[Path, Path]] = []
    try:
        # Step 1: every table to a temporary file beside its final name.
        for name, frame in frames.items():
            if not name.isidentifier():  # it becomes a file name
                raise ValueError(f"table name {name!r} is not an identifier")
            final = target / f"{name}.{fmt.value}"
            temporary = reserve_temporary(final)
            written.append((temporary, final))
            _WRITERS[fmt](name, frame, temporary)

        # Step 2: only now replace the old files, so a failure above leaves
        # them untouched.
        replace_all(written)
    except BaseException:
        for temporary, _ in written:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        raise
    return [final for _, final in written]


# JSON Lines


def _write_jsonl(name: str, frame: pd.DataFrame, path: Path) -> None:
    names = [str(column) for column in frame.columns]
    with open_text(path) as out:
        for row in _rows(frame, _json_cells):
            out.write(encode_row(dict(zip(names, row, strict=True))))
            out.write("\n")


def _json_cells(series: pd.Series) -> list[Any]:
    if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
        return [None if ns is None else iso_timestamp(ns) for ns in _epoch_ns(series)]
    return [_plain(value) for value in series.tolist()]


# CSV


def _write_csv(name: str, frame: pd.DataFrame, path: Path) -> None:
    with open_text(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([str(column) for column in frame.columns])
        writer.writerows(_rows(frame, _csv_cells))


def _csv_cells(series: pd.Series) -> list[str]:
    if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
        return ["" if ns is None else iso_timestamp(ns) for ns in _epoch_ns(series)]
    return [csv_text(_plain(value)) for value in series.tolist()]


# Parquet


def _write_parquet(name: str, frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Tables of the schema get exact Arrow types, so that even an empty
    # table keeps its list and timestamp types; others are inferred.
    schema = None
    columns = TABLES.get(name)
    if columns is not None and [c.name for c in columns] == list(frame.columns):
        schema = pa.schema([(c.name, _arrow_type(c)) for c in columns])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, path)


def _arrow_type(column: Column) -> Any:
    import pyarrow as pa

    types = {
        Kind.TIMESTAMP: pa.timestamp("ns", tz="UTC"),
        Kind.FLOAT: pa.float64(),
        Kind.INT: pa.int64(),
        Kind.NULLABLE_INT: pa.int64(),
        Kind.BOOL: pa.bool_(),
        Kind.NULLABLE_BOOL: pa.bool_(),
        Kind.STRING: pa.string(),
        Kind.STRING_LIST: pa.list_(pa.string()),
        Kind.INT_LIST: pa.list_(pa.int64()),
    }
    return types[column.kind]


_WRITERS: dict[Format, Callable[[str, pd.DataFrame, Path], None]] = {
    Format.JSONL: _write_jsonl,
    Format.CSV: _write_csv,
    Format.PARQUET: _write_parquet,
}


# Cells shared by the text formats


def _epoch_ns(series: pd.Series) -> list[int | None]:
    # Naive datetimes are taken to be UTC already, as everywhere in smtpscope.
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert(None)
    values = series.dt.as_unit("ns").to_numpy().view("int64").tolist()
    missing = series.isna().tolist()
    return [None if gap else ns for ns, gap in zip(values, missing, strict=True)]


def _plain(value: Any) -> Any:
    """A cell as a JSON-ready Python value: None for every kind of missing."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"cannot export a cell of type {type(value).__name__}")


def _rows(
    frame: pd.DataFrame, cells: Callable[[pd.Series], list[Any]]
) -> Iterable[tuple[Any, ...]]:
    columns = [cells(frame.iloc[:, i]) for i in range(frame.shape[1])]
    return zip(*columns, strict=True)
