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
import errno
import functools
import importlib.util
import json
import math
import operator
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from analysis import interrupts
from analysis.escape import csv_cell
from analysis.records import SessionResult
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
    if path.exists() and not path.is_dir():
        # mkdir would say "File exists", which reads as if a directory
        # were in the way.
        raise ExportError(f"cannot write tables into {path}: it is not a directory")
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


def replace_all(renames: Iterable[tuple[Path, Path]]) -> None:
    """Rename each temporary file over its final name, all or none as far
    as Ctrl-C and SIGTERM go.

    A stop between two renames would leave tables of this run beside tables
    of an earlier one. The renames take microseconds: a stop that comes
    meanwhile is held back and handed, once all are done, to the handler
    it would have reached (a KeyboardInterrupt where there was none to
    call: the command's, while it finishes its tables, only notes a first
    stop); a KeyboardInterrupt from there comes as ``RenamedThenStopped``.
    A stop that was ignored stays ignored. (Only the main thread
    may set signal handlers; elsewhere the renames are not guarded.)
    """
    renames = list(renames)
    for _, final in renames:
        # os.replace cannot put a file over a directory: found in review,
        # DIR/tls.jsonl a directory left the five other tables of this run
        # beside the tls table of an earlier one. Looked for before the
        # first rename, so that none is made.
        if final.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    guarded = threading.current_thread() is threading.main_thread()
    previous = interrupts.take(hold) if guarded else {}
    try:
        for temporary, final in renames:
            os.replace(temporary, final)
    finally:
        for stop, handler in previous.items():
            # None: a handler not set from Python, which cannot be set back.
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)
    for signum in held:
        handler = previous.get(signum)
        try:
            if not callable(handler):
                raise KeyboardInterrupt
            handler(signum, None)
        except KeyboardInterrupt as stop:
            # Whoever catches it must not say the old files are still there.
            raise RenamedThenStopped(*stop.args) from None


class RenamedThenStopped(KeyboardInterrupt):
    """A stop held back while ``replace_all`` renamed the files: every one
    of them is in place."""


def open_text(path: Path) -> IO[str]:
    return path.open("w", encoding="utf-8", newline="")


def iso_timestamp(ns: int) -> str:
    """Integer ns since the epoch as ``YYYY-MM-DDTHH:MM:SS.fffffffffZ``."""
    if ns >= 1_000_000_000:
        # The last nine digits are the fraction, zero-padded already: on the
        # rows' many timestamps, slicing them off the decimal text costs
        # less than divmod and a padded format.
        digits = str(ns)
        return f"{_utc_second(digits[:-9])}.{digits[-9:]}Z"
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{_utc_second(str(seconds))}.{fraction:09d}Z"


@functools.lru_cache(maxsize=256)
def _utc_second(seconds: str) -> str:
    # A session's rows share a few seconds; formatting each once is cheaper.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds)))


# Cells of one record. pandas turns each column into its dtype before the
# DataFrame exporter sees it; these do the same conversions on single values.


def _finite(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


# What ``json_cell`` does, by kind, for values that are not None; the kinds
# not listed pass through (the encoder writes tuples as arrays too).
_JSON_CONVERT: dict[Kind, Callable[[Any], Any]] = {
    Kind.TIMESTAMP: iso_timestamp,
    Kind.FLOAT: _finite,
}


def json_cell(column: Column, value: Any) -> Any:
    """A record's value as ``export``'s JSON Lines writes it."""
    convert = _JSON_CONVERT.get(column.kind)
    return value if value is None or convert is None else convert(value)


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
        return csv_text(_finite(value))
    return csv_text(value)


# A str as a JSON string in ASCII, escaped as _LINE_ENCODER escapes it.
_quote = json.encoder.encode_basestring_ascii

_LINE_ENCODER = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":")
)


