"""Table files written one record at a time, without pandas.

``analysis.export`` writes whole DataFrames; this module writes the same
files straight from the records of ``analysis.records`` and the alerts, so
that ``smtpscope read -o`` can stream rows to disk without importing pandas
or holding a table in memory. The cells are encoded exactly as the
DataFrame exporter encodes them after the trip through pandas (the tests
compare the two byte for byte); see ``analysis.export`` for the formats.

It also holds what both writers share: the format names, the output
directory checks, and the all-or-nothing replacement of the files.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import functools
import importlib.util
import json
import math
import operator
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from analysis.escape import csv_cell
from analysis.schema import TABLES, Column, Kind


class Format(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class ExportError(Exception):
    """An export that cannot be done: bad directory or missing dependency."""


def require_format(fmt: Format) -> None:
    """Raise ``ExportError`` now if ``fmt`` cannot be written later."""
    if fmt is Format.PARQUET and importlib.util.find_spec("pyarrow") is None:
        raise ExportError(
            "Parquet output needs pyarrow, which is not installed; "
            "install it with: pip install pyarrow "
            "(or, from a checkout: pip install '.[parquet]')"
        )


def prepare_directory(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check that files can be made in it."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write to {path}: permission denied")
    return path


def reserve_temporary(final: Path) -> Path:
    """An empty file beside ``final`` to write into and rename later."""
    # Made with open(..., "x") rather than tempfile.mkstemp, whose mode 0600
    # the renamed file would keep; this way the user's umask applies.
    while True:
        temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            temporary.open("x").close()
        except FileExistsError:
            continue
        return temporary


def open_text(path: Path) -> IO[str]:
    return path.open("w", encoding="utf-8", newline="")


def iso_timestamp(ns: int) -> str:
    """Integer ns since the epoch as ``YYYY-MM-DDTHH:MM:SS.fffffffffZ``."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{_utc_second(seconds)}.{fraction:09d}Z"


@functools.lru_cache(maxsize=4096)
def _utc_second(seconds: int) -> str:
    # A session's rows share a few seconds; formatting each once is cheaper.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


# Cells of one record. pandas turns each column into its dtype before the
# DataFrame exporter sees it; these do the same conversions on single values.


def json_cell(column: Column, value: Any) -> Any:
    """A record's value as ``export``'s JSON Lines writes it."""
    if value is None:
        return None
    kind = column.kind
    if kind is Kind.TIMESTAMP:
        return iso_timestamp(value)
    if kind is Kind.FLOAT:
        return float(value) if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return list(value)
    return value


def csv_text(value: Any) -> str:
    """A plain Python cell (None for missing) as CSV text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):  # alerts keep theirs in tuples
        return csv_cell(",".join("" if v is None else str(v) for v in value))
    return csv_cell(str(value))


def csv_record_cell(column: Column, value: Any) -> str:
    """A record's value as ``export``'s CSV writes it."""
    if value is None:
        return ""
    kind = column.kind
    if kind is Kind.TIMESTAMP:
        return iso_timestamp(value)
    if kind is Kind.FLOAT:
        number = float(value)
        return repr(number) if math.isfinite(number) else ""
    return csv_text(value)


_LINE_ENCODER = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":")
)


def json_line(table: str, record: object) -> str:
    """One record as a JSON line of live output, ``table`` naming its table.

    The cells are those ``smtpscope read`` writes for the same connection;
    only the leading ``table`` key is added.
    """
    row: dict[str, Any] = {"table": table}
    for column in TABLES[table]:
        row[column.name] = json_cell(column, getattr(record, column.attribute))
    return _LINE_ENCODER.encode(row) + "\n"


class TableFiles:
    """One file per table in ``directory``, filled a record at a time.

    Files are written under temporary names and renamed over the old ones
    only by ``commit``, all of them together, so an interrupted or failed
    run leaves the previous files in place; ``abort`` (or leaving the
    ``with`` block by an exception) deletes the temporary files.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fmt: Format,
        tables: Iterable[str] = tuple(TABLES),
    ) -> None:
        if fmt not in _ROW_WRITERS:
            raise ValueError(f"{fmt.value} is not written row by row")
        target = prepare_directory(directory)
        self._temporary: list[tuple[Path, Path]] = []
        self._writers: dict[str, Callable[[Iterable[object]], None]] = {}
        self._handles: list[IO[str]] = []
        try:
            for name in tables:
                final = target / f"{name}.{fmt.value}"
                temporary = reserve_temporary(final)
                self._temporary.append((temporary, final))
                handle = open_text(temporary)
                self._handles.append(handle)
                self._writers[name] = _ROW_WRITERS[fmt](handle, TABLES[name])
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> TableFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.abort()

    def write(self, table: str, records: Iterable[object]) -> None:
        """Append ``records`` (of ``table``'s record type) as rows."""
        self._writers[table](records)

    def commit(self) -> list[Path]:
        """Close every file and put it in place; return the final paths."""
        for handle in self._handles:
            handle.close()
        for temporary, final in self._temporary:
            os.replace(temporary, final)
        return [final for _, final in self._temporary]

    def abort(self) -> None:
        for handle in self._handles:
            handle.close()
        for temporary, _ in self._temporary:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


RowWriter = Callable[[Iterable[object]], None]


def _finite(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


# What ``json_cell`` does, by kind, for values that are not None; the kinds
# not listed pass through (the encoder writes tuples as arrays too).
_JSON_CONVERT: dict[Kind, Callable[[Any], Any]] = {
    Kind.TIMESTAMP: iso_timestamp,
    Kind.FLOAT: _finite,
}


def _getter(columns: tuple[Column, ...]) -> Callable[[object], tuple[Any, ...]]:
    """All of a record's cells in one call, as a tuple even for one column."""
    attributes = [c.attribute for c in columns]
    if len(attributes) == 1:
        single = operator.attrgetter(attributes[0])
        return lambda record: (single(record),)
    return operator.attrgetter(*attributes)


def _jsonl_rows(out: IO[str], columns: tuple[Column, ...]) -> RowWriter:
    encode = _LINE_ENCODER.encode
    names = [c.name for c in columns]
    cells = _getter(columns)
    convert = [
        (i, _JSON_CONVERT[c.kind])
        for i, c in enumerate(columns)
        if c.kind in _JSON_CONVERT
    ]

    def write(records: Iterable[object]) -> None:
        lines = []
        for record in records:
            values = list(cells(record))
            for i, function in convert:
                value = values[i]
                if value is not None:
                    values[i] = function(value)
            lines.append(encode(dict(zip(names, values, strict=True))))
        if lines:
            lines.append("")
            out.write("\n".join(lines))

    return write


def _csv_rows(out: IO[str], columns: tuple[Column, ...]) -> RowWriter:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    cells = _getter(columns)
    convert = list(enumerate(columns))

    def write(records: Iterable[object]) -> None:
        rows = []
        for record in records:
            values = cells(record)
            rows.append([csv_record_cell(column, values[i]) for i, column in convert])
        writer.writerows(rows)

    return write


_ROW_WRITERS: dict[Format, Callable[[IO[str], tuple[Column, ...]], RowWriter]] = {
    Format.JSONL: _jsonl_rows,
    Format.CSV: _csv_rows,
}
