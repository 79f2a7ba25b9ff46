from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analysis
from analysis import pipeline, records
from analysis.records import SessionResult
from analysis.schema import TABLES, dtypes, markdown
from analysis.tables import SmtpTables, TableBuilder, empty_tables, read_captures
from tests.analysis import tls_port
from tests.analysis.table_samples import (
    BIDI_FROM,
    ESC_HELO,
    SECOND,
    T0,
    hostile_session,
    plain_session,
    sample_results,
    twin_session,
)


def build(results: Sequence[SessionResult]) -> SmtpTables:
    builder = TableBuilder()
    builder.add_all(results)
    return builder.build()


def assert_schema(tables: SmtpTables) -> None:
    for name, frame in tables.frames().items():
        assert list(frame.columns) == list(dtypes(name)), name
        actual = {column: str(dtype) for column, dtype in frame.dtypes.items()}
        assert actual == dtypes(name), name
        assert isinstance(frame.index, pd.RangeIndex)


def test_schema_covers_every_record_field() -> None:
    record_types = {
        "sessions": records.SessionRecord,
        "transactions": records.TransactionRecord,
        "commands": records.CommandRecord,
        "anomalies": records.AnomalyRecord,
    }
    for table, record_type in record_types.items():
        fields = [f.name for f in dataclasses.fields(record_type)]
        assert [c.attribute for c in TABLES[table]] == fields, table


def test_tables_have_schema_columns_and_dtypes() -> None:
    assert_schema(build(sample_results()))


def test_empty_tables_keep_columns_and_dtypes() -> None:
    tables = empty_tables()
    assert_schema(tables)
    assert all(len(frame) == 0 for frame in tables.frames().values())


def test_sessions_ordered_by_start_then_id() -> None:
    sessions = build(sample_results()).sessions
    assert sessions["session_id"].tolist() == ["s-a", "s-0", "s-b"]


def test_child_tables_follow_session_order() -> None:
    tables = build(sample_results())
    transactions = tables.transactions
    assert list(
        zip(transactions["session_id"], transactions["index"], strict=True)
    ) == [
        ("s-a", 0),
        ("s-a", 1),
        ("s-b", 0),
    ]
    commands = tables.commands
    assert commands["session_id"].tolist() == ["s-a", "s-a"] + ["s-b"] * 4
    # Equal timestamps keep the order the session produced them in.
    assert commands["argument"].tolist()[-2:] == [
        "TO:<bob@example.net>",
        "TO:<carol@example.net>",
    ]
    anomalies = tables.anomalies
    assert anomalies["kind"].tolist() == ["markup", "gap", "no_greeting"]


def test_values_are_converted() -> None:
    tables = build([plain_session(), hostile_session()])
    session = tables.sessions.iloc[1]
    assert session["start"] == pd.Timestamp(T0, unit="ns", tz="UTC")
    assert session["start"].nanosecond == 789
    assert session["tls_start"] == pd.Timestamp(T0 + SECOND, unit="ns", tz="UTC")
    assert session["capabilities"] == ["PIPELINING", "STARTTLS", "SIZE 1000"]
    assert isinstance(session["capabilities"], list)

    hostile = tables.sessions.iloc[0]
    assert hostile["helo"] == ESC_HELO
    assert pd.isna(hostile["tls_start"])
    assert hostile["capabilities"] == []
    assert math.isnan(hostile["handshake_rtt_s"])
    assert hostile["greeting_code"] == 554

    first, second, _ = tables.transactions.to_dict("records")
    assert first["mail_from"] == ""
    assert second["mail_from"] == BIDI_FROM
    assert second["rcpt_codes"] == [None]
    assert pd.isna(first["data_code"])
    assert pd.isna(first["from"])


def test_transaction_from_column_is_named_from() -> None:
    transactions = build([plain_session()]).transactions
    assert "from" in transactions.columns
    assert "from_" not in transactions.columns
    assert transactions["from"].iloc[0] == "Alice <alice@example.org>"


def test_builder_does_not_share_lists_with_records() -> None:
    result = plain_session()
    tables = build([result])
    result.session.capabilities.append("LATE")
    assert tables.sessions["capabilities"].iloc[0] == [
        "PIPELINING",
        "STARTTLS",
        "SIZE 1000",
    ]


@given(st.permutations(range(3)), st.integers(min_value=0, max_value=3))
def test_order_does_not_depend_on_arrival_or_merging(
    permutation: list[int], split: int
) -> None:
    results = [sample_results()[i] for i in permutation]
    head, tail = TableBuilder(), TableBuilder()
    head.add_all(results[:split])
    tail.add_all(results[split:])
    head.merge(tail)
    merged = head.build()
    reference = build(sample_results())
    for name, frame in merged.frames().items():
        pd.testing.assert_frame_equal(frame, reference.frames()[name])


def test_merge_adds_up_stats() -> None:
    a = TableBuilder(pipeline.RunStats(captures=1, packets=10, errors=["x"]))
    b = TableBuilder(pipeline.RunStats(captures=2, packets=5, errors=["y"]))
    b.add(twin_session())
    a.merge(b)
    assert (a.stats.captures, a.stats.packets, a.stats.errors) == (3, 15, ["x", "y"])
    assert len(a) == 1


