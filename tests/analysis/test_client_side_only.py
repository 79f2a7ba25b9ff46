"""A capture of the client's side alone: each command keeps its own time.

``pcaps/client-side-only.pcap`` (made by ``pcaps/scripts/oneside.py``, see
``pcaps/README.md``) is a slow smtplib session to aiosmtpd, 1.5 s between
commands, with only the packets sent to the server kept: the client's SYN,
no SYN-ACK, no reply. The whole session is under 4 KiB, so it is held
until the close (``analysis.holding``) and read then. Read whole, it gave
every command the EHLO's time and started the transaction at it (found by
a user). The times below are those of the segments that carried each
line, the same as smtpscope gives for the capture of both sides, which
was checked when the capture was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis import read_captures

CAPTURE = Path(__file__).resolve().parents[2] / "pcaps" / "client-side-only.pcap"


def _at(clock: str) -> pd.Timestamp:
    return pd.Timestamp(f"2026-12-06T{clock}Z")


def _cells(row: Any) -> Any:
    return None if not isinstance(row, list) and pd.isna(row) else row


def test_each_command_keeps_the_time_of_its_segment() -> None:
    t = read_captures([str(CAPTURE)])
    commands = [
        tuple(_cells(c) for c in row)
        for row in t.commands[
            ["ts", "verb", "argument", "reply_code", "reply_ts", "latency_s"]
        ].itertuples(index=False)
    ]
    # Frames 4, 8, 10, 12 and 16; no reply was captured, so no latency.
    assert commands == [
        (_at("05:58:30.465438"), "EHLO", "client.smtpscope.test", None, None, None),
        (
            _at("05:58:31.967124"),
            "MAIL",
            "FROM:<sender@client.smtpscope.test>",
            None,
            None,
            None,
        ),
        (_at("05:58:33.467989"), "RCPT", "TO:<alice@smtpscope.test>", None, None, None),
        (_at("05:58:34.968716"), "DATA", "", None, None, None),
        (_at("05:58:36.469580"), "QUIT", "", None, None, None),
    ]


def test_the_transaction_starts_at_its_mail() -> None:
    t = read_captures([str(CAPTURE)])
    (txn,) = t.transactions.to_dict("records")
    # No reply seen: the message went whole (frame 14, 266 bytes), its
    # fate unknown: nothing on the wire ended the transaction, so it has no
    # end (the session's end says when the connection closed).
    assert {
        key: _cells(txn[key])
        for key in (
            "start",
            "end",
            "status",
            "mail_from",
            "rcpt_to",
            "rcpts_total",
            "data_method",
            "message_bytes",
            "message_complete",
            "data_code",
            "data_duration_s",
            "message_id",
        )
    } == {
        "start": _at("05:58:31.967124"),
        "end": None,
        "status": "incomplete",
        "mail_from": "sender@client.smtpscope.test",
        "rcpt_to": ["alice@smtpscope.test"],
        "rcpts_total": 1,
        "data_method": "DATA",
        "message_bytes": 266,
        "message_complete": True,
        "data_code": None,
        "data_duration_s": None,
        "message_id": "<client-side-only.1@client.smtpscope.test>",
    }


def test_the_session_is_the_clients_side_of_it() -> None:
    t = read_captures([str(CAPTURE)])
    (session,) = t.sessions.to_dict("records")
    assert {
        key: _cells(session[key])
        for key in (
            "start",
            "end",
            "duration_s",
            "client_port",
            "server_port",
            "helo",
            "commands",
            "transactions",
            "client_bytes",
            "client_packets",
            "server_bytes",
            "server_packets",
            "handshake_seen",
            "synack_seen",
            "handshake_completed",
            "handshake_rtt_s",
            "greeting_delay_s",
            "close",
            "anomalies",
        )
    } == {
        "start": _at("05:58:30.464659"),
        "end": _at("05:58:36.470036"),
        "duration_s": 6.005377,
        "client_port": 35898,
        "server_port": 2525,
        "helo": "client.smtpscope.test",
        "commands": 5,
        "transactions": 1,
        "client_bytes": 383,
        "client_packets": 19,
        "server_bytes": 0,
        "server_packets": 0,
        "handshake_seen": True,
        "synack_seen": False,
        "handshake_completed": True,
        "handshake_rtt_s": None,
        "greeting_delay_s": None,
        "close": "end_of_capture",
        "anomalies": 0,
    }
    assert list(t.anomalies.kind) == []
