"""Tables that ``smtpscope read -o`` wrote, loaded back as DataFrames.

JSON Lines and Parquet files are lossless: loaded here they are the tables
``read_captures`` gives, column for column and dtype for dtype. pandas' own
readers guess instead: ``read_json`` turns the ``date`` column (the Date:
header, a string) into timestamps because of its name, leaves ``start`` a
string and makes reply codes floats. CSV is for people and spreadsheets
and lossy (lists joined with commas, text escaped for spreadsheets), so it
is not loaded back.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import pipeline
from analysis.rowfiles import Format
from analysis.schema import TABLES, Column, Kind
from analysis.tables import SmtpTables, column_series

StrPath = str | os.PathLike[str]


class LoadError(ValueError):
    """The directory holds no tables this can load, or a damaged one."""


def load_tables(directory: StrPath, format: str | None = None) -> SmtpTables:
    """Every table in ``directory``, from its ``.jsonl`` or ``.parquet`` file.

    A table with no file (an older run's output without ``tls``, say) is
    empty. ``stats`` is empty: the files do not keep it. Raises
    ``LoadError`` when no table file is there, for CSV files, for a file
    that is not a table of this name, and for anything under a table's
    name that is not a regular file (a directory, a named pipe).

    ``format`` ("jsonl" or "parquet") says which files to load where the
    directory holds both; without it, such a directory is a ``LoadError``.
    ``read -o`` replaces only the files of the format it writes, so the
    others are of an earlier run, and taking one format when both were
    there gave that run's tables without a word (found in a new user's
    trial).
    """
    folder = Path(directory)
    if not folder.is_dir():
        # Said as it is, not as a directory without tables (found in a new
        # user's trial: a mistyped name read "no table files ... in it").
        what = "not a directory" if folder.exists() else "no such directory"
        raise LoadError(f"{folder}: {what}")
    readers = _readers(folder, format)
    frames: dict[str, pd.DataFrame] = {}
    found = False
    for name, columns in TABLES.items():
        values = None
        for fmt, reader in readers.items():
            path = folder / f"{name}.{fmt.value}"
            if _table_file(path):
                values = _read(reader, path, columns)
                found = True
                break
        if values is None:
            if _table_file(folder / f"{name}.csv"):
                raise LoadError(
                    f"{folder / name}.csv: CSV is written for people and "
                    "spreadsheets and cannot be loaded back exactly; write "
                    "the tables with --format jsonl or parquet"
                )
            values = {column.name: [] for column in columns}
        try:
            frames[name] = _frame(columns, values)
        except _NOT_A_TABLE as exc:  # checked cells should not get here
            raise LoadError(f"{folder / name}: not a table ({exc})") from None
    if not found:
        names = " or ".join(f"sessions.{fmt.value}" for fmt in readers)
        raise LoadError(f"{folder}: no table files ({names}, ...) in it")
    return SmtpTables(stats=pipeline.RunStats(), **frames)


def _readers(folder: Path, format: str | None) -> dict[Format, _Reader]:
    """The readers of the one format to load from ``folder``."""
    if format is not None:
        chosen = [fmt for fmt in _READERS if fmt.value == format]
        if not chosen:
            names = " or ".join(repr(fmt.value) for fmt in _READERS)
            raise LoadError(f"format {format!r}: tables load from {names}")
        return {chosen[0]: _READERS[chosen[0]]}
    present = [
        fmt
        for fmt in _READERS
        if any(_table_file(folder / f"{name}.{fmt.value}") for name in TABLES)
    ]
    if len(present) > 1:
        both = " and ".join(fmt.value for fmt in present)
        raise LoadError(
            f"{folder}: holds tables as {both} files, perhaps of different "
            "runs; name the ones to load: load_tables(directory, format=...)"
        )
    return _READERS


def _table_file(path: Path) -> bool:
    """Whether a table file is at ``path``.

    Something else under the name (a directory, a named pipe, a link to
    nothing) is a ``LoadError``: taken for a missing file, it made an empty
    table in silence. Only ``stat`` looks at it: opening a named pipe would
    wait for a writer.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise LoadError(f"{path}: a link to nothing, not a table file") from None
        return False  # no such file, or no such directory: said later
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise LoadError(f"{path}: {_file_kind(mode)}, not a table file")
    return True


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


# A reader gives each column's cells as the records hold them: timestamps
# as integer ns, missing values as None.
_Reader = Callable[[Path, tuple[Column, ...]], dict[str, list[Any]]]


def _read(
    reader: _Reader, path: Path, columns: tuple[Column, ...]
) -> dict[str, list[Any]]:
    try:
        values = reader(path, columns)
        for column in columns:
            check = _CHECKS[column.kind]
            for row, cell in enumerate(values[column.name]):
                if not check(cell):
                    raise ValueError(
                        f"row {row + 1}: {column.name} holds {cell!r:.60}, "
                        f"not a value of kind {column.kind.value}"
                    )
    except LoadError:
        raise  # said already (pyarrow missing)
    except _MissingColumn as exc:
        raise LoadError(f"{path}: {exc}") from None
    except _NOT_A_TABLE as exc:
        raise LoadError(f"{path}: not a table smtpscope wrote ({exc})") from None
    return values


