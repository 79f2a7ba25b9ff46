"""Anomaly kinds that no capture of ordinary traffic shows, each made here.

A small capture is written for each and read through the whole pipeline
(``read_captures``: decoding, reassembly, sessions, tables), and the test
asserts the rows a user gets: the anomaly's own row and the session and
command rows around it, which say what became of the packet that raised it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.smtp.parser import MAX_PENDING
from analysis.tables import SmtpTables, read_captures
from tests.capture.craft import Frame, TcpPeers, pcap

CLIENT, SERVER = "192.0.2.1", "198.51.100.2"
T0 = 1_700_000_000  # seconds; frames are placed in microseconds after it
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def _stamp(us: int) -> pd.Timestamp:
    return pd.Timestamp(T0 * 1_000_000_000 + us * 1_000, unit="ns", tz="UTC")


class _Capture:
    """One connection from CLIENT to SERVER:25, frame by frame, with its
    handshake, greeting and EHLO in its first 300 microseconds."""

    def __init__(self) -> None:
        self.tcp = TcpPeers(CLIENT, 40000, SERVER, 25, cseq=99, sseq=499)
        self.frames: list[Frame] = []
        self.client(0, flags=SYN)
        self.server(1, flags=SYN | ACK)
        self.client(2, flags=ACK)
        self.server(100, b"220 mx.example ESMTP\r\n")
        self.client(200, b"EHLO c.example\r\n")
        self.server(300, b"250-mx.example\r\n250 PIPELINING\r\n")

    def client(self, us: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self.frames.append(Frame(T0, us, self.tcp.frame(True, payload, flags)))

    def server(self, us: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self.frames.append(Frame(T0, us, self.tcp.frame(False, payload, flags)))

    def fins(self, us: int) -> None:
        """The server's FIN, the client's, and the last ACK."""
        self.server(us, flags=FIN | ACK)
        self.client(us + 1, flags=FIN | ACK)
        self.server(us + 2, flags=ACK)

    def read(self, path: Path) -> SmtpTables:
        path.write_bytes(pcap(self.frames))
        return read_captures(path)


def _anomaly_rows(tables: SmtpTables) -> list[tuple[pd.Timestamp, str, str]]:
    rows = tables.anomalies
    (session_id,) = tables.sessions["session_id"]
    assert list(rows["session_id"]) == [session_id] * len(rows)
    return list(zip(rows["ts"], rows["kind"], rows["detail"], strict=True))


def _command_rows(
    tables: SmtpTables,
) -> list[tuple[pd.Timestamp, str, object, object]]:
    rows = tables.commands
    return [
        (ts, verb, None if pd.isna(code) else code, None if pd.isna(text) else text)
        for ts, verb, code, text in zip(
            rows["ts"],
            rows["verb"],
            rows["reply_code"],
            rows["reply_text"],
            strict=True,
        )
    ]


def test_a_rst_with_data_closes_the_session_and_its_bytes_are_not_read(
    tmp_path: Path,
) -> None:
    # RFC 9293 3.5.3: text on a RST is diagnostic. The server's "421" on
    # it is no reply (the NOOP stays unanswered) and not in server_bytes
    # (the greeting's 22 and the EHLO reply's 32).
    conn = _Capture()
    conn.client(400, b"NOOP\r\n")
    conn.server(500, b"421 4.3.0 shutting down\r\n", flags=RST | ACK)
    tables = conn.read(tmp_path / "rst-with-data.pcap")

    assert _anomaly_rows(tables) == [
        (_stamp(500), "tcp_rst_with_data", "25 bytes carried by a RST"),
        (_stamp(500), "no_reply", "1 unanswered: NOOP"),
    ]
    session = tables.sessions.iloc[0]
    assert (session["close"], session["end"], session["anomalies"]) == (
        "rst",
        _stamp(500),
        2,
    )
    assert (session["client_bytes"], session["server_bytes"]) == (22, 54)
    assert _command_rows(tables) == [
        (_stamp(200), "EHLO", 250, "mx.example\nPIPELINING"),
        (_stamp(400), "NOOP", None, None),
    ]
    assert tables.alerts.empty


def test_a_fin_far_past_the_stream_is_ignored_and_the_real_one_closes(
    tmp_path: Path,
) -> None:
    # Forged: 1 MiB and a byte past the client's next byte. Taken, it would
    # have made the stream end there, with a 1 MiB gap before it.
    conn = _Capture()
    real = conn.tcp.cseq
    conn.tcp.cseq = real + (1 << 20) + 1
    conn.client(350, flags=FIN | ACK)
    conn.tcp.cseq = real
    conn.client(400, b"QUIT\r\n")
    conn.server(500, b"221 2.0.0 Bye\r\n")
    conn.fins(600)
    tables = conn.read(tmp_path / "fin-out-of-window.pcap")

    assert _anomaly_rows(tables) == [
        (_stamp(350), "tcp_fin_out_of_window", "FIN 1048577 bytes ahead, ignored"),
    ]
    session = tables.sessions.iloc[0]
    assert (session["close"], session["end"], session["gaps"]) == (
        "fin",
        _stamp(602),
        0,
    )
    assert _command_rows(tables) == [
        (_stamp(200), "EHLO", 250, "mx.example\nPIPELINING"),
        (_stamp(400), "QUIT", 221, "2.0.0 Bye"),
    ]


def test_past_the_pending_bound_the_oldest_commands_get_no_reply(
    tmp_path: Path,
) -> None:
    # MAX_PENDING + 1 NOOPs and a QUIT in one burst, then every reply: the
    # first two NOOPs are let go, and the first two replies answer them.
    conn = _Capture()
    flood = b"NOOP\r\n" * (MAX_PENDING + 1) + b"QUIT\r\n"
    for n, at in enumerate(range(0, len(flood), 60_000)):
        conn.client(400 + n, flood[at : at + 60_000])
    replies = b"250 2.0.0 Ok\r\n" * (MAX_PENDING + 1) + b"221 2.0.0 Bye\r\n"
    for n, at in enumerate(range(0, len(replies), 60_000)):
        conn.server(1_000 + n, replies[at : at + 60_000])
    conn.fins(2_000)
    tables = conn.read(tmp_path / "pending-overflow.pcap")

    # The 65,537th NOOP and the QUIT came in the seventh segment, at 406.
    assert _anomaly_rows(tables) == [
        (
            _stamp(400),
            "command_rows_capped",
            "past 10,000 commands only those the detectors read get a row "
            "(AUTH, MAIL, RCPT, HELO, EHLO, LHLO, QUIT, the command after a QUIT, "
            "the first pipelined command after a HELO); the others are counted "
            "in the session",
        ),
        (_stamp(406), "pending_overflow", "too many unanswered commands"),
        (_stamp(406), "pending_overflow", "too many unanswered commands"),
    ]
    session = tables.sessions.iloc[0]
    assert (session["close"], session["commands"], session["anomalies"]) == (
        "fin",
        MAX_PENDING + 3,
        3,
    )
    rows = _command_rows(tables)
    assert len(rows) == 10_001  # the first 10,000, then the QUIT
    assert rows[:4] + rows[-1:] == [
        (_stamp(200), "EHLO", 250, "mx.example\nPIPELINING"),
        (_stamp(400), "NOOP", None, None),  # let go: its reply answers nothing
        (_stamp(400), "NOOP", None, None),
        (_stamp(400), "NOOP", 250, "2.0.0 Ok"),
        (_stamp(406), "QUIT", 221, "2.0.0 Bye"),
    ]
    # All replies found their commands: no reply_without_command, and so no
    # unsolicited_reply alert against the server.
    assert tables.alerts.empty