def _row_encoder() -> Callable[[dict[str, Any]], str]:
    """``_LINE_ENCODER.encode`` for the many rows of a table (``encode_row``).

    ``JSONEncoder.encode`` builds a new C encoder for every call; rows are
    flat dicts of plain values, so one C encoder, made once, does them all
    (without the circular-reference check, which they cannot need).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return _LINE_ENCODER.encode
    encoder = make(
        None,
        _LINE_ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    return lambda row: "".join(encoder(row, 0))


# One JSON Lines row (a dict of plain values) as text, without the newline;
# what every JSON Lines writer of the project uses.
encode_row = _row_encoder()


def json_line(table: str, record: object) -> str:
    """One record as a JSON line of live output, ``table`` naming its table.

    The cells are those ``smtpscope read`` writes for the same connection;
    only the leading ``table`` key is added.
    """
    row: dict[str, Any] = {"table": table}
    for column in TABLES[table]:
        row[column.name] = json_cell(column, getattr(record, column.attribute))
    return encode_row(row) + "\n"


# The tables one session fills, in file order, and how each session's rows
# are ordered within a table (a stable sort: equal keys keep the order the
# session produced them in). ``TableBuilder`` orders its rows by these too.
SESSION_TABLES: tuple[str, ...] = (
    "sessions",
    "transactions",
    "commands",
    "anomalies",
    "tls",
)
ROW_ORDER: dict[str, str] = {
    "transactions": "index",
    "commands": "ts",
    "anomalies": "ts",
    "tls": "start",
}
_ROW_KEY: dict[str, Callable[[Any], Any]] = {
    table: operator.attrgetter(attribute) for table, attribute in ROW_ORDER.items()
}


class SessionRows:
    """A session's rows of every table as text, in ``SESSION_TABLES`` order.

    The text can be made where the session was analysed, a worker process
    say, and written later with ``TableFiles.write_text``.
    """

    def __init__(self, fmt: Format) -> None:
        if fmt not in _ROW_TEXT:
            raise ValueError(f"{fmt.value} is not written row by row")
        encoder = _ROW_TEXT[fmt]
        self._session = encoder(TABLES["sessions"])
        self._tables = [
            (table, _ROW_KEY[table], encoder(TABLES[table]))
            for table in SESSION_TABLES[1:]
        ]

    def __call__(self, result: SessionResult) -> tuple[str, ...]:
        return tuple(self.each(result))

    def each(self, result: SessionResult) -> Iterator[str]:
        """The texts one table at a time, for a caller that can let each go
        before the next is made (a session at the row caps makes tens of
        MB of them)."""
        yield self._session((result.session,))
        for table, key, encode in self._tables:
            rows: list[Any] = getattr(result, table)
            if len(rows) > 1:
                rows = sorted(rows, key=key)
            yield encode(rows) if rows else ""


class RowEncoder:
    """Records of one table to the text of their rows, header excluded."""

    def __init__(self, fmt: Format, table: str) -> None:
        if fmt not in _ROW_TEXT:
            raise ValueError(f"{fmt.value} is not written row by row")
        self.table = table
        self._encode = _ROW_TEXT[fmt](TABLES[table])

    def __call__(self, records: Iterable[object]) -> str:
        return self._encode(records)


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
        if fmt not in _ROW_TEXT:
            raise ValueError(f"{fmt.value} is not written row by row")
        target = prepare_directory(directory)
        self.format = fmt
        self._temporary: list[tuple[Path, Path]] = []
        self._encoders: dict[str, RowEncoder] = {}
        self._handles: dict[str, IO[str]] = {}
        try:
            for name in tables:
                final = target / f"{name}.{fmt.value}"
                temporary = reserve_temporary(final)
                self._temporary.append((temporary, final))
                handle = self._handles[name] = open_text(temporary)
                self._encoders[name] = RowEncoder(fmt, name)
                if fmt is Format.CSV:
                    handle.write(_csv_line([c.name for c in TABLES[name]]))
        except BaseException:
            self.abort()
            raise
        self._session_handles = [self._handles[name] for name in SESSION_TABLES]
        self.committed = False
        self._rows = SessionRows(fmt)

    def __enter__(self) -> TableFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.abort()

    def write(self, table: str, records: Iterable[object]) -> None:
        """Append ``records`` (of ``table``'s record type) as rows."""
        self._handles[table].write(self._encoders[table](records))

    def encoder(self, table: str) -> RowEncoder:
        """What ``write`` encodes ``table``'s records with: for rows made
        ahead and appended later by ``write_encoded``."""
        return self._encoders[table]

    def write_encoded(self, table: str, text: str) -> None:
        """Append the text of rows of ``table`` that its ``encoder`` made."""
        self._handles[table].write(text)

    def write_session(self, result: SessionResult) -> None:
        """Append one session's rows to every table it fills."""
        self.write_text(self._rows(result))

    def write_text(self, texts: Iterable[str]) -> None:
        """Append the rows a ``SessionRows`` of the same format made, one
        text per table in ``SESSION_TABLES`` order."""
        for handle, text in zip(self._session_handles, texts, strict=True):
            if text:
                handle.write(text)

    def commit(self) -> list[Path]:
        """Close every file and put it in place; return the final paths.

        A KeyboardInterrupt from here with ``committed`` set came while the
        files were renamed, and was held until all were.
        """
        for handle in self._handles.values():
            handle.close()
        try:
            replace_all(self._temporary)
        except KeyboardInterrupt:
            self.committed = True
            raise
        self.committed = True
        return [final for _, final in self._temporary]

    def abort(self) -> None:
        for handle in self._handles.values():
            # Closing flushes, which fails again on a full disk; the file is
            # deleted below either way.
            with contextlib.suppress(OSError):
                handle.close()
        for temporary, _ in self._temporary:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _getter(columns: tuple[Column, ...]) -> Callable[[object], tuple[Any, ...]]:
    """All of a record's cells in one call, as a tuple even for one column."""
    attributes = [c.attribute for c in columns]
    if len(attributes) == 1:
        single = operator.attrgetter(attributes[0])
        return lambda record: (single(record),)
    return operator.attrgetter(*attributes)


TextEncoder = Callable[[Iterable[object]], str]


def _jsonl_text(columns: tuple[Column, ...]) -> TextEncoder:
    line = _jsonl_line(columns)
    return lambda records: "".join(map(line, records))


# How ``_jsonl_line`` writes a cell of each kind: an expression turning the
# record's value ``{v}`` into its JSON text, or None for an int column's
# value, never missing, which the line's f-string formats in place. The text
# is what ``json_cell`` and ``encode_row`` make of the value: the records
# hold exact ints and bools in the columns of those kinds.
_JSON_CELL: dict[Kind, str | None] = {
    Kind.TIMESTAMP: '"null" if {v} is None else timestamp({v})',
    Kind.FLOAT: "number({v})",
    Kind.INT: None,
    Kind.NULLABLE_INT: '"null" if {v} is None else format({v}, "d")',
    Kind.BOOL: '"true" if {v} else "false"',
    Kind.NULLABLE_BOOL: '"null" if {v} is None else "true" if {v} else "false"',
    Kind.STRING: '"null" if {v} is None else quote({v})',
    Kind.STRING_LIST: "array({v})",
    Kind.INT_LIST: "array({v})",
}


# What ``json_cell`` and then the encoder make of a timestamp and of a
# float, in one call each: the rows have tens of thousands of such cells.


def _json_timestamp(ns: int) -> str:
    if ns >= 1_000_000_000:  # as in iso_timestamp
        digits = str(ns)
        return f'"{_utc_second(digits[:-9])}.{digits[-9:]}Z"'
    return f'"{iso_timestamp(ns)}"'


def _json_number(value: float | None) -> str:
    if value is None:
        return "null"
    number = float(value)
    return repr(number) if math.isfinite(number) else "null"


# Cached: a run makes the writers of each table three times over (the
# table files, their SessionRows, the spool's SessionRows), and compiling
# the generated source cost more than all the rows of a small capture.
@functools.cache
def _jsonl_line(columns: tuple[Column, ...]) -> Callable[[object], str]:
    """A function writing one record of ``columns`` as a line of JSON.

    Going through a dict and ``encode_row`` costs, per row, a dict, every
    key escaped again and a Python call per converted cell: about half the
    time of writing the rows. The function is instead generated from the
    columns, the way ``dataclasses`` makes ``__init__``: the keys are
    literal text in one f-string, each cell is read as an attribute, which
    is quicker on slotted records than ``operator.attrgetter``, and turned
    into text by one expression from ``_JSON_CELL``. For the sessions
    table, say:

        def line(record):
            c0 = record.session_id
            c0 = "null" if c0 is None else quote(c0)
            ...
            c4 = record.client_port
            ...
            return f'{{"session_id":{c0},...,"client_port":{c4:d},...}}\\n'
    """
    names = [f"c{i}" for i in range(len(columns))]
    body = []
    fields = []
    for name, column in zip(names, columns, strict=True):
        if not column.attribute.isidentifier():
            raise ValueError(f"{column.attribute!r} is no attribute name")
        body.append(f"{name} = record.{column.attribute}")
        convert = _JSON_CELL[column.kind]
        if convert is None:
            fields.append(f"{{{name}:d}}")
        else:
            body.append(f"{name} = {convert.format(v=name)}")
            fields.append(f"{{{name}}}")
    # Braces in the f-string's literal text are doubled.
    keys = [_quote(c.name).replace("{", "{{").replace("}", "}}") for c in columns]
    pairs = ",".join(f"{key}:{field}" for key, field in zip(keys, fields, strict=True))
    template = "{{" + pairs + "}}\n"
    body.append(f"return f{template!r}")
    source = "def line(record):\n" + "".join(f"    {step}\n" for step in body)
    namespace: dict[str, Any] = {
        "quote": _quote,
        "timestamp": _json_timestamp,
        "number": _json_number,
        "array": encode_row,  # which encodes any value, a list too
    }
    exec(compile(source, "<jsonl line>", "exec"), namespace)
    line: Callable[[object], str] = namespace["line"]
    return line


class _Lines:
    """A file-like sink for ``csv.writer`` that hands back what it got."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


def _csv_line(cells: list[str]) -> str:
    sink = _Lines()
    csv.writer(sink, lineterminator="\n").writerow(cells)
    return sink.take()


def _csv_text(columns: tuple[Column, ...]) -> TextEncoder:
    sink = _Lines()
    writer = csv.writer(sink, lineterminator="\n")
    cells = _getter(columns)
    convert = list(enumerate(columns))

    def text(records: Iterable[object]) -> str:
        rows = []
        for record in records:
            values = cells(record)
            rows.append([csv_record_cell(column, values[i]) for i, column in convert])
        writer.writerows(rows)
        return sink.take()

    return text


_ROW_TEXT: dict[Format, Callable[[tuple[Column, ...]], TextEncoder]] = {
    Format.JSONL: _jsonl_text,
    Format.CSV: _csv_text,
}
