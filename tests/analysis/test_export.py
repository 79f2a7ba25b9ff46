from __future__ import annotations

import csv
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import export
from analysis.export import ExportError, Format, iso_timestamp, write_tables
from analysis.schema import TABLES, Kind
from analysis.tables import SmtpTables, TableBuilder, empty_tables
from tests.analysis.table_samples import (
    BIDI_FROM,
    ESC_HELO,
    FORMULA_SUBJECT,
    T0,
    plain_session,
    sample_results,
)


@pytest.fixture
def tables() -> SmtpTables:
    builder = TableBuilder()
    builder.add_all(sample_results())
    return builder.build()


def _list_cell(value: Any, kind: Kind) -> list[Any]:
    """A list cell as read back by pandas (list, ndarray, or a CSV string)."""
    if isinstance(value, str):
        items: list[Any] = value.split(",") if value else []
    elif isinstance(value, float) and value != value:
        items = []  # an empty list is an empty cell, read back as NaN
    else:
        items = list(np.asarray(value).tolist())
    if kind is Kind.INT_LIST:
        return [None if v in ("", None) or v != v else int(v) for v in items]
    return [str(v) for v in items]


def coerce(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Give a frame read back by pandas the dtypes of the schema."""
    out: dict[str, Any] = {}
    for column in TABLES[table]:
        values: Any = frame[column.name]
        if column.kind is Kind.TIMESTAMP:
            out[column.name] = pd.to_datetime(
                values, utc=True, format="ISO8601"
            ).dt.as_unit("ns")
        elif column.kind in (Kind.STRING_LIST, Kind.INT_LIST):
            cells = np.empty(len(values), dtype=object)
            for i, value in enumerate(values):
                cells[i] = _list_cell(value, column.kind)
            out[column.name] = pd.Series(cells, dtype=object)
        elif column.kind is Kind.BOOL:
            out[column.name] = values.map(lambda v: v in (True, "true")).astype(bool)
        elif column.kind is Kind.NULLABLE_BOOL:
            flags = {True: True, "true": True, False: False, "false": False}
            out[column.name] = pd.Series(
                pd.array([flags.get(v) for v in values], dtype="boolean")
            )
        else:
            out[column.name] = values.astype(column.dtype)
    return pd.DataFrame(out)


def read_jsonl(path: Path, table: str) -> pd.DataFrame:
    frame = pd.read_json(path, lines=True, dtype=False)
    return coerce(frame, table)


def test_iso_timestamp_keeps_nanoseconds() -> None:
    assert iso_timestamp(T0) == "2024-01-02T03:04:05.123456789Z"
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000000000Z"


def test_jsonl_round_trip(tables: SmtpTables, tmp_path: Path) -> None:
    paths = write_tables(tables.frames(), tmp_path)
    assert [p.name for p in paths] == [f"{name}.jsonl" for name in TABLES]
    for name, frame in tables.frames().items():
        pd.testing.assert_frame_equal(
            read_jsonl(tmp_path / f"{name}.jsonl", name), frame
        )


def test_jsonl_is_ascii_with_null_and_arrays(
    tables: SmtpTables, tmp_path: Path
) -> None:
    write_tables(tables.frames(), tmp_path)
    raw = (tmp_path / "sessions.jsonl").read_bytes()
    assert raw.isascii()
    assert b"\x1b" not in raw
    first = json.loads(raw.splitlines()[0])
    assert list(first) == [c.name for c in TABLES["sessions"]]
    assert first["helo"] == ESC_HELO
    assert first["tls_start"] is None
    assert first["start"] == "2024-01-02T03:03:55.123456789Z"
    transactions = (tmp_path / "transactions.jsonl").read_text().splitlines()
    assert json.loads(transactions[1])["rcpt_codes"] == [None]
    assert json.loads(transactions[2])["rcpt_to"] == [
        "bob@example.net",
        "carol@example.net",
    ]


def test_csv_round_trip_of_plain_values(tmp_path: Path) -> None:
    builder = TableBuilder()
    builder.add(plain_session())
    frames = builder.build().frames()
    write_tables(frames, tmp_path, Format.CSV)
    for name, frame in frames.items():
        read = pd.read_csv(tmp_path / f"{name}.csv", dtype=str, keep_default_na=False)
        read = read.replace("", None)
        pd.testing.assert_frame_equal(coerce(read, name), frame)


def test_csv_escapes_wire_strings(tables: SmtpTables, tmp_path: Path) -> None:
    write_tables(tables.frames(), tmp_path, Format.CSV)
    text = (tmp_path / "sessions.csv").read_text(encoding="utf-8")
    assert "\x1b" not in text
    sessions = list(csv.DictReader(text.splitlines()))
    assert sessions[0]["helo"] == "evil\\x1b[31mred"
    assert sessions[0]["tls_start"] == ""
    assert sessions[0]["handshake_seen"] == "false"
    assert sessions[2]["capabilities"] == "PIPELINING,STARTTLS,SIZE 1000"

    with (tmp_path / "transactions.csv").open(newline="", encoding="utf-8") as f:
        transactions = list(csv.DictReader(f))
    assert transactions[0]["subject"] == "'" + FORMULA_SUBJECT
    assert transactions[1]["mail_from"] == BIDI_FROM.replace("\u202e", "\\u202e")
    assert transactions[2]["rcpt_codes"] == "250,550"

    with (tmp_path / "anomalies.csv").open(newline="", encoding="utf-8") as f:
        anomalies = list(csv.DictReader(f))
    assert anomalies[1]["detail"] == "40 bytes missing\\x0d\\x0afrom client"


def test_csv_quotes_formula_cells_in_lists(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": pd.Series([["-1", "b"], ["=a"]], dtype=object)})
    write_tables({"extra": frame}, tmp_path, Format.CSV)
    assert (tmp_path / "extra.csv").read_text() == "x\n\"'-1,b\"\n'=a\n"


def test_parquet_round_trip(tables: SmtpTables, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    write_tables(tables.frames(), tmp_path, Format.PARQUET)
    for name, frame in tables.frames().items():
        read = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(coerce(read, name), frame)


@pytest.mark.parametrize("fmt", list(Format))
def test_empty_tables_are_written_with_columns(fmt: Format, tmp_path: Path) -> None:
    if fmt is Format.PARQUET:
        pyarrow = pytest.importorskip("pyarrow.parquet")
    frames = empty_tables().frames()
    write_tables(frames, tmp_path, fmt)
    for name in TABLES:
        path = tmp_path / f"{name}.{fmt.value}"
        if fmt is Format.JSONL:
            assert path.read_text() == ""
        elif fmt is Format.CSV:
            assert path.read_text() == ",".join(c.name for c in TABLES[name]) + "\n"
        else:
            schema = pyarrow.read_schema(path)
            assert schema.names == [c.name for c in TABLES[name]]


def test_extra_tables_are_written_by_dtype(tmp_path: Path) -> None:
    alerts = pd.DataFrame(
        {
            "ts": pd.Series([pd.Timestamp(T0, unit="ns", tz="UTC")]),
            "rule": pd.Series(["open relay"], dtype="string"),
            "score": pd.Series([math.nan]),
        }
    )
    write_tables({"alerts": alerts}, tmp_path)
    row = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert row == {
        "ts": "2024-01-02T03:04:05.123456789Z",
        "rule": "open relay",
        "score": None,
    }


def test_failed_write_leaves_old_files_and_no_temporaries(
    tables: SmtpTables, tmp_path: Path
) -> None:
    (tmp_path / "sessions.jsonl").write_text("old\n")
    frames = dict(tables.frames())
    frames["broken"] = pd.DataFrame({"x": pd.Series([object()], dtype=object)})
    with pytest.raises(TypeError):
        write_tables(frames, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["sessions.jsonl"]
    assert (tmp_path / "sessions.jsonl").read_text() == "old\n"


def test_written_files_follow_umask(tables: SmtpTables, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        (path, *_) = write_tables(tables.frames(), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_directory_is_created(tables: SmtpTables, tmp_path: Path) -> None:
    write_tables(tables.frames(), tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "commands.jsonl").exists()


def test_directory_that_is_a_file_is_an_export_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="it is not a directory"):
        write_tables(empty_tables().frames(), tmp_path / "file")


def test_directory_that_cannot_be_made_is_an_export_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match=r"cannot create .*: Not a directory"):
        write_tables(empty_tables().frames(), tmp_path / "file" / "sub")


def test_missing_pyarrow_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install pyarrow"):
        export.require_format(Format.PARQUET)