# What a file that is not a table of ours makes the readers and checks
# raise: pyarrow's errors are ValueError, TypeError and NotImplementedError.
_NOT_A_TABLE = (
    OSError,
    ValueError,  # UnicodeError and json's errors among them
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    NotImplementedError,
)


def _jsonl(path: Path, columns: tuple[Column, ...]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {column.name: [] for column in columns}
    stamps = {column.name for column in columns if column.kind is Kind.TIMESTAMP}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue  # an editor's blank line at the end, say
            row = json.loads(line)
            for name, cells in values.items():
                if name not in row:
                    raise _MissingColumn(f"line {number}: {_NO_COLUMN.format(name)}")
                cell = row[name]
                if name in stamps and cell is not None:
                    cell = _ns(cell)
                cells.append(cell)
    return values


class _MissingColumn(ValueError):
    """A table file without one of its table's columns."""


# Tables gain columns from one version to the next: a file an older
# smtpscope wrote lacks them (each is filled in from the capture, so it
# cannot be made up here).
_NO_COLUMN = (
    "no {} column: not a table smtpscope wrote, or one an older version "
    "wrote (read the captures again to write every column)"
)


def _ns(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` (``rowfiles.iso_timestamp``) as ns.

    numpy wraps round outside the years that ns since 1970 can count in 64
    bits, so it reads only the years wholly inside them; the others are
    counted here with Python's integers and refused past 64 bits. The
    readers stamp a packet up to 2262-04-11T23:47:16.854775807Z, the last
    such nanosecond (found in review: a session of 2262, written, could not
    be loaded, and with it no row of its table).
    """
    if not isinstance(text, str) or not _ISO.fullmatch(text):
        raise ValueError(f"{text!r:.60} is not a UTC timestamp")
    if 1678 <= int(text[:4]) <= 2261:
        return int(np.datetime64(text[:-1], "ns").astype(np.int64))
    try:
        moment = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise ValueError(f"{text!r:.60} is not a UTC timestamp") from None
    days = moment.toordinal() - _EPOCH_DAY
    seconds = days * 86_400 + moment.hour * 3_600 + moment.minute * 60 + moment.second
    ns = seconds * 1_000_000_000 + int(text[20:29])
    if not _instant(ns):
        raise ValueError(f"{text!r} is out of the range of ns timestamps")
    return ns


_EPOCH_DAY = datetime(1970, 1, 1).toordinal()


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
_INT64 = range(-(2**63), 2**63)


def _int(cell: Any) -> bool:
    return type(cell) is int and cell in _INT64


def _instant(cell: Any) -> bool:
    """ns since 1970; the smallest int64 is pandas' "no time" (NaT)."""
    return _int(cell) and cell != -(2**63)


def _real(cell: Any) -> bool:
    """A finite number: the writers write a missing float as null."""
    if type(cell) is int:
        return cell in _INT64
    return type(cell) is float and math.isfinite(cell)


def _text(cell: Any) -> bool:
    """A str that can be written again: no lone surrogate in it."""
    if type(cell) is not str:
        return False
    cell.encode("utf-8")  # raises UnicodeEncodeError, a ValueError
    return True


# What a cell of each kind may hold, as a reader hands it over.
_CHECKS: dict[Kind, Callable[[Any], bool]] = {
    Kind.TIMESTAMP: lambda c: c is None or _instant(c),
    Kind.FLOAT: lambda c: c is None or _real(c),
    Kind.INT: _int,
    Kind.NULLABLE_INT: lambda c: c is None or _int(c),
    Kind.BOOL: lambda c: type(c) is bool,
    Kind.NULLABLE_BOOL: lambda c: c is None or type(c) is bool,
    Kind.STRING: lambda c: c is None or _text(c),
    Kind.STRING_LIST: lambda c: (
        type(c) is list and all(v is None or _text(v) for v in c)
    ),
    Kind.INT_LIST: lambda c: type(c) is list and all(v is None or _int(v) for v in c),
}


def _parquet(path: Path, columns: tuple[Column, ...]) -> dict[str, list[Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LoadError(
            f"{path}: reading Parquet needs pyarrow, which is not installed; "
            "install it with: pip install pyarrow"
        ) from None

    table = pq.read_table(path)
    values: dict[str, list[Any]] = {}
    for column in columns:
        if column.name not in table.column_names:
            raise _MissingColumn(_NO_COLUMN.format(column.name))
        cells = table.column(column.name)
        if column.kind is Kind.TIMESTAMP:
            # Whatever the unit (other writers use microseconds), as ns.
            if not pa.types.is_timestamp(cells.type):
                raise ValueError(f"{column.name} is {cells.type}, not a timestamp")
            cells = cells.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        values[column.name] = cells.to_pylist()
    return values


_READERS: dict[Format, _Reader] = {Format.JSONL: _jsonl, Format.PARQUET: _parquet}


def _frame(columns: tuple[Column, ...], values: dict[str, list[Any]]) -> pd.DataFrame:
    rows = len(next(iter(values.values()), []))
    data = {
        column.name: column_series(column, values[column.name]) for column in columns
    }
    return pd.DataFrame(data, index=pd.RangeIndex(rows))
