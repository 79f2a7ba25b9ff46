"""Tables written with -o, loaded back: the same DataFrames as read_captures."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis.cli import main
from analysis.load import LoadError, load_tables
from analysis.schema import TABLES
from analysis.tables import SmtpTables, read_captures
from tests.analysis.same import same_tables

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
CAPTURES = sorted(str(p) for p in PCAPS.glob("**/*.pcap"))


@pytest.fixture(scope="module")
def read() -> SmtpTables:
    tables = read_captures(CAPTURES)
    assert len(tables.alerts) and len(tables.tls)  # every table has rows
    return tables


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_written_tables_load_back_exactly(
    fmt: str, read: SmtpTables, tmp_path: Path
) -> None:
    assert (
        main(["read", *CAPTURES, "-q", "-j", "1", "-o", str(tmp_path), "--format", fmt])
        == 0
    )
    loaded = analysis.load_tables(tmp_path)
    same_tables(loaded, read)


def test_pandas_alone_guesses_where_load_tables_does_not(tmp_path: Path) -> None:
    # What the loader is for: read_json makes the Date: header a timestamp
    # and leaves the session start a string.
    capture = str(PCAPS / "plain-delivery.pcap")
    assert main(["read", capture, "-q", "-o", str(tmp_path)]) == 0
    guessed = pd.read_json(tmp_path / "transactions.jsonl", lines=True)
    assert guessed["date"].dtype != "string"
    loaded = load_tables(tmp_path)
    assert loaded.transactions["date"].dtype == "string"
    assert str(loaded.sessions["start"].dtype) == "datetime64[ns, UTC]"
    assert str(loaded.sessions["greeting_code"].dtype) == "Int64"


def test_what_cannot_be_loaded_says_why(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no table files"):
        load_tables(tmp_path)
    # A mistyped name, or a file: said as it is (found in a new user's trial).
    missing = tmp_path / "outt"
    with pytest.raises(LoadError) as raised:
        load_tables(missing)
    assert str(raised.value) == f"{missing}: no such directory"
    (tmp_path / "file").write_text("")
    with pytest.raises(LoadError) as raised:
        load_tables(tmp_path / "file")
    assert str(raised.value) == f"{tmp_path / 'file'}: not a directory"
    capture = str(PCAPS / "auth.pcap")
    assert main(["read", capture, "-q", "-o", str(tmp_path), "--format", "csv"]) == 0
    with pytest.raises(LoadError, match="cannot be loaded back exactly"):
        load_tables(tmp_path)
    (tmp_path / "sessions.jsonl").write_text('{"session_id": "x"}\n')
    with pytest.raises(LoadError, match="not a table smtpscope wrote"):
        load_tables(tmp_path)


def test_tables_in_two_formats_are_loaded_only_as_one_named(tmp_path: Path) -> None:
    # Found in a new user's trial: read -o replaces only the files of the
    # format it writes; the directory then held an earlier run's JSON Lines
    # beside this run's Parquet, and the JSON Lines were loaded.
    earlier, later = str(PCAPS / "rset-multi.pcap"), str(PCAPS / "auth.pcap")
    assert main(["read", earlier, "-q", "-o", str(tmp_path)]) == 0
    argv = ["read", later, "-q", "-o", str(tmp_path), "--format", "parquet"]
    assert main(argv) == 0
    with pytest.raises(LoadError) as refused:
        load_tables(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path}: holds tables as jsonl and parquet files, perhaps of "
        "different runs; name the ones to load: load_tables(directory, "
        "format=...)"
    )
    same_tables(load_tables(tmp_path, format="parquet"), read_captures([later]))
    same_tables(load_tables(tmp_path, format="jsonl"), read_captures([earlier]))
    with pytest.raises(LoadError) as refused:
        load_tables(tmp_path, format="csv")
    assert str(refused.value) == "format 'csv': tables load from 'jsonl' or 'parquet'"
    # The format named is the one said missing, not sessions.jsonl, which
    # is there.
    for table in TABLES:
        (tmp_path / f"{table}.parquet").unlink()
    with pytest.raises(LoadError) as refused:
        load_tables(tmp_path, format="parquet")
    assert str(refused.value) == (
        f"{tmp_path}: no table files (sessions.parquet, ...) in it"
    )


def test_a_table_without_a_file_is_empty(read: SmtpTables, tmp_path: Path) -> None:
    assert main(["read", CAPTURES[0], "-q", "-o", str(tmp_path)]) == 0
    (tmp_path / "tls.jsonl").unlink()
    loaded = load_tables(tmp_path)
    assert len(loaded.tls) == 0
    assert list(loaded.tls.dtypes) == list(read.tls.dtypes)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (Path.mkdir, "a directory"),
        (os.mkfifo, "a named pipe"),  # stat only: opened, it would block
        (lambda path: path.symlink_to(path.parent / "gone"), "a link to nothing"),
    ],
)
def test_a_table_name_that_is_no_file_is_refused(
    make: Callable[[Path], object], said: str, tmp_path: Path
) -> None:
    # Taken for a missing file, it made an empty table in silence.
    assert main(["read", CAPTURES[0], "-q", "-o", str(tmp_path)]) == 0
    path = tmp_path / "sessions.jsonl"
    path.unlink()
    make(path)
    with pytest.raises(LoadError) as raised:
        load_tables(tmp_path)
    assert str(raised.value) == f"{path}: {said}, not a table file"


def test_a_link_to_a_table_file_loads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["read", CAPTURES[0], "-q", "-o", str(out)]) == 0
    (out / "sessions.jsonl").rename(tmp_path / "kept.jsonl")
    (out / "sessions.jsonl").symlink_to(tmp_path / "kept.jsonl")
    assert len(load_tables(out).sessions) == len(read_captures(CAPTURES[:1]).sessions)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("client_port", "abc", "client_port holds 'abc', not a value of kind int"),
        ("client_port", 10**30, "not a value of kind int"),
        ("greeting_code", "250", "not a value of kind nullable_int"),
        ("handshake_seen", "yes", "not a value of kind bool"),
        ("capabilities", "PIPELINING", "not a value of kind string_list"),
        ("helo", {"x": 1}, "not a value of kind string"),
        ("helo", "\ud800", "surrogates not allowed"),
        ("start", "9999-12-31T23:59:59.999999999Z", "out of the range of ns"),
        ("start", 12345, "is not a UTC timestamp"),
    ],
)
def test_a_hand_edited_table_is_refused_with_the_cell(
    field: str, value: object, said: str, tmp_path: Path
) -> None:
    # Found in review: such edits raised other exceptions, or loaded wrong
    # (a year 9999 wrapped round to 1816, a string became a list of letters).
    assert main(["read", str(PCAPS / "auth.pcap"), "-q", "-o", str(tmp_path)]) == 0
    path = tmp_path / "sessions.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row[field] = value
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LoadError, match="not a table smtpscope wrote") as raised:
        load_tables(tmp_path)
    assert said in str(raised.value)


def test_parquet_timestamps_in_other_units_or_types(tmp_path: Path) -> None:
    # Found in review: microseconds were read as ns (1970), a date column
    # raised pyarrow's own error.
    import pyarrow as pa
    import pyarrow.parquet as pq

    capture = str(PCAPS / "auth.pcap")
    args = ["read", capture, "-q", "-o", str(tmp_path), "--format", "parquet"]
    assert main(args) == 0
    expected = load_tables(tmp_path).sessions["start"].tolist()
    path = tmp_path / "sessions.parquet"
    table = pq.read_table(path)
    at = table.schema.get_field_index("start")
    micro = table.column("start").cast(pa.timestamp("us", tz="UTC"))
    pq.write_table(table.set_column(at, "start", micro), path)
    assert load_tables(tmp_path).sessions["start"].tolist() == expected
    dates = table.column("start").cast(pa.timestamp("ns")).cast(pa.date32())
    pq.write_table(table.set_column(at, "start", dates), path)
    with pytest.raises(LoadError, match="start is date32"):
        load_tables(tmp_path)


@pytest.mark.parametrize("cell", ["1e999", "NaN", str(10**400)])
def test_a_float_that_is_no_number_is_refused(cell: str, tmp_path: Path) -> None:
    assert main(["read", str(PCAPS / "auth.pcap"), "-q", "-o", str(tmp_path)]) == 0
    path = tmp_path / "sessions.jsonl"
    text = path.read_text()
    row = json.loads(text.splitlines()[0])
    edited = json.dumps(row).replace(
        f'"duration_s": {json.dumps(row["duration_s"])}', f'"duration_s": {cell}'
    )
    assert edited != json.dumps(row)
    path.write_text(edited + "\n" + "\n".join(text.splitlines()[1:]) + "\n")
    with pytest.raises(LoadError, match="not a value of kind float"):
        load_tables(tmp_path)


def test_blank_lines_in_json_lines_are_no_rows(
    read: SmtpTables, tmp_path: Path
) -> None:
    assert main(["read", *CAPTURES, "-q", "-j", "1", "-o", str(tmp_path)]) == 0
    path = tmp_path / "sessions.jsonl"
    path.write_text(path.read_text().replace("\n", "\n\n", 3) + "\n \n")
    same_tables(load_tables(tmp_path), read)


def test_a_file_of_an_older_version_names_the_missing_column(tmp_path: Path) -> None:
    # Columns are added from one version to the next (community_id, say):
    # an older run's files lack them, which is said as such.
    import pyarrow.parquet as pq

    capture = str(PCAPS / "auth.pcap")
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / fmt
        assert main(["read", capture, "-q", "-o", str(out), "--format", fmt]) == 0
        path = out / f"sessions.{fmt}"
        if fmt == "jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            for row in rows:
                del row["community_id"]
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            where = "line 1: "
        else:
            pq.write_table(pq.read_table(path).drop(["community_id"]), path)
            where = ""
        with pytest.raises(LoadError) as raised:
            load_tables(out)
        assert str(raised.value) == (
            f"{path}: {where}no community_id column: not a table smtpscope "
            "wrote, or one an older version wrote (read the captures again to "
            "write every column)"
        )


def test_parquet_without_pyarrow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = str(PCAPS / "auth.pcap")
    args = ["read", capture, "-q", "-o", str(tmp_path), "--format", "parquet"]
    assert main(args) == 0
    # As where pyarrow is not installed: its import fails.
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(LoadError) as raised:
        load_tables(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'sessions.parquet'}: reading Parquet needs pyarrow, which "
        "is not installed; install it with: pip install pyarrow"
    )


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_session_at_the_last_nanosecond_loads_back(fmt: str, tmp_path: Path) -> None:
    # Found in review: the readers stamp packets up to 2**63 - 1 ns
    # (2262-04-11T23:47:16.854775807Z), but the loader refused every year
    # past 2261, and with it the whole table.
    lines = [
        (False, b"220 mx ESMTP\r\n"),
        (True, b"EHLO a.example\r\n"),
        (False, b"250 mx\r\n"),
        (True, b"QUIT\r\n"),
    ]
    capture = _conversation(tmp_path / "late.pcapng", lines, last=2**63 - 1)
    out = tmp_path / "out"
    assert main(["read", str(capture), "-q", "-o", str(out), "--format", fmt]) == 0
    read = read_captures([str(capture)])
    assert read.sessions["end"].tolist() == [
        pd.Timestamp("2262-04-11T23:47:16.854775807Z")
    ]
    same_tables(load_tables(out), read)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_subject_of_a_lone_surrogate_is_written_and_loads_back(
    fmt: str, tmp_path: Path
) -> None:
    # Found in review: "=?utf-7?q?+2AA-?=" decoded to U+D800 alone, which
    # ended read_captures and the Parquet output with a traceback (no table
    # written) and made the JSON Lines transactions table unloadable.
    lines = [
        (False, b"220 mx ESMTP\r\n"),
        (True, b"MAIL FROM:<a@b.c>\r\n"),
        (False, b"250 ok\r\n"),
        (True, b"RCPT TO:<x@y.z>\r\n"),
        (False, b"250 ok\r\n"),
        (True, b"DATA\r\n"),
        (False, b"354 go\r\n"),
        (True, b"Subject: =?utf-7?q?+2AA-?=\r\n\r\nhi\r\n.\r\n"),
        (False, b"250 2.0.0 Ok: queued as ABC\r\n"),
    ]
    capture = _conversation(tmp_path / "utf7.pcapng", lines, last=1_700_000_000 * 10**9)
    out = tmp_path / "out"
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    assert main(["read", str(capture), "-q", "-o", str(out), "--format", fmt]) == 0
    read = read_captures([str(capture)])
    assert read.transactions["subject_decoded"].tolist() == ["\ufffd"]
    same_tables(load_tables(out), read)


def _conversation(path: Path, lines: list[tuple[bool, bytes]], *, last: int) -> Path:
    """A pcapng file (ns) of one connection: a handshake, then ``lines``
    (client or not, payload), one a millisecond, the last at ``last`` ns."""
    from tests.capture.craft import TcpPeers, ng_epb, ng_idb, ng_shb

    peers = TcpPeers("10.0.0.1", 40000, "10.0.0.2", 25, 1000, 5000)
    segments = [(True, b"", 0x02), (False, b"", 0x12), (True, b"", 0x10)]
    segments += [(by_client, payload, 0x18) for by_client, payload in lines]
    blocks = [ng_shb(), ng_idb(1, tsresol=9)]
    for n, (by_client, payload, flags) in enumerate(segments):
        ticks = last - (len(segments) - 1 - n) * 1_000_000
        blocks.append(ng_epb(0, ticks, peers.frame(by_client, payload, flags)))
    path.write_bytes(b"".join(blocks))
    return path
