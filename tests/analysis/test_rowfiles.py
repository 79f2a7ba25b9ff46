"""The row encoders of ``analysis.rowfiles`` against the plain definitions.

The JSON Lines rows are written by functions generated per table; each
line must be what ``json_cell`` and ``encode_row`` make of the same record,
for every kind of cell, missing and hostile values included.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest

from analysis.detect.alert import Alert
from analysis.records import SessionResult
from analysis.rowfiles import (
    SESSION_TABLES,
    Format,
    RowEncoder,
    SessionRows,
    _jsonl_line,
    encode_row,
    iso_timestamp,
    json_cell,
)
from analysis.schema import TABLES
from tests.analysis.table_samples import T0, sample_results


def _plain_line(table: str, record: object) -> str:
    row = {c.name: json_cell(c, getattr(record, c.attribute)) for c in TABLES[table]}
    return encode_row(row) + "\n"


def _odd_values(result: SessionResult) -> SessionResult:
    """The first session with the values a capture rarely has."""
    session = replace(
        result.session,
        handshake_rtt_s=math.nan,
        greeting_delay_s=math.inf,
        duration_s=0,  # an int where a float is kept
        greeting_text='quote " backslash \\ brace {x} percent %s \u00e9 \U0001f600',
        helo=None,
        capabilities=[],
        cert_self_signed=False,
        tls_start=0,
    )
    commands = [
        replace(result.commands[0], reply_ts=None, latency_s=-math.inf),
        replace(result.commands[0], ts=-1, reply_code=None, reply_text="\x00\n"),
    ]
    transactions = [replace(result.transactions[0], rcpt_codes=[250, None])]
    return replace(
        result, session=session, commands=commands, transactions=transactions
    )


def _records(result: SessionResult, table: str) -> list[Any]:
    if table == "sessions":
        return [result.session]
    records: list[Any] = getattr(result, table)
    return records


@pytest.mark.parametrize(
    "result",
    [*sample_results(), _odd_values(sample_results()[0])],
    ids=lambda r: r.session.session_id,
)
def test_generated_jsonl_lines_equal_the_plain_encoding(result: SessionResult) -> None:
    for table in SESSION_TABLES:
        encode = RowEncoder(Format.JSONL, table)
        for record in _records(result, table):
            assert encode([record]) == _plain_line(table, record), table


def test_alerts_are_encoded_like_the_plain_encoding() -> None:
    alert = Alert(
        alert_id="a1",
        kind="auth_brute_force",
        severity="high",
        client_ip=None,
        server_ip="192.0.2.1",
        first_seen=T0,
        last_seen=T0 + 1,
        count=5,
        threshold=5,
        window_s=600,
        total=None,
        sessions=2,
        session_ids=("s-1", "s-2"),
        examples=(),
        summary="x",
    )
    assert RowEncoder(Format.JSONL, "alerts")([alert]) == _plain_line("alerts", alert)


def test_session_rows_are_the_tables_in_order() -> None:
    result = sample_results()[0]
    texts = SessionRows(Format.JSONL)(result)
    assert len(texts) == len(SESSION_TABLES)
    assert texts[0] == _plain_line("sessions", result.session)


def test_writers_of_a_table_share_one_generated_line() -> None:
    # The generated source is compiled once per table, however many writers
    # a run makes; each writer still gives the plain encoding.
    result = sample_results()[0]
    first, second = SessionRows(Format.JSONL), SessionRows(Format.JSONL)
    assert first(result) == second(result)
    assert first._session is not second._session
    assert _jsonl_line(TABLES["sessions"]) is _jsonl_line(TABLES["sessions"])
    assert first(result)[0] == _plain_line("sessions", result.session)


@pytest.mark.parametrize(
    "ns",
    [0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_001, T0, 253402300799999999999],
)
def test_iso_timestamp_of_any_integer(ns: int) -> None:
    seconds, fraction = divmod(ns, 1_000_000_000)
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    assert iso_timestamp(ns) == f"{second}.{fraction:09d}Z"