def fake_analyze(
    calls: list[tuple[list[str], frozenset[int]]],
    implicit_tls: list[frozenset[int]] | None = None,
) -> Callable[..., Iterator[SessionResult]]:
    if implicit_tls is None:
        implicit_tls = []

    def analyze(
        paths: Sequence[str],
        ports: frozenset[int] = pipeline.DEFAULT_PORTS,
        *,
        stats: pipeline.RunStats | None = None,
        progress: pipeline.ProgressHook | None = None,
        tls_keylog: str | None = None,
        implicit_tls_ports: frozenset[int] = pipeline.IMPLICIT_TLS_PORTS,
    ) -> Iterator[SessionResult]:
        calls.append((list(paths), ports))
        implicit_tls.append(implicit_tls_ports)
        assert stats is not None
        stats.captures += len(paths)
        yield from sample_results()

    return analyze


def test_read_captures_accepts_one_path_or_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[list[str], frozenset[int]]] = []
    monkeypatch.setattr(pipeline, "analyze", fake_analyze(calls))

    tables = read_captures(Path("a.pcap"))
    assert calls[-1] == (["a.pcap"], pipeline.DEFAULT_PORTS)
    assert tables.stats.captures == 1
    assert len(tables.sessions) == 3

    read_captures(["a.pcap", Path("b.pcap")], ports=[2526])
    assert calls[-1] == (["a.pcap", "b.pcap"], frozenset({2526}))


def test_read_captures_takes_implicit_tls_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[list[str], frozenset[int]]] = []
    implicit_tls: list[frozenset[int]] = []
    monkeypatch.setattr(pipeline, "analyze", fake_analyze(calls, implicit_tls))

    # Left out, 465 is TLS and the ports are those given, 465 or not.
    read_captures("a.pcap", ports=[25])
    assert (calls[-1][1], implicit_tls[-1]) == (frozenset({25}), frozenset({465}))

    # Given, the set replaces 465's, and its ports are read too.
    read_captures("a.pcap", ports=[25], implicit_tls_ports=[10465])
    assert (calls[-1][1], implicit_tls[-1]) == (
        frozenset({25, 10465}),
        frozenset({10465}),
    )
    read_captures("a.pcap", implicit_tls_ports={465, 10465})
    assert calls[-1][1] == pipeline.DEFAULT_PORTS | {10465}
    assert implicit_tls[-1] == frozenset({465, 10465})


def test_read_captures_is_reexported() -> None:
    assert analysis.read_captures is read_captures
    assert analysis.SmtpTables is SmtpTables
    with pytest.raises(AttributeError):
        _ = analysis.no_such_name  # type: ignore[attr-defined]


def test_schema_markdown_lists_every_column() -> None:
    text = markdown()
    for name, columns in TABLES.items():
        assert f"### {name}" in text
        for column in columns:
            assert f"| `{column.name}` | `{column.dtype}` |" in text


PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


def test_the_readme_lists_the_columns_as_the_schema_has_them() -> None:
    # The README says its column tables are generated from the schema: every
    # row of markdown() is there, and no column row the schema lacks.
    readme = (PCAPS.parent / "README.md").read_text()
    wanted = [line for line in markdown().splitlines() if line.startswith("| `")]
    missing = [line for line in wanted if line not in readme]
    assert missing == []
    shown = {
        line.split("|")[1].strip()
        for line in readme.splitlines()
        if line.startswith("| `") and line.count("|") == 4 and "` | `" in line
    }
    names = {f"`{c.name}`" for columns in TABLES.values() for c in columns}
    assert shown - names == set()


def test_read_captures_on_the_projects_own_captures() -> None:
    expected = json.loads((PCAPS / "expected.json").read_text())["captures"]
    paths = sorted(PCAPS.glob("*.pcap"))
    assert paths, "pcaps/ has no captures"
    tables = read_captures(paths, implicit_tls_ports=tls_port.IMPLICIT_TLS)
    assert_schema(tables)
    assert tables.stats.errors == []
    assert tables.stats.captures == len(paths)
    # The captures of pcaps/scripts/tls.py and scripts/oneside.py, not in
    # expected.json: one session each, three for stripping.pcap.
    made = {"starttls-tls12.pcap": 1, "starttls-injection.pcap": 1}
    made |= {"stripping.pcap": 3, "sslv2-hello.pcap": 1, "client-side-only.pcap": 1}
    made |= {"starttls-inside-tls.pcap": 1, tls_port.CAPTURE: 1}
    dialogs = sum(
        made.get(path.name) or len(expected[path.name]["dialogs"]) for path in paths
    )
    assert len(tables.sessions) == dialogs
    assert tables.sessions["start"].is_monotonic_increasing
    # Every child row belongs to a session of the table.
    for frame in (tables.transactions, tables.commands, tables.anomalies, tables.tls):
        assert set(frame["session_id"]) <= set(tables.sessions["session_id"])
